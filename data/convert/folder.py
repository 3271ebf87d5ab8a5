"""A folder of your own images with a caption file beside each -> pretraining records.

The layout many tools write and people make by hand (also an unpacked webdataset / img2dataset
shard)::

    my_figures/
        case001.png    case001.txt      <- the caption, UTF-8 text
        scans/ct_17.jpg    scans/ct_17.txt

Every image (by extension, in any subfolder, sorted by path) is paired with the ``.txt`` of the
same name in its folder. An image without one is counted as ``missing_caption_file``, a caption
file without an image as ``caption_without_image``; the ``source_id`` is the path below the folder.
"""

from __future__ import annotations

from pathlib import Path

from data.convert.common import Conversion, ImageCheck, clean_text
from utils.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "convert_folder"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})


def convert_folder(
    folder: Path,
    *,
    source: str = "folder",
    license: str | None = None,
    image_check: ImageCheck = "header",
) -> Conversion:
    """Records of every image under ``folder`` that has a caption file ``<same name>.txt``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    conversion = Conversion(source)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    stems = {p.with_suffix("") for p in images}
    for text in (p for p in files if p.suffix.lower() == ".txt" and p.with_suffix("") not in stems):
        conversion.seen += 1
        conversion.skips.add("caption_without_image", str(text))
    for image in images:
        conversion.seen += 1
        caption_file = image.with_suffix(".txt")
        if not caption_file.is_file():
            conversion.skips.add("missing_caption_file", str(image))
            continue
        caption = clean_text(caption_file.read_text(encoding="utf-8", errors="replace"))
        conversion.add(image, caption, where=str(caption_file), image_check=image_check, license=license,
                       source_id=image.relative_to(folder).as_posix())
    if not images:
        raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or below it")
    return conversion
