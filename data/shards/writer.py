"""JSON lists -> training shards: every image decoded, checked, resized once and re-encoded.

Why: decoding full-size PubMed figures (median 0.4 MP, up to 4+ MP, many PNG) costs ~4x the CPU of
decoding the same figure resized to 2x the training resolution, and 8 GPUs need thousands of
samples/s (docs/benchmarks/data_at_scale.md). Preparing once moves that cost out of every epoch.

Shards are webdataset-layout tars (``<key>.jpg|png`` + ``<key>.txt`` caption as in the JSON +
``<key>.json`` record metadata: source, licence, original id and path, sizes), so webdataset,
open_clip or ``tar`` read them too. Keys are the record's position in the concatenated input lists.

Robust to long runs: a bad record or image is skipped and counted by reason; each shard is written
under a temporary name, fsynced and renamed; after each shard the progress (next input record,
shards, counts) is saved atomically, so ``kill -9`` at any point loses at most the shard being
written, and rerunning the same command continues from there. A rerun with other inputs or
settings into the same folder is refused instead of mixing two data sets.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from data.captions import clean_caption_text, pre_caption
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from data.pretrain_dataset import record_problem
from data.shards.manifest import MANIFEST_NAME, Manifest, ShardInfo, file_sha256
from utils.atomic import atomic_open, atomic_write_json
from utils.json_file import read_json_file

__all__ = ["PrepareSettings", "prepare_shards", "resize_to_max_side", "encode_image", "PROGRESS_NAME"]

logger = logging.getLogger(__name__)

PROGRESS_NAME = ".prepare_progress.json"
SHARD_PATTERN = "shard-{:06d}.tar"


@dataclass(frozen=True)
class PrepareSettings:
    """How images are re-encoded and shards cut (saved in the manifest)."""

    max_side: int = 448
    image_format: str = "jpeg"  # jpeg (quality below) or png (lossless)
    quality: int = 90
    shard_samples: int = 10_000
    shard_bytes: int = 512 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_words: int = 30  # only to drop captions that are empty after BLIP's cleaning

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be jpeg or png, got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.shard_samples < 1 or self.shard_bytes < 1:
            raise ValueError("shard_samples and shard_bytes must be >= 1")


def resize_to_max_side(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink (never enlarge) so the longer side is ``max_side``, keeping the aspect ratio (bicubic)."""
    width, height = img.size
    longest = max(width, height)
    if longest <= max_side:
        return img
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def encode_image(img: Image.Image, settings: PrepareSettings) -> tuple[bytes, str]:
    """(encoded bytes, webdataset field name)."""
    buffer = io.BytesIO()
    if settings.image_format == "png":
        img.save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue(), "png"
    img.save(buffer, format="JPEG", quality=settings.quality, optimize=False)
    return buffer.getvalue(), "jpg"


# -- the per-record work (runs in pool workers) ------------------------------------------

_WORKER_SETTINGS: PrepareSettings | None = None


def _init_worker(settings: PrepareSettings) -> None:
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = settings


def _process(task: tuple[int, str, Any, str]) -> tuple[int, str | None, Any]:
    """(index, reason or None, payload): payload is (fields, source) or the place of the failure."""
    index, where, record, root = task
    settings = _WORKER_SETTINGS
    assert settings is not None
    raw = record.get("caption") if isinstance(record, dict) else None
    problem = record_problem(record, pre_caption(raw, settings.max_words) if isinstance(raw, str) else None)
    if problem:
        return index, problem, where
    image_path = os.path.join(root, record["image"])
    try:
        img = open_image(image_path, max_pixels=settings.max_pixels)
    except ImageError as err:
        return index, f"image_{err.reason}", image_path
    original = img.size
    img = resize_to_max_side(img, settings.max_side)
    data, field = encode_image(img, settings)
    meta = {k: v for k, v in record.items() if k not in ("image", "caption")}
    meta.update(
        image=record["image"], width=img.width, height=img.height,
        original_width=original[0], original_height=original[1],
    )
    key = f"{index:09d}"
    fields = [
        (f"{key}.{field}", data),
        (f"{key}.txt", clean_caption_text(raw).encode("utf-8")),
        (f"{key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")),
    ]
    return index, None, (fields, str(record.get("source") or ""))


# -- inputs ------------------------------------------------------------------------------


def _load_inputs(inputs: list[Path], image_root: Path | None) -> tuple[list[tuple[str, Any, str]], str]:
    """All records as (where, record, image root) and a fingerprint of the inputs' content."""
    digest = hashlib.sha256()
    records: list[tuple[str, Any, str]] = []
    for path in inputs:
        path = Path(path)
        data = read_json_file(path, what="annotation file")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        digest.update(file_sha256(path).encode())
        root = str(image_root if image_root is not None else path.parent)
        records.extend((f"{path}[{i}]", record, root) for i, record in enumerate(data))
    return records, digest.hexdigest()


