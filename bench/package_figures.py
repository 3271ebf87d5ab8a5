"""Figures as the scraper delivers them, built from real scientific images shipped inside installed packages.

Nothing can be downloaded here, so the development set for ``vis.py`` on real-looking
figures is made of the medical and scientific images that scikit-image, matplotlib and
pydicom ship in their wheels (fundus photograph, immunohistochemistry, quantitative phase
microscopy, a retina detail, the Hubble deep field, a 16-bit MR slice, NEMA CT/MR test
slices, ultrasound frames), saved in the forms PubMed figures come in: 16-bit and
8-bit grayscale, palette, RGBA, EXIF-rotated JPEG, non-square, very large (> 2000 px),
and a compound figure with panel labels. The lists follow the scraper's output format
(docs/scraping.md): ``figures.json`` (whole figures with provenance), ``pretrain.json``
(the ``--no_split`` list) and, after the subfigure splitter ran, ``subfigures/subfigures.json``.

    python bench/package_figures.py --out output/package_figures
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.atomic import atomic_write_bytes, atomic_write_json  # noqa: E402

__all__ = ["build_package_figures"]


def _skimage(name: str) -> Image.Image:
    import skimage.data

    return Image.open(Path(skimage.data.__file__).parent / name)


def _matplotlib_mri() -> np.ndarray:
    """matplotlib's sample ``s1045.ima.gz``: a 256 x 256 16-bit MR head slice."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint16).reshape(256, 256).copy()


def _dicom(name: str) -> np.ndarray:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    return dcmread(get_testdata_file(name)).pixel_array


def _to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Signed CT numbers -> unsigned 16-bit, as many PNG exports store them (offset, not rescaled)."""
    pixels = pixels.astype(np.int32)
    return (pixels - min(0, int(pixels.min()))).astype(np.uint16)


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf"), size)


def _compound(panels: list[Image.Image], side: int, gap: int) -> tuple[Image.Image, list[list[int]]]:
    """A 2 x 2 figure on white with bold labels A-D in each panel's top-left corner; returns the panel boxes."""
    figure = Image.new("RGB", (2 * side + 3 * gap, 2 * side + 3 * gap), "white")
    draw = ImageDraw.Draw(figure)
    boxes = []
    for k, (panel, label) in enumerate(zip(panels, "ABCD")):
        x0, y0 = gap + (k % 2) * (side + gap), gap + (k // 2) * (side + gap)
        figure.paste(panel.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), (x0, y0))
        draw.rectangle((x0 + 10, y0 + 10, x0 + 150, y0 + 150), fill="white")
        draw.text((x0 + 30, y0 + 15), label, fill="black", font=_font(110))
        boxes.append([x0, y0, x0 + side, y0 + side])
    return figure, boxes


