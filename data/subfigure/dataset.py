"""split_dataset: a BLIP-format figure list -> panel crops, subfigures.json and a report.

Each input record ``{"image", "caption", ...}`` becomes either one record per
panel (crop, subcaption, label, parent, box, alignment "ocr" or "order") or,
when it cannot be split reliably, one record for the whole figure with its
full caption (alignment "whole"). Every extra field of the parent (pmcid,
license, doi, ...) is copied; a parent field that collides with one of ours
is kept as ``parent_<field>``.

Long runs: a bad record (not a dict, no image, unreadable image, ...) is
skipped and counted by reason, never fatal. Results of finished figures are
appended to ``out_dir/.split_progress.jsonl`` as they complete, so a rerun
after an interruption skips them; crops and the final JSON files are written
atomically (temporary name + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from data.subfigure.align import align
from data.subfigure.captions import split_caption_detailed
from data.subfigure.figure import split_figure
from data.subfigure.labels import caption_units
from utils.atomic import atomic_open, atomic_write_json
from utils.json_file import read_json_file

__all__ = ["split_dataset", "SUBFIGURES_FILE", "REPORT_FILE", "PROGRESS_FILE", "CROPS_DIR"]

logger = logging.getLogger(__name__)

SUBFIGURES_FILE = "subfigures.json"
REPORT_FILE = "split_report.json"
PROGRESS_FILE = ".split_progress.jsonl"
CROPS_DIR = "crops"
OUR_FIELDS = ("image", "caption", "label", "parent", "box", "alignment")
MAX_SKIP_EXAMPLES = 20
JPEG_QUALITY = 95


def _record_key(record: dict) -> str:
    """Identity of an input record for resuming: its image and caption."""
    blob = json.dumps([record.get("image"), record.get("caption")], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def _safe_stem(path: str) -> str:
    stem = Path(path).stem or "figure"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60]


def _resolve(image: str, image_root: Path) -> Path:
    path = Path(image)
    return path if path.is_absolute() else image_root / path


def _write_crop(img, box: tuple[int, int, int, int], target: Path) -> None:
    crop = img.crop(box)
    with atomic_open(target, "wb") as handle:
        if target.suffix == ".png":
            crop.save(handle, format="PNG")
        else:
            crop.save(handle, format="JPEG", quality=JPEG_QUALITY)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link the original into the output folder (a copy across file systems), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _extras(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if key in ("image", "caption"):
            continue
        out[f"parent_{key}" if key in OUR_FIELDS else key] = value
    return out


def _process(task: tuple[int, Any, str, str, str, int]) -> dict:
    """Split one record (runs in a worker). Returns the journal entry, or a skip."""
    index, record, image_root, out_dir, key, max_pixels = task
    where = f"record {index}"
    if not isinstance(record, dict):
        return {"skip": "bad_record", "message": f"{where}: not a JSON object"}
    image_field, caption = record.get("image"), record.get("caption", "")
    if not isinstance(image_field, str) or not image_field.strip():
        return {"skip": "bad_record", "message": f"{where}: missing or empty 'image' field"}
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        return {"skip": "bad_record", "message": f"{where}: 'caption' is not a string"}
    source = _resolve(image_field, Path(image_root))
    try:
        img = open_image(source, max_pixels=max_pixels)
    except ImageError as exc:
        return {"skip": exc.reason, "message": f"{where}: {exc}"}
    out = Path(out_dir)
    stem = f"{_safe_stem(image_field)}-{key[:10]}"
    extras = _extras(record)
    width, height = img.size
    detailed = split_caption_detailed(caption)
    subcaptions = [(sub.label, sub.text) for sub in detailed]
    pairs = None
    panels = []
    if subcaptions:
        sublabels = {sub.label: sub.sublabels for sub in detailed if sub.sublabels}
        panels = split_figure(img, labels=caption_units([(sub.label, sub.sublabels) for sub in detailed]))
        pairs = align([p.candidates for p in panels], subcaptions, sublabels)
    if not pairs:
        suffix = source.suffix.lower() if source.suffix else ".img"
        target = out / CROPS_DIR / f"{stem}{suffix}"
        _link_or_copy(source, target)
        reason = "not_compound" if not subcaptions else "unmatched"
        rec = {
            "image": f"{CROPS_DIR}/{target.name}",
            "caption": caption,
            "label": None,
            "parent": image_field,
            "box": [0, 0, width, height],
            "alignment": "whole",
            **extras,
        }
        return {"key": key, "status": "whole", "reason": reason, "records": [rec], "panels_found": len(panels)}
    ext = ".png" if source.suffix.lower() == ".png" else ".jpg"
    records = []
    for pair in pairs:
        box = panels[pair.panel].box
        safe_label = re.sub(r"[^A-Za-z0-9]+", "_", pair.label)
        target = out / CROPS_DIR / f"{stem}-{safe_label}{ext}"
        _write_crop(img, box, target)
        records.append(
            {
                "image": f"{CROPS_DIR}/{target.name}",
                "caption": pair.subcaption,
                "label": pair.label,
                "parent": image_field,
                "box": list(box),
                "alignment": pair.method,
                **extras,
            }
        )
    return {"key": key, "status": "split", "reason": "split", "records": records, "panels_found": len(panels)}


def _worker_init() -> None:
    # One thread per worker process: parallelism comes from the processes.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MEDVLP_OCR_THREADS", "1")


def _load_progress(path: Path, out_dir: Path) -> dict[str, dict]:
    """Finished figures from an earlier run; a torn last line or a missing crop means 'redo'."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict) or "key" not in entry or "records" not in entry:
                continue
            if all((out_dir / rec["image"]).exists() for rec in entry["records"]):
                done[entry["key"]] = entry
    return done


