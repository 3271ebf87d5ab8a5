"""PMC-OA (Lin et al. 2023, PMC-CLIP) -> pretraining records.

Layout (huggingface.co/datasets/axiong/pmc_oa, dataset card and file list; checked 2026-11-24)::

    pmc_oa.jsonl        {"image": "PMC212319_Fig3_4.jpg", "caption": "...", ...} per line:
                        subfigures with their own subcaptions (compound captions split by ChatGPT)
    pmc_oa_beta.jsonl   the same subfigures, each with the whole compound caption
    train.jsonl / valid.jsonl / test.jsonl   earlier split files, same record shape, plus
                        "pmcid" and "url_name" (the figure's name in the article package)
    images.zip          the subfigure images (unzipped: a folder of <image> files)

The records carry no licence; PMC-OA's articles come from the PMC Open Access Subset, whose
licences vary per article, so ``license`` is what ``--license`` says (default "unknown").
``source`` is ``pmc_oa`` for the subcaption variant and ``pmc_oa_beta`` for the whole-caption one
(decided by the file name, or ``variant``).
"""

from __future__ import annotations

from pathlib import Path

from data.convert.common import Conversion, ImageCheck, clean_text, read_jsonl

__all__ = ["convert_pmc_oa"]


def convert_pmc_oa(
    jsonl: Path,
    *,
    image_dir: Path | None = None,
    variant: str | None = None,
    license: str | None = None,
    image_check: ImageCheck = "header",
) -> Conversion:
    """Records of one PMC-OA JSONL file; images in ``image_dir`` (default: ``images/`` beside it)."""
    jsonl = Path(jsonl)
    if variant is None:
        variant = "pmc_oa_beta" if "beta" in jsonl.name else "pmc_oa"
    images = Path(image_dir) if image_dir is not None else jsonl.parent / "images"
    conversion = Conversion(variant)
    seen: set[tuple[str, str]] = set()
    for lineno, obj in read_jsonl(jsonl, conversion):
        where = f"{jsonl}:{lineno}"
        name = obj.get("image") if isinstance(obj.get("image"), str) and obj["image"].strip() else None
        caption = clean_text(obj.get("caption"))
        if (name, caption) in seen:
            conversion.skips.add("duplicate_record", where)
            continue
        pmcid = obj.get("pmcid") or (name.split("_", 1)[0] if name and name.startswith("PMC") else None)
        if conversion.add(
            images / name if name else None, caption, where=where, image_check=image_check,
            license=license, source_id=name or "", pmcid=pmcid, url_name=obj.get("url_name"),
        ):
            seen.add((name, caption))
    return conversion
