"""Write a complete phantom dataset: images, masks, JSON splits, metadata, tokenizer, manifest.

Determinism: every image draws from its own random stream, keyed by (seed,
split, index), and val/test attribute tuples from a stream keyed by (seed,
split); so the bytes written depend only on the parameters, never on the
number of worker processes.

Crash safety: everything is written into a hidden sibling folder and renamed
into place at the end; ``manifest.json`` (parameters plus every file with its
size) is the last file written. A folder whose manifest is missing, lists
other parameters or names a missing/short file is not complete and is
regenerated from scratch.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.phantom.attributes import ImageSpec, num_unique_specs, sample_train_spec, sample_unique_specs
from data.phantom.captions import MAX_CAPTIONS_PER_IMAGE, write_captions
from data.phantom.render import (
    LOBE_ANCHORS,
    LOBE_SECTORS_DEG,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    SIZE_RANGES,
    render_phantom,
)
from utils.atomic import atomic_write_json

__all__ = [
    "GENERATOR",
    "GENERATOR_VERSION",
    "SPLITS",
    "PhantomParams",
    "generate_phantom_dataset",
    "phantom_dataset_is_complete",
    "dataset_paths",
]

log = logging.getLogger(__name__)

GENERATOR = "medvlp-phantom"
GENERATOR_VERSION = 1  # bump whenever the bytes a given parameter set produces change
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_STREAM_RENDER, _STREAM_CAPTIONS, _STREAM_SPECS = 0, 1, 2
TOKENIZER_VOCAB_SIZE = 1000
# Names this generator writes at the top of a dataset folder: only such a folder may be replaced.
_OWN_NAMES = {"images", "masks", "tokenizer", "manifest.json", "metadata.json", "pretrain.json",
              "retrieval_train.json", "retrieval_val.json", "retrieval_test.json"}
_TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.phantom-(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")

CONVENTIONS = {
    "orientation": "axial slice viewed from the feet: anterior at the top, the patient's LEFT on the image's RIGHT "
    "(radiological convention); 'left'/'right' in captions and metadata are the patient's sides",
    "mask": "masks/<split>/<name>.png, same size as the image, 8-bit: 0 = no lesion, k = lesion with id k",
    "box": "[x0, y0, x1, y1] in pixels, x1/y1 exclusive (numpy slice convention), from the mask",
    "size": "longest lesion diameter as a fraction of the image width: "
    + ", ".join(f"{name} {low}-{high}" for name, (low, high) in SIZE_RANGES.items()),
    "head_coordinates": "u = dx cos(phi) + dy sin(phi) (towards the patient's left), v = dx sin(phi) - dy cos(phi) "
    "(anterior), dx/dy = pixel - head center_xy, phi = head rotation_deg; divide by brain_semi_axes_px "
    "for brain-normalised coordinates",
    "lobe_anchors_brain_normalised_abs_u_v": LOBE_ANCHORS,
    "lobe_sectors_deg_from_anterior": LOBE_SECTORS_DEG,
    "intensity": "relative to the surrounding brain tissue; CT captions say hyper/hypodense, MRI captions "
    "hyper/hypointense",
    "captions": "every caption names the modality and, for every lesion, size, intensity, shape, hemisphere "
    "and lobe; val/test attribute tuples are unique within their split",
}


@dataclass(frozen=True)
class PhantomParams:
    """Everything the output bytes depend on (``workers`` is deliberately not part of it)."""

    num_train: int
    num_val: int
    num_test: int
    image_size: int = 128
    captions_per_image: int = 5
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        for name in ("num_train", "num_val", "num_test", "image_size", "captions_per_image", "seed"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        limit = num_unique_specs()
        for name in ("num_val", "num_test"):
            if getattr(self, name) > limit:
                raise ValueError(
                    f"{name}={getattr(self, name)} exceeds the {limit} unique attribute tuples; val/test captions "
                    "must each identify one image, so a split cannot hold more images than tuples"
                )
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (small lesions need >= 3 px), "
                f"got {self.image_size}"
            )
        if not 1 <= self.captions_per_image <= MAX_CAPTIONS_PER_IMAGE:
            raise ValueError(
                f"captions_per_image must be in [1, {MAX_CAPTIONS_PER_IMAGE}], got {self.captions_per_image}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def to_json(self) -> dict[str, int]:
        return {key: int(value) for key, value in asdict(self).items()}


def dataset_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where a dataset in ``out_dir`` keeps its parts (the return value of :func:`generate_phantom_dataset`)."""
    root = Path(out_dir)
    return {
        "root": root,
        "pretrain": root / "pretrain.json",
        "retrieval_train": root / "retrieval_train.json",
        "retrieval_val": root / "retrieval_val.json",
        "retrieval_test": root / "retrieval_test.json",
        "metadata": root / "metadata.json",
        "tokenizer": root / "tokenizer",
        "manifest": root / "manifest.json",
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def phantom_dataset_is_complete(out_dir: str | Path, params: PhantomParams) -> bool:
    """True when ``out_dir`` holds a dataset written by this generator version with ``params``, all files intact."""
    root = Path(out_dir)
    manifest = _read_manifest(root)
    if manifest is None:
        return False
    if (manifest.get("generator"), manifest.get("version"), manifest.get("params")) != (
        GENERATOR,
        GENERATOR_VERSION,
        params.to_json(),
    ):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for relative, size in files.items():
        try:
            if (root / relative).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _image_stream(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    sequence = np.random.SeedSequence(seed, spawn_key=(_SPLIT_CODE[split], index, purpose))
    return np.random.Generator(np.random.PCG64(sequence))


def _split_specs(params: PhantomParams, split: str) -> list[ImageSpec]:
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(params.seed, spawn_key=(_SPLIT_CODE[split], _STREAM_SPECS)))
    )
    count = params.count(split)
    if split == "train":
        return [sample_train_spec(rng) for _ in range(count)]
    return sample_unique_specs(count, rng)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)  # 2D uint8 -> mode "L"
    return buffer.getvalue()


