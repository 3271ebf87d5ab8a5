"""MedICaT (Subramanian et al. 2020) -> pretraining records: whole figures and annotated subfigures.

Layout (github.com/allenai/medicat README and sample/; code/subcaption readers; checked 2026-11-24):

* Figures: a JSONL file, one figure per line::

      {"pdf_hash": "57c9...ffa", "fig_uri": "2-Figure1-1.png", "fig_key": "Figure1",
       "s2_caption": "Figure 1. (A) Barium enema ...", "s2orc_caption": "...",
       "s2orc_references": ["... (Figure 1 ).", ...] or null, "radiology": false,
       "oa_info": {"doi": "10.14309/crj.2014.54", "oa": {"license": "cc-by-nc-nd", ...}}}

  The image is ``figures/{pdf_hash}_{fig_uri}``. The licence is the article's (``oa_info.oa.license``,
  null for some: "unknown"); the inline references are kept as ``references``.
* Subcaption annotations: a JSONL file in Prodigy's shape, one compound figure per line::

      {"pdf_hash": ..., "fig_uri": ..., "answer": "accept" | "reject" | "ignore",
       "tokens": [{"text": "Figure", ...}, ...],
       "spans": [{"label": "A", "points": [[x, y], ...]}, ...],      # subfigure polygons
       "subcaptions": {"A": [token indices], ...}}

  Only accepted figures are used (as MedICaT's own reader does). Each subfigure with a subcaption
  becomes a crop (the bounding box of its points) saved under ``crops_dir`` and a record whose
  caption is its subcaption tokens joined by spaces.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from data.convert.common import Conversion, ImageCheck, clean_text, make_record, read_jsonl
from data.image_io import ImageError, open_image
from utils.atomic import atomic_open

__all__ = ["convert_medicat", "convert_medicat_subcaptions", "medicat_licence"]

CROP_QUALITY = 95


def medicat_licence(obj: dict[str, Any]) -> str | None:
    oa = (obj.get("oa_info") or {}).get("oa") or {}
    return oa.get("license") if isinstance(oa, dict) else None


def convert_medicat(
    jsonl: Path, *, figures_dir: Path | None = None, image_check: ImageCheck = "header"
) -> Conversion:
    """Whole figures with their captions, licence, DOI and inline references."""
    jsonl = Path(jsonl)
    figures = Path(figures_dir) if figures_dir is not None else jsonl.parent / "figures"
    conversion = Conversion("medicat")
    seen: set[str] = set()
    for lineno, obj in read_jsonl(jsonl, conversion):
        where = f"{jsonl}:{lineno}"
        pdf_hash, fig_uri = obj.get("pdf_hash"), obj.get("fig_uri")
        if not isinstance(pdf_hash, str) or not isinstance(fig_uri, str) or not pdf_hash or not fig_uri:
            conversion.skips.add("missing_figure_id", where)
            continue
        figure_id = f"{pdf_hash}_{fig_uri}"
        if figure_id in seen:
            conversion.skips.add("duplicate_id", where)
            continue
        caption = clean_text(obj.get("s2_caption")) or clean_text(obj.get("s2orc_caption"))
        references = obj.get("s2orc_references")
        if conversion.add(
            figures / figure_id, caption, where=where, image_check=image_check, license=medicat_licence(obj),
            source_id=figure_id, doi=(obj.get("oa_info") or {}).get("doi"), radiology=obj.get("radiology"),
            references=[r for r in references if isinstance(r, str)] if isinstance(references, list) else None,
        ):
            seen.add(figure_id)
    return conversion


def _box(points: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Bounding box of a polygon, clipped to the image; None if malformed or empty."""
    try:
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
    except (TypeError, ValueError, IndexError):
        return None
    if not xs:
        return None
    left, top = max(0, int(min(xs))), max(0, int(min(ys)))
    right, bottom = min(width, int(round(max(xs)))), min(height, int(round(max(ys))))
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def convert_medicat_subcaptions(
    jsonl: Path,
    *,
    crops_dir: Path,
    figures_dir: Path | None = None,
    licences: dict[str, str] | None = None,
) -> Conversion:
    """Subfigure crops with their subcaptions; ``licences`` maps figure id -> licence (from the figures file)."""
    jsonl = Path(jsonl)
    figures = Path(figures_dir) if figures_dir is not None else jsonl.parent / "figures"
    crops_dir = Path(crops_dir)
    conversion = Conversion("medicat_subcaption")
    for lineno, obj in read_jsonl(jsonl, conversion):
        where = f"{jsonl}:{lineno}"
        if obj.get("answer") != "accept":
            conversion.skips.add("annotation_not_accepted", where)
            continue
        pdf_hash, fig_uri = obj.get("pdf_hash"), obj.get("fig_uri")
        tokens, spans, subcaptions = obj.get("tokens"), obj.get("spans"), obj.get("subcaptions")
        if not isinstance(pdf_hash, str) or not isinstance(fig_uri, str):
            conversion.skips.add("missing_figure_id", where)
            continue
        if not isinstance(tokens, list) or not isinstance(spans, list) or not spans:
            conversion.skips.add("no_subfigures", where)
            continue
        if not isinstance(subcaptions, dict) or not subcaptions:
            conversion.skips.add("no_subcaptions", where)
            continue
        figure_id = f"{pdf_hash}_{fig_uri}"
        path = figures / figure_id
        try:
            figure = open_image(path)
        except ImageError as err:
            conversion.skips.add("missing_image" if err.reason == "missing" else f"image_{err.reason}", str(path))
            continue
        words = [t.get("text", "") if isinstance(t, dict) else "" for t in tokens]
        for number, span in enumerate(spans):
            label = span.get("label") if isinstance(span, dict) else None
            indices = subcaptions.get(label) if label is not None else None
            if not isinstance(indices, list) or not indices:
                conversion.skips.add("subfigure_without_subcaption", f"{where} [{label}]")
                continue
            try:
                caption = clean_text(" ".join(words[int(i)] for i in sorted(set(indices))))
            except (IndexError, ValueError, TypeError):
                conversion.skips.add("bad_token_index", f"{where} [{label}]")
                continue
            box = _box(span.get("points"), *figure.size)
            if box is None:
                conversion.skips.add("bad_box", f"{where} [{label}]")
                continue
            if not caption:
                conversion.skips.add("empty_caption", f"{where} [{label}]")
                continue
            digest = hashlib.sha1(f"{figure_id}|{number}|{box}".encode()).hexdigest()[:10]
            crop_path = crops_dir / f"{Path(figure_id).stem}_{number}_{digest}.jpg"
            if not crop_path.is_file():
                with atomic_open(crop_path, "wb") as handle:
                    figure.crop(box).save(handle, format="JPEG", quality=CROP_QUALITY)
            conversion.records.append(
                make_record(
                    crop_path, caption, source="medicat_subcaption",
                    license=(licences or {}).get(figure_id), source_id=f"{figure_id}#{label}",
                    parent=str(path), box=list(box), label=str(label),
                )
            )
        figure.close()
    return conversion
