"""Safe image reading shared by the scraper, the subfigure splitter and the datasets.

Everything that opens an image from outside goes through :func:`open_image`,
which checks the pixel count from the header *before* decoding (decompression
bomb guard), decodes fully (so truncated files fail here, not in a worker three
days into a run) and converts any mode to 8-bit RGB properly: 16-bit and float
grayscale medical images are rescaled to their own range instead of being
clipped to white, palette and alpha images are composited on white.
Failures raise :class:`ImageError` with a short machine-readable ``reason``
(used for skip counters) and a message that names the source.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageInfo",
    "open_image",
    "probe_image",
    "to_rgb",
]

# 16k x 10k: bigger than any journal figure, far below what exhausts memory.
# PIL itself refuses images above 2 * Image.MAX_IMAGE_PIXELS (the same number by
# default) at open time; raise both to allow more.
DEFAULT_MAX_PIXELS = 178_956_970
ImageSource = Union[str, Path, bytes, bytearray, memoryview]

# PIL's own bomb check runs in Image.open: it warns between 1x and 2x
# Image.MAX_IMAGE_PIXELS and raises above. Our explicit cap decides instead.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be used. ``reason`` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an image (no pixel data decoded)."""

    format: str
    width: int
    height: int
    mode: str


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{len(source)} bytes>"


def _open_lazy(source: ImageSource) -> Image.Image:
    """Open without decoding; map every failure to an ImageError."""
    name = _describe(source)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageError("empty", f"{name}: empty image data")
            return Image.open(io.BytesIO(bytes(source)))
        path = Path(source)
        if not path.exists():
            raise ImageError("missing", f"{name}: image file not found")
        if path.is_dir():
            raise ImageError("not_a_file", f"{name}: is a directory, not an image")
        if path.stat().st_size == 0:
            raise ImageError("empty", f"{name}: empty image file")
        return Image.open(path)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"{name}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", f"{name}: not a recognised image format") from None
    except (OSError, ValueError) as exc:
        raise ImageError("unreadable", f"{name}: cannot open image ({exc})") from None


def _check_size(img: Image.Image, name: str, max_pixels: int, min_side: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            "too_large",
            f"{name}: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}",
        )
    if min(width, height) < min_side:
        raise ImageError("too_small", f"{name}: {width}x{height} is smaller than {min_side} px on a side")


def probe_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> ImageInfo:
    """Read the header only: format, size, mode. Cheap; does not detect truncation."""
    name = _describe(source)
    with _open_lazy(source) as img:
        _check_size(img, name, max_pixels, min_side)
        return ImageInfo(format=img.format or "unknown", width=img.width, height=img.height, mode=img.mode)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without losing grayscale contrast.

    * ``I;16*``, ``I``, ``F`` (16-bit / float medical images): min-max rescaled
      to 0..255 (PIL's own conversion clips at 255, turning most CT/MR white).
    * ``P``/``PA``/``LA``/``RGBA``: alpha composited on white (figures with a
      transparent background are meant to be seen on a white page).
    * ``CMYK``/``YCbCr``/``L``/``1``: PIL's conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            arr = np.zeros(arr.shape, dtype=np.float64)
        else:
            lo, hi = float(arr[finite].min()), float(arr[finite].max())
            arr = np.where(finite, arr, lo)
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    convert_rgb: bool = True,
) -> Image.Image:
    """Open, size-check, fully decode and (by default) convert to RGB.

    Raises :class:`ImageError` for missing, empty, non-image, truncated,
    undecodable, too large or too small input. EXIF orientation is applied.
    """
    name = _describe(source)
    img = _open_lazy(source)
    try:
        _check_size(img, name, max_pixels, min_side)
        if getattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False):
            raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; it would hide truncated files")
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img) if convert_rgb else img
    except ImageError:
        img.close()
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        img.close()
        text = str(exc)
        reason = "truncated" if "truncated" in text or "broken data stream" in text else "undecodable"
        raise ImageError(reason, f"{name}: cannot decode image ({text})") from None