def _render_job(job: tuple[str, str, int, str, ImageSpec, PhantomParams]) -> dict[str, Any]:
    """Render and write one image + mask; return its metadata record (runs in worker processes)."""
    root, split, index, name, spec, params = job
    render_rng = _image_stream(params.seed, split, index, _STREAM_RENDER)
    caption_rng = _image_stream(params.seed, split, index, _STREAM_CAPTIONS)  # own stream: wording edits keep pixels
    image, mask, meta = render_phantom(spec, params.image_size, render_rng)
    captions = write_captions(spec, params.captions_per_image, caption_rng)
    image_rel, mask_rel = f"images/{split}/{name}.png", f"masks/{split}/{name}.png"
    Path(root, image_rel).write_bytes(_png_bytes(image))
    Path(root, mask_rel).write_bytes(_png_bytes(mask))
    return {
        "image": image_rel,
        "mask": mask_rel,
        "image_id": name,
        "split": split,
        "modality": spec.modality,
        "num_lesions": len(spec.lesions),
        "head": meta["head"],
        "lesions": meta["lesions"],
        "captions": captions,
    }


def _write_splits(root: Path, records: dict[str, list[dict]]) -> None:
    train = [
        {"image": r["image"], "caption": caption, "image_id": r["image_id"]}
        for r in records["train"]
        for caption in r["captions"]
    ]
    atomic_write_json(root / "pretrain.json", train)
    atomic_write_json(root / "retrieval_train.json", train)
    for split in ("val", "test"):
        entries = [{"image": r["image"], "caption": r["captions"]} for r in records[split]]
        atomic_write_json(root / f"retrieval_{split}.json", entries)


