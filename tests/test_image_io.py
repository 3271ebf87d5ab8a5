"""Safe image opening: every bad input becomes an ImageError with a reason; modes convert properly."""

import io

import numpy as np
import pytest
from PIL import Image

from data.image_io import ImageError, open_image, probe_image, to_rgb


def _png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _noise_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return _png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")


def test_rgb_roundtrip(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (10, 20, 30)).save(path)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (20, 10)
    assert img.getpixel((0, 0)) == (10, 20, 30)


def test_16bit_grayscale_rescaled_not_clipped():
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    img = Image.fromarray(arr)
    rgb = np.asarray(to_rgb(img))
    # min-max to 0..255: 0, 63.75, 127.5, 255 (rounded); PIL's convert would give 0, 255, 255, 255
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_alpha_composited_on_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    rgb = to_rgb(img)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "missing"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("<html><body>Error 404</body></html>"), "not_an_image"),
        (lambda p: p.write_bytes(_noise_jpeg()[: len(_noise_jpeg()) * 2 // 3]), "truncated"),
    ],
)
def test_bad_files_raise_image_error(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageError) as err:
        open_image(path)
    assert err.value.reason == reason
    assert str(path) in str(err.value)


def test_pixel_cap_checked_before_decoding():
    data = _png_bytes(Image.new("L", (300, 300)))
    with pytest.raises(ImageError) as err:
        open_image(data, max_pixels=300 * 299)
    assert err.value.reason == "too_large"
    info = probe_image(data)
    assert (info.width, info.height, info.format) == (300, 300, "PNG")


def test_min_side():
    with pytest.raises(ImageError) as err:
        open_image(_png_bytes(Image.new("RGB", (1, 1))), min_side=8)
    assert err.value.reason == "too_small"
