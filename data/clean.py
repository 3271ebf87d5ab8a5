"""Cleaning and test-leakage removal for pretraining lists, with one report counted by reason.

    python -m data.clean data/roco/roco.json data/pmc_oa/pmc_oa.json data/pubmed/pretrain.json \\
        --eval data/pubmed/retrieval_val.json data/pubmed/retrieval_test.json [--config configs/pretrain.yaml] \\
        --out data/clean [--min-words 3] [--min-side 64] [--phash-distance 4] [--workers 8]

Writes ``out/pretrain_clean.json`` (the kept records, every field kept, image paths relative to
``out``), ``out/clean_report.json`` and ``out/clean_report.png`` (bar chart of the counts).

Per record, in this order; a removed record is counted once, under the first reason that removes it:

1. ``leak_image`` / ``leak_caption``: **test leakage.** Its image is a perceptual-hash near-copy
   (Hamming distance <= ``phash_distance`` of the 64-bit pHash, so resized or re-encoded copies
   count) of an image in any evaluation list, or its caption equals one of their captions after
   BLIP's normalisation. ROCO, PMC-OA and MedICaT all come from PMC: a test figure of one is
   often a training figure of another. A paper's numbers depend on this count; it is reported per
   evaluation file.
2. ``bad_record`` (no image or caption field), ``image_<reason>`` (missing, truncated, ...).
3. ``short_caption``: fewer than ``min_words`` words after HTML/whitespace cleaning.
4. ``small_image``: shorter side below ``min_side`` pixels.
5. ``duplicate_caption``: the same normalised caption as an earlier kept record.
6. ``near_duplicate_image``: a near-copy (pHash) of an earlier kept record's image, across all sources.

Captions that HTML/whitespace cleaning changed are rewritten cleaned and counted as
``cleaned_html_whitespace`` (kept). pHash is imagehash's (DCT of a 32x32 grayscale, 8x8 low
frequencies against their median). All pairs of images within the distance, evaluation images
included, are found at once before the per-record pass (multi-index hashing with numpy,
:mod:`data.hash_neighbours`; 15M records: docs/benchmarks/near_duplicates.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator

import imagehash
import numpy as np

from data.captions import clean_caption_text, count_words, pre_caption
from data.hash_neighbours import HashNeighbours
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from utils.atomic import atomic_save, atomic_write_json
from utils.json_file import read_json_file

__all__ = ["CleanSettings", "image_facts", "clean_records", "eval_lists_from_configs", "main"]


@dataclass(frozen=True)
class CleanSettings:
    min_words: int = 3
    min_side: int = 64
    phash_distance: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS


def image_facts(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str | None, int, int, int]:
    """(failure reason or None, width, height, 64-bit pHash) of one image."""
    try:
        img = open_image(path, max_pixels=max_pixels)
    except ImageError as err:
        return f"image_{err.reason}", 0, 0, 0
    value = int(str(imagehash.phash(img)), 16)
    return None, img.width, img.height, value


def _facts_task(task: tuple[str, int]) -> tuple[str | None, int, int, int]:
    return image_facts(*task)


def _map(tasks: list[tuple[str, int]], workers: int) -> Iterator[tuple[str | None, int, int, int]]:
    if workers <= 0:
        yield from map(_facts_task, tasks)
        return
    with get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_facts_task, tasks, chunksize=16)


def _norm(caption: str) -> str:
    return pre_caption(caption, 0)


def _load_list(path: Path) -> list:
    data = read_json_file(path, what="annotation file")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def eval_lists_from_configs(configs: Iterable[Path]) -> list[Path]:
    """Evaluation lists a config names (``eval_file``, ``val_file``, ``test_file``; strings or lists)."""
    from ruamel.yaml import YAML

    found = []
    for config in configs:
        data = YAML(typ="safe", pure=True).load(Path(config).read_text(encoding="utf-8")) or {}
        for key in ("eval_file", "val_file", "test_file"):
            value = data.get(key)
            for item in [value] if isinstance(value, str) else (value or []):
                found.append(Path(item))
    return found


def clean_records(
    inputs: list[Path], eval_files: list[Path], settings: CleanSettings = CleanSettings(), *, workers: int = 0
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept records with absolute image paths, report)."""
    # evaluation side: every image's pHash and every normalised caption
    eval_values: list[int] = []
    eval_owner: list[int] = []  # index into eval_files
    eval_captions: dict[str, str] = {}
    eval_stats = {}
    for number, path in enumerate(eval_files):
        records = _load_list(Path(path))
        root = Path(path).parent
        images = [str(root / r["image"]) for r in records if isinstance(r, dict) and isinstance(r.get("image"), str)]
        unreadable = 0
        for reason, _, _, value in _map([(i, settings.max_pixels) for i in images], workers):
            if reason:
                unreadable += 1
                continue
            eval_values.append(value)
            eval_owner.append(number)
        for r in records:
            captions = r.get("caption") if isinstance(r, dict) else None
            for c in [captions] if isinstance(captions, str) else (captions or []):
                if isinstance(c, str) and _norm(c):
                    eval_captions.setdefault(_norm(c), str(path))
        eval_stats[str(path)] = {"images": len(images), "unreadable_images": unreadable}

    # pretraining side: every image's facts, kept in arrays (15M records: ~250 MB, not GBs of tuples)
    rows: list[tuple[str, Any]] = []  # (where, record with absolute image path)
    for path in inputs:
        root = Path(path).parent
        for i, record in enumerate(_load_list(Path(path))):
            if isinstance(record, dict) and isinstance(record.get("image"), str):
                image = record["image"]
                record = {**record, "image": image if os.path.isabs(image) else str(root / image)}
            rows.append((f"{path}[{i}]", record))
    tasks = [(r["image"], settings.max_pixels) if isinstance(r, dict) and isinstance(r.get("image"), str)
             else ("", settings.max_pixels) for _, r in rows]
    reasons: list[str | None] = [None] * len(rows)
    sizes = np.zeros((len(rows), 2), dtype=np.int32)
    values = np.zeros(len(rows), dtype=np.uint64)
    for i, (reason, width, height, value) in enumerate(_map(tasks, workers)):
        reasons[i], sizes[i], values[i] = reason, (width, height), value

    # all near-copy relations at once (data/hash_neighbours.py): rows first, then the evaluation images
    hashes = HashNeighbours(np.concatenate([values, np.asarray(eval_values, dtype=np.uint64)]),
                            settings.phash_distance)
    eval_marks = np.full(len(hashes.distinct), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(eval_marks, hashes.group[len(rows):], np.asarray(eval_owner, dtype=np.int64))
    leak_of_group = hashes.nearest_marked(np.where(eval_marks == np.iinfo(np.int64).max, -1, eval_marks))

    removed: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    leaks_by_eval: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    cleaned_text = 0
    kept: list[dict[str, Any]] = []
    seen_captions: set[str] = set()
    kept_image_of_group: dict[int, str] = {}  # distinct pHash -> the first kept record with it

    def drop(reason: str, where: str, record: Any) -> None:
        removed[reason] += 1
        source = record.get("source", "unknown") if isinstance(record, dict) else "unknown"
        by_source[str(source)][reason] += 1
        if len(examples[reason]) < 5:
            examples[reason].append(where)

    for row, (where, record) in enumerate(rows):
        reason, (width, height), group = reasons[row], sizes[row], int(hashes.group[row])
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not isinstance(record.get("caption"), str):
            drop("bad_record", where, record)
            continue
        caption = clean_caption_text(record["caption"])
        norm = _norm(caption)
        if reason is None and leak_of_group[group] >= 0:
            leak = str(eval_files[int(leak_of_group[group])])
            leaks_by_eval[leak] += 1
            drop("leak_image", f"{where} ~ {leak}", record)
            continue
        if norm and norm in eval_captions:
            leaks_by_eval[eval_captions[norm]] += 1
            drop("leak_caption", f"{where} = {eval_captions[norm]}", record)
            continue
        if reason is not None:
            drop(reason, f"{where} {record['image']}", record)
            continue
        if count_words(caption) < settings.min_words:
            drop("short_caption", where, record)
            continue
        if min(width, height) < settings.min_side:
            drop("small_image", f"{where} {width}x{height}", record)
            continue
        if norm in seen_captions:
            drop("duplicate_caption", where, record)
            continue
        twin = next((kept_image_of_group[g] for g in hashes.near(group).tolist() if g in kept_image_of_group), None)
        if twin is not None:
            drop("near_duplicate_image", f"{where} ~ {twin}", record)
            continue
        if caption != record["caption"]:
            cleaned_text += 1
        seen_captions.add(norm)
        kept_image_of_group.setdefault(group, where)
        kept.append({**record, "caption": caption})

    report = {
        "settings": asdict(settings),
        "inputs": [str(p) for p in inputs],
        "eval_files": eval_stats,
        "records_in": len(rows),
        "records_kept": len(kept),
        "removed": dict(sorted(removed.items(), key=lambda kv: -kv[1])),
        "removed_total": sum(removed.values()),
        "test_leakage_removed": removed["leak_image"] + removed["leak_caption"],
        "test_leakage_by_eval_file": dict(leaks_by_eval),
        "cleaned_html_whitespace": cleaned_text,
        "near_image_pairs": hashes.pairs,
        "removed_by_source": {s: dict(c) for s, c in sorted(by_source.items())},
        "examples": dict(examples),
    }
    return kept, report


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Horizontal bar chart of the counts (removed by reason, plus the cleaned captions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(report["removed"].items()) + [("cleaned_html_whitespace (kept)", report["cleaned_html_whitespace"])]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    labels = [k for k, _ in items]
    values = [v for _, v in items]
    colors = ["#c0392b" if k.startswith("leak") else "#7f8c8d" for k in labels]
    ax.barh(labels, values, color=colors)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.set_title(f"{report['records_kept']} of {report['records_in']} records kept; "
                 f"{report['test_leakage_removed']} removed as test leakage", fontsize=9)
    fig.tight_layout()
    atomic_save(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.clean", description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="pretraining JSON lists")
    parser.add_argument("--eval", nargs="*", type=Path, default=[], help="retrieval val/test lists in use")
    parser.add_argument("--config", nargs="*", type=Path, default=[], help="configs whose eval lists count too")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--min-side", type=int, default=64)
    parser.add_argument("--phash-distance", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    eval_files = list(args.eval) + eval_lists_from_configs(args.config)
    if not eval_files:
        print("warning: no evaluation list given (--eval / --config): test leakage is NOT checked", file=sys.stderr)
    try:
        kept, report = clean_records(args.inputs, eval_files, CleanSettings(args.min_words, args.min_side,
                                                                            args.phash_distance), workers=args.workers)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    records = [{**r, "image": os.path.relpath(r["image"], out)} for r in kept]
    atomic_write_json(out / "pretrain_clean.json", records)
    atomic_write_json(out / "clean_report.json", report, indent=2)
    plot_report(report, out / "clean_report.png")
    print(f"kept {report['records_kept']} of {report['records_in']} records -> {out / 'pretrain_clean.json'}")
    print(f"test leakage removed: {report['test_leakage_removed']} {json.dumps(report['test_leakage_by_eval_file'])}")
    print(f"removed by reason: {json.dumps(report['removed'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