def _remove_stale_siblings(out: Path) -> None:
    """Delete temp/old folders that a killed earlier run of this generator left next to ``out``."""
    if not out.parent.is_dir():
        return
    for entry in out.parent.iterdir():
        match = _TMP_PATTERN.match(entry.name)
        if not match or match.group("name") != out.name or not entry.is_dir():
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and _process_alive(pid):
            continue  # another generator is writing it right now
        shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_replaceable(out: Path) -> None:
    """Refuse to delete a folder that holds anything this generator did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in _OWN_NAMES)
    if foreign:
        raise ValueError(
            f"out_dir {out} holds files that a phantom dataset does not ({', '.join(foreign[:5])}); "
            "refusing to replace it: choose an empty or new folder"
        )


def generate_phantom_dataset(
    out_dir: str | Path,
    *,
    num_train: int,
    num_val: int,
    num_test: int,
    image_size: int = 128,
    captions_per_image: int = 5,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Path]:
    """Generate the phantom dataset into ``out_dir`` (or do nothing if it is already complete); return its paths.

    Returned keys: root, pretrain, retrieval_train, retrieval_val,
    retrieval_test, metadata, tokenizer, manifest (see :func:`dataset_paths`).
    """
    params = PhantomParams(num_train, num_val, num_test, image_size, captions_per_image, seed)
    params.validate()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out_dir)
    if phantom_dataset_is_complete(out, params):
        log.info("phantom dataset in %s is complete with the same parameters; nothing to do", out)
        return dataset_paths(out)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(out)

    started = time.perf_counter()
    tmp = out.parent / f".{out.name}.phantom-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _write_dataset(tmp, params, workers, progress)
        _move_into_place(tmp, out, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote phantom dataset to %s in %.1f s", out, time.perf_counter() - started)
    return dataset_paths(out)


def _write_dataset(tmp: Path, params: PhantomParams, workers: int, progress: bool) -> None:
    jobs = []
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "masks" / split).mkdir(parents=True)
        digits = max(5, len(str(params.count(split) - 1)))
        for index, spec in enumerate(_split_specs(params, split)):
            jobs.append((str(tmp), split, index, f"{split}_{index:0{digits}d}", spec, params))

    results: list[dict[str, Any]]
    if workers == 1:
        results = [_render_job(job) for job in _progress(jobs, progress)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(_progress(pool.map(_render_job, jobs, chunksize=32), progress, total=len(jobs)))
    records = {split: [r for r in results if r["split"] == split] for split in SPLITS}

    _write_splits(tmp, records)
    atomic_write_json(
        tmp / "metadata.json",
        {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "params": params.to_json(),
            "num_unique_attribute_tuples": num_unique_specs(),
            "conventions": CONVENTIONS,
            "images": [r for split in SPLITS for r in records[split]],
        },
    )
    from models.tokenizer import train_wordpiece_tokenizer  # transformers import is slow; only needed here

    train_captions = [caption for r in records["train"] for caption in r["captions"]]
    train_wordpiece_tokenizer(train_captions, tmp / "tokenizer", vocab_size=TOKENIZER_VOCAB_SIZE, deterministic=True)

    files = {
        path.relative_to(tmp).as_posix(): path.stat().st_size
        for path in sorted(tmp.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "params": params.to_json(),
        "counts": {split: len(records[split]) for split in SPLITS},
        "files": files,
    }
    atomic_write_json(tmp / "manifest.json", manifest, indent=1)  # last: its presence means "complete"


def _progress(iterable, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="phantom", unit="img")


def _move_into_place(tmp: Path, out: Path, params: PhantomParams) -> None:
    """Swap the finished ``tmp`` folder in for ``out`` with renames (never a half-replaced dataset)."""
    if phantom_dataset_is_complete(out, params):
        return  # another process (e.g. a second rank) finished the same dataset meanwhile: keep theirs
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.phantom-old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        # Another process created ``out`` in between: keep theirs if it is what we were asked for.
        if phantom_dataset_is_complete(out, params):
            return
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
