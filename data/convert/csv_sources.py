"""Quilt-1M's lookup CSV and open_clip's CSV -> pretraining records.

* **Quilt-1M** (Ikezogwo et al. 2023; github.com/wisdomikezogwo/quilt1m, huggingface.co/datasets/
  wisdomik/Quilt_1M; checked 2026-11-24): ``quilt_1M_lookup.csv``, comma-separated with a header
  whose columns include ``caption``, ``image_path``, ``subset`` (quilt | openpath | pubmed | laion),
  ``split``, ``pathology``, ``magnification``, ``height``, ``width`` (plus an unnamed index column),
  and the images unzipped from ``images_part_*.zip`` into one folder (``quilt_1m/``) where
  ``image_path`` is the file name. The set is released for research use only, no per-record
  licence: ``license`` is "Quilt-1M research-only terms" unless ``--license`` says otherwise.
* **open_clip CSV** (mlfoundations/open_clip, ``--dataset-type csv``; its defaults
  ``--csv-separator "\\t"``, ``--csv-img-key filepath``, ``--csv-caption-key title``): one row per
  pair, the image column a path that open_clip opens as it is (relative paths resolve against the
  working directory; here against ``image_root``).
"""

from __future__ import annotations

from pathlib import Path

from data.convert.common import Conversion, ImageCheck, clean_text, read_csv_rows

__all__ = ["convert_quilt", "convert_openclip_csv", "QUILT_LICENSE"]

QUILT_LICENSE = "Quilt-1M research-only terms"


def convert_quilt(
    csv_path: Path,
    *,
    image_dir: Path | None = None,
    splits: tuple[str, ...] | None = None,
    license: str | None = None,
    image_check: ImageCheck = "header",
) -> Conversion:
    """Rows of ``quilt_1M_lookup.csv`` (optionally only some ``split`` values) with their images."""
    csv_path = Path(csv_path)
    images = Path(image_dir) if image_dir is not None else csv_path.parent / "quilt_1m"
    conversion = Conversion("quilt_1m")
    seen: set[str] = set()
    for lineno, row in read_csv_rows(csv_path, conversion, required=("caption", "image_path")):
        where = f"{csv_path}:{lineno}"
        if splits is not None and row.get("split") not in splits:
            conversion.skips.add("other_split", where)
            continue
        name = (row.get("image_path") or "").strip()
        caption = clean_text(row.get("caption"))
        if (name, caption) in seen:
            conversion.skips.add("duplicate_record", where)
            continue
        if conversion.add(
            images / name if name else None, caption, where=where, image_check=image_check,
            license=license or QUILT_LICENSE, source_id=name, subset=row.get("subset") or None,
            split=row.get("split") or None, magnification=row.get("magnification") or None,
        ):
            seen.add((name, caption))
    return conversion


def convert_openclip_csv(
    csv_path: Path,
    *,
    image_root: Path | None = None,
    separator: str = "\t",
    img_key: str = "filepath",
    caption_key: str = "title",
    source: str = "openclip_csv",
    license: str | None = None,
    image_check: ImageCheck = "header",
) -> Conversion:
    """Rows of an open_clip CSV; ``source_id`` is the image path as written in the file."""
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root is not None else Path.cwd()
    conversion = Conversion(source)
    for lineno, row in read_csv_rows(csv_path, conversion, delimiter=separator, required=(img_key, caption_key)):
        where = f"{csv_path}:{lineno}"
        name = (row.get(img_key) or "").strip()
        path = (Path(name) if Path(name).is_absolute() else root / name) if name else None
        conversion.add(path, clean_text(row.get(caption_key)), where=where, image_check=image_check,
                       license=license, source_id=name)
    return conversion