def _figures() -> list[tuple[str, bytes, str, dict]]:
    """(file name, encoded bytes, caption, extra record fields) for every figure."""
    retina = _skimage("retina.jpg").convert("RGB")
    ihc = _skimage("ihc.png").convert("RGB")
    cell = _skimage("cell.png").convert("L")
    micro = _skimage("microaneurysms.png").convert("L")
    hubble = _skimage("hubble_deep_field.jpg").convert("RGB")
    mri16 = _matplotlib_mri()
    ct = _dicom("CT_small.dcm")
    mr = _dicom("MR_small.dcm")
    us_rgb = _dicom("examples_rgb_color.dcm")
    us_palette = _dicom("examples_palette.dcm")

    figures = []
    figures.append(("mri_head_16bit.png", _png(Image.fromarray(mri16)),
                    "Axial T2-weighted MRI of the head at the level of the lateral ventricles (16-bit).",
                    {"source": "matplotlib sample_data/s1045.ima.gz"}))
    figures.append(("ct_small_16bit.png", _png(Image.fromarray(_to_uint16(ct))),
                    "Axial CT slice from the NEMA DICOM test set, stored as a 16-bit grayscale PNG.",
                    {"source": "pydicom test file CT_small.dcm"}))
    figures.append(("mr_small_16bit.png", _png(Image.fromarray(_to_uint16(mr))),
                    "Small 64 x 64 MR image from the NEMA DICOM test set.",
                    {"source": "pydicom test file MR_small.dcm"}))
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: viewers rotate 90 degrees clockwise
    figures.append(("ultrasound_exif_rotated.jpg", _jpeg(Image.fromarray(us_rgb).transpose(Image.Transpose.ROTATE_90),
                                                         exif=exif.tobytes()),
                    "Colour Doppler ultrasound frame; the JPEG is stored sideways with an EXIF orientation tag.",
                    {"source": "pydicom test file examples_rgb_color.dcm"}))
    palette = Image.fromarray(us_palette.astype(np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    figures.append(("ultrasound_palette_wide.png", _png(palette),
                    "Ultrasound image exported as a palette PNG, wider than tall (800 x 350).",
                    {"source": "pydicom test file examples_palette.dcm"}))
    figures.append(("fundus_photograph.jpg", _jpeg(retina),
                    "Fundus photograph of a normal left eye: optic disc, macula and retinal vessels.",
                    {"source": "scikit-image data retina.jpg", "license": "CC0"}))
    big = retina.resize((3 * retina.width, 3 * retina.height), Image.Resampling.BICUBIC)
    figures.append(("fundus_photograph_4233px.jpg", _jpeg(big),
                    "The same fundus photograph at 4233 x 4233 pixels, as high-resolution journal figures come.",
                    {"source": "scikit-image data retina.jpg (upsampled 3x)", "license": "CC0"}))
    alpha = Image.new("L", ihc.size, 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, ihc.width - 1, ihc.height - 1), radius=90, fill=255)
    rgba = ihc.copy()
    rgba.putalpha(alpha)
    figures.append(("ihc_rgba.png", _png(rgba),
                    "Immunohistochemistry of colonic glands: FHL2 revealed with DAB, hematoxylin counterstain; "
                    "transparent rounded corners (RGBA).",
                    {"source": "scikit-image data ihc.png", "license": "no known copyright restrictions"}))
    figures.append(("cell_phase_gray.png", _png(cell),
                    "Quantitative phase image of a cell floating in saline; pixel spacing 0.107 um.",
                    {"source": "scikit-image data cell.png", "license": "CC0"}))
    figures.append(("retina_microaneurysms.png", _png(micro),
                    "Green-channel detail of a diabetic retina with microaneurysms (102 x 102 px).",
                    {"source": "scikit-image data microaneurysms.png", "license": "CC0"}))
    strip = hubble.crop((0, 300, 1000, 560))
    figures.append(("hubble_strip.jpg", _jpeg(strip),
                    "Strip of the Hubble eXtreme Deep Field with galaxies of many sizes (1000 x 260 px).",
                    {"source": "scikit-image data hubble_deep_field.jpg", "license": "public domain (NASA)"}))
    mri8 = Image.fromarray((mri16 / mri16.max() * 255).astype(np.uint8))
    compound, boxes = _compound([retina, ihc, mri8, cell], side=1050, gap=40)
    phrases = ["Fundus photograph of the left eye", "Immunohistochemistry of colonic glands",
               "Axial MRI of the head", "Quantitative phase image of a floating cell"]
    caption = "Imaging across scales. " + " ".join(f"({label}) {text}." for label, text in zip("ABCD", phrases))
    figures.append(("compound_2x2.png", _png(compound), caption,
                    {"source": "scikit-image retina, ihc, cell; matplotlib s1045 MRI",
                     "boxes": [{"box": box, "phrase": text} for box, text in zip(boxes, phrases)]}))
    return figures


def build_package_figures(out_dir: str | Path, *, split: bool = True) -> dict[str, Path]:
    """Write the figures and the lists into ``out_dir``; returns the list paths."""
    out = Path(out_dir)
    records = []
    for name, data, caption, extra in _figures():
        path = out / "images" / name
        atomic_write_bytes(path, data)
        with Image.open(path) as image:
            width, height, mode = image.width, image.height, image.mode
        records.append({"image": f"images/{name}", "caption": caption, "figure_id": Path(name).stem,
                        "width": width, "height": height, "mode": mode,
                        "sha256": hashlib.sha256(data).hexdigest(), **extra})
    paths = {"figures": out / "figures.json", "pretrain": out / "pretrain.json"}
    atomic_write_json(paths["figures"], records, indent=1)
    atomic_write_json(paths["pretrain"], records, indent=1)
    if split:
        from data.subfigure import split_dataset

        split_dataset(paths["figures"], out / "subfigures", progress=False)
        paths["subfigures"] = out / "subfigures" / "subfigures.json"
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/package_figures")
    parser.add_argument("--no_split", action="store_true", help="skip the subfigure splitter")
    args = parser.parse_args(argv)
    for kind, path in build_package_figures(args.out, split=not args.no_split).items():
        print(f"{kind:<11} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