class _ShardWriter:
    """Collects samples into the current shard; writes it atomically when full."""

    def __init__(self, out_dir: Path, number: int):
        self.out_dir = out_dir
        self.number = number
        self.members: list[tuple[str, bytes]] = []
        self.samples = 0
        self.size = 0

    def fits(self, fields: list[tuple[str, bytes]], settings: PrepareSettings) -> bool:
        if not self.samples:
            return True
        extra = sum(512 + (len(d) + 511) // 512 * 512 for _, d in fields)
        return self.samples < settings.shard_samples and self.size + extra <= settings.shard_bytes

    def add(self, fields: list[tuple[str, bytes]]) -> None:
        self.members.extend(fields)
        self.samples += 1
        self.size += sum(512 + (len(d) + 511) // 512 * 512 for _, d in fields)

    def flush(self) -> ShardInfo:
        path = self.out_dir / SHARD_PATTERN.format(self.number)
        with atomic_open(path, "wb") as handle:
            # Fixed metadata (mtime 0, no owner names): the same input gives byte-identical shards.
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive:
                for name, data in self.members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    archive.addfile(info, io.BytesIO(data))
        info = ShardInfo(path=path, samples=self.samples, bytes=path.stat().st_size, sha256=file_sha256(path))
        self.number += 1
        self.members, self.samples, self.size = [], 0, 0
        return info


def _tasks(records: list[tuple[str, Any, str]], start: int) -> Iterator[tuple[int, str, Any, str]]:
    for index in range(start, len(records)):
        where, record, root = records[index]
        yield index, where, record, root


def prepare_shards(
    inputs: list[Path],
    out_dir: Path,
    settings: PrepareSettings = PrepareSettings(),
    *,
    image_root: Path | None = None,
    workers: int = 0,
    source: str | None = None,
    license: str | None = None,
    progress: bool = False,
) -> Manifest:
    """Write shards and ``manifest.json`` into ``out_dir``; continue an interrupted run of the same job."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # a shard whose writer was killed
        stale.unlink()
    records, input_fp = _load_inputs(list(inputs), image_root)
    job = {"inputs": [str(p) for p in inputs], "inputs_sha256": input_fp, "settings": asdict(settings),
           "image_root": str(image_root) if image_root else None}
    job_fp = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()

    progress_path = out_dir / PROGRESS_NAME
    manifest_path = out_dir / MANIFEST_NAME
    state: dict[str, Any] = {"job": job_fp, "next_record": 0, "shards": [], "skipped": {}, "examples": [],
                             "sources": {}}
    if progress_path.exists():
        saved = read_json_file(progress_path, what="prepare progress file")
        if saved.get("job") != job_fp:
            raise ValueError(
                f"{out_dir} holds shards of another prepare job (other inputs or settings); "
                "use a new output folder or delete this one"
            )
        state = saved
    elif manifest_path.exists():
        existing = read_json_file(manifest_path, what="shard manifest")
        if existing.get("settings", {}).get("job") == job_fp:
            return Manifest.load(manifest_path)
        raise ValueError(f"{out_dir} already holds a manifest of another prepare job; use a new output folder")

    shards = [
        ShardInfo(path=out_dir / s["path"], samples=s["samples"], bytes=s["bytes"], sha256=s["sha256"])
        for s in state["shards"]
    ]
    skipped = Counter(state["skipped"])
    examples: list[list[str]] = state["examples"]
    sources = Counter(state["sources"])
    writer = _ShardWriter(out_dir, number=len(shards))
    start = int(state["next_record"])
    pending_sources: Counter[str] = Counter()

    def save_progress(next_record: int) -> None:
        atomic_write_json(progress_path, {
            "job": job_fp, "next_record": next_record,
            "shards": [{"path": s.path.name, "samples": s.samples, "bytes": s.bytes, "sha256": s.sha256}
                       for s in shards],
            "skipped": dict(skipped), "examples": examples, "sources": dict(sources),
        })

    def results() -> Iterator[tuple[int, str | None, Any]]:
        if workers <= 0:
            _init_worker(settings)
            yield from map(_process, _tasks(records, start))
            return
        with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
            yield from pool.imap(_process, _tasks(records, start), chunksize=4)

    done = start
    for index, reason, payload in results():
        if reason is not None:
            skipped[reason] += 1
            if len(examples) < 20:
                examples.append([reason, str(payload)])
            done = index + 1
            continue
        fields, record_source = payload
        if not writer.fits(fields, settings):
            shards.append(writer.flush())
            sources.update(pending_sources)
            pending_sources.clear()
            save_progress(index)  # this record starts the next shard
        writer.add(fields)
        pending_sources[record_source or source or "unknown"] += 1
        done = index + 1
        if progress and (index + 1) % 1000 == 0:
            logger.info("prepare: %d / %d records", index + 1, len(records))
    if writer.samples:
        shards.append(writer.flush())
        sources.update(pending_sources)
    save_progress(done)

    manifest = Manifest(
        path=manifest_path, shards=shards, source=source or "mixed", license=license or "unknown",
        settings={**asdict(settings), "job": job_fp, "inputs": [str(p) for p in inputs]},
        counts={"records_in": len(records), "samples": sum(s.samples for s in shards),
                "skipped": dict(sorted(skipped.items())), "skipped_total": sum(skipped.values()),
                "examples": examples, "sources": dict(sorted(sources.items()))},
    )
    manifest.save()
    progress_path.unlink()
    return manifest