def _read_input(input_json: Path) -> list:
    data = read_json_file(input_json, what="input list")
    if not isinstance(data, list):
        raise ValueError(f"{input_json}: expected a JSON list of {{'image', 'caption'}} records, got {type(data).__name__}")
    return data


def _results(tasks: list, workers: int) -> Iterator[dict]:
    if workers <= 1:
        for task in tasks:
            yield _safe_process(task)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        yield from pool.map(_safe_process, tasks, chunksize=4)


def _safe_process(task) -> dict:
    """A bug or an odd image in one record must not end a 10,000-figure run."""
    try:
        return _process(task)
    except Exception as exc:  # noqa: BLE001 - counted and reported per record
        return {"skip": "error", "message": f"record {task[0]}: {type(exc).__name__}: {exc}"}


def split_dataset(
    input_json: str | Path,
    out_dir: str | Path,
    *,
    image_root: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Split every figure of a BLIP-format list; write crops, ``subfigures.json`` and ``split_report.json``.

    Relative ``image`` paths resolve against ``image_root`` or else the input
    file's folder. Output ``image`` paths are relative to ``out_dir``. Returns
    the report: figures, split, whole, unmatched, not_compound, panels,
    records, aligned_ocr, aligned_order, resumed, skipped (by reason),
    skipped_examples, seconds.
    """
    started = time.perf_counter()
    input_json = Path(input_json)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else input_json.resolve().parent
    data = _read_input(input_json)
    progress_path = out / PROGRESS_FILE
    done = _load_progress(progress_path, out)

    keys = [_record_key(r) if isinstance(r, dict) else f"invalid-{i}" for i, r in enumerate(data)]
    entries: dict[str, dict] = {}
    skipped: dict[str, int] = {}
    examples: list[str] = []
    resumed = 0
    tasks = []
    for i, (record, key) in enumerate(zip(data, keys)):
        if key in done:
            if key not in entries:
                entries[key] = done[key]
                resumed += 1
            continue
        tasks.append((i, record, str(root), str(out), key, max_pixels))
    # Duplicated records (same image and caption) are split once.
    unique, seen = [], set()
    for task in tasks:
        if task[4] not in seen:
            seen.add(task[4])
            unique.append(task)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(unique), desc="split", unit="fig")
    failures: dict[str, tuple[str, str]] = {}
    with open(progress_path, "a", encoding="utf-8") as journal:
        for task, result in zip(unique, _results(unique, max(1, workers))):
            if "skip" in result:
                failures[task[4]] = (result["skip"], result["message"])
                logger.warning("skipped %s", result["message"])
            else:
                entries[result["key"]] = result
                journal.write(json.dumps(result, ensure_ascii=False) + "\n")
                journal.flush()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    # Count skips per input record (a duplicated bad record counts twice).
    for task in tasks:
        if task[4] in failures:
            reason, message = failures[task[4]]
            skipped[reason] = skipped.get(reason, 0) + 1
            if len(examples) < MAX_SKIP_EXAMPLES:
                examples.append(f"record {task[0]}: {message.split(': ', 1)[-1]}")

    records: list[dict] = []
    counts = {"split": 0, "whole": 0, "unmatched": 0, "not_compound": 0, "panels": 0, "aligned_ocr": 0, "aligned_order": 0}
    for key in keys:
        entry = entries.get(key)
        if entry is None:
            continue
        records.extend(entry["records"])
        counts[entry["status"]] += 1
        if entry["status"] == "whole":
            counts[entry["reason"]] += 1
        else:
            counts["panels"] += len(entry["records"])
            for rec in entry["records"]:
                counts[f"aligned_{rec['alignment']}"] += 1
    atomic_write_json(out / SUBFIGURES_FILE, records, indent=1)
    report = {
        "figures": len(data),
        **counts,
        "records": len(records),
        "resumed": resumed,
        "skipped": dict(sorted(skipped.items())),
        "skipped_examples": examples,
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(out / REPORT_FILE, report, indent=1)
    return report
