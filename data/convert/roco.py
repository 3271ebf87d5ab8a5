"""ROCO (Radiology Objects in COntext, Pelka et al. 2018) -> pretraining records.

Layout (github.com/razorx89/roco-dataset, ``data/``; checked 2026-11-24)::

    data/{train,validation,test}/{radiology,non-radiology}/
        captions.txt   ROCO_ID <TAB> caption            (one line per image)
        licences.txt   CSV header ROCO_ID,PMC_ID,CC     (PMC_ID is the image file name, e.g.
                       PMC4083729_AMHSR-4-14-g002.jpg; CC the article's licence, e.g. "CC BY")
        dlinks.txt     ROCO_ID <TAB> wget ... PMC<id>.tar.gz ... <TAB> image name in the package
        images/        written by scripts/fetch.py as <PMCID>_<image name>

Repackaged copies (Kaggle, some hubs) name the images ``images/ROCO_<n>.jpg``; both names are
tried. ``licences.txt`` and ``dlinks.txt`` are optional; without them the licence is "unknown".
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from data.convert.common import Conversion, ImageCheck, clean_text
from utils.errors import DatasetError

__all__ = ["convert_roco", "ROCO_SPLITS", "ROCO_PARTS"]

ROCO_SPLITS = ("train", "validation", "test")
ROCO_PARTS = ("radiology", "non-radiology")
_PMC_ARCHIVE = re.compile(r"(PMC\d+)\.tar\.gz")


def _read_licences(folder: Path) -> dict[str, tuple[str, str]]:
    """ROCO_ID -> (image file name, licence) from licences.txt, if present."""
    path = folder / "licences.txt"
    if not path.is_file():
        return {}
    out = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for row in csv.DictReader(handle):
            roco_id = (row.get("ROCO_ID") or "").strip()
            if roco_id:
                out[roco_id] = ((row.get("PMC_ID") or "").strip(), (row.get("CC") or "").strip())
    return out


def _read_dlinks(folder: Path) -> dict[str, str]:
    """ROCO_ID -> <PMCID>_<image name>, the name fetch.py saves the image under."""
    path = folder / "dlinks.txt"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        match = _PMC_ARCHIVE.search(parts[1]) if len(parts) >= 3 else None
        if match:
            out[parts[0].strip()] = f"{match.group(1)}_{parts[-1].strip()}"
    return out


def _part_folders(root: Path, splits: tuple[str, ...], parts: tuple[str, ...]) -> list[tuple[str, str, Path]]:
    if (root / "captions.txt").is_file():  # pointed at one part folder
        return [(root.parent.name, root.name, root)]
    found = [(s, p, root / s / p) for s in splits for p in parts if (root / s / p / "captions.txt").is_file()]
    if not found:
        raise DatasetError(
            f"{root}: no ROCO captions.txt found (expected {root}/<split>/<radiology|non-radiology>/captions.txt)"
        )
    return found


def convert_roco(
    root: Path,
    *,
    splits: tuple[str, ...] = ROCO_SPLITS,
    parts: tuple[str, ...] = ROCO_PARTS,
    image_dir: str = "images",
    image_check: ImageCheck = "header",
) -> Conversion:
    """Every captioned image of the chosen splits and parts whose file is present and readable."""
    conversion = Conversion("roco")
    seen_ids: set[str] = set()
    for split, part, folder in _part_folders(Path(root), splits, parts):
        licences, dlinks = _read_licences(folder), _read_dlinks(folder)
        captions_path = folder / "captions.txt"
        for lineno, line in enumerate(captions_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            conversion.seen += 1
            where = f"{captions_path}:{lineno}"
            roco_id, sep, caption = line.partition("\t")
            roco_id = roco_id.strip()
            if not sep or not roco_id:
                conversion.skips.add("malformed_line", where)
                continue
            if roco_id in seen_ids:
                conversion.skips.add("duplicate_id", where)
                continue
            caption = clean_text(caption)
            if not caption:
                conversion.skips.add("empty_caption", where)
                continue
            file_name, licence = licences.get(roco_id, ("", ""))
            candidates = [n for n in (file_name, dlinks.get(roco_id), f"{roco_id}.jpg", f"{roco_id}.png") if n]
            image = next((folder / image_dir / n for n in candidates if (folder / image_dir / n).is_file()), None)
            if image is None:
                conversion.skips.add("missing_image", f"{folder / image_dir / candidates[0]} ({roco_id})")
                continue
            pmcid = (file_name or dlinks.get(roco_id, "")).split("_", 1)[0]
            if conversion.add(
                image, caption, where=where, image_check=image_check, license=licence, source_id=roco_id,
                pmcid=pmcid if pmcid.startswith("PMC") else None, split=split, subset=part,
            ):
                seen_ids.add(roco_id)
    return conversion
