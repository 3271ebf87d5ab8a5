"""BLIP pretraining data: JSON lists of ``{"image", "caption"}`` -> (image tensor, caption) batches.

Built to survive multi-day runs on scraped data:

* A malformed JSON file fails at start, naming the file, line and column.
* Bad records (not an object, no "image"/"caption", caption empty after
  cleaning) are skipped at load and counted with file and index
  (:attr:`PretrainDataset.load_skips`).
* A bad image found at run time (missing, truncated, undecodable, not an image,
  too large) is counted with its reason and path and *replaced* by another
  sample, so every batch keeps its full size: under DDP all ranks must run the
  same number of same-shaped steps, or the ITC/ITM ``all_gather`` deadlocks.
  The skip records travel inside the batch (``batch["skipped"]``) because
  DataLoader workers are separate processes; the training loop feeds them to a
  :class:`SkipCounter` and reduces it over ranks at epoch end.
* The augmentation of sample ``i`` in epoch ``e`` depends only on
  ``(seed, e, i)``: torch/random/numpy are seeded per sample (and restored
  afterwards), so a resumed run sees identical augmentations whatever the
  number of workers.

Records are held in flat numpy byte buffers, not Python lists of strings, so
forked DataLoader workers do not copy the annotation list page by page
(Python's reference counting writes to every object it touches).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from data.captions import pre_caption
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from data.loader import ResumableLoader
from data.sampler import ResumableDistributedSampler
from data.transforms import build_image_transform
from engine.skips import SkipCounter
from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = [
    "DatasetError",
    "record_problem",
    "SkipCounter",
    "PretrainDataset",
    "collate_pretrain",
    "PretrainCollator",
    "sample_seed",
    "swap_laterality",
    "pretrain_transform",
    "sample_settings",
    "build_pretrain_dataset",
    "build_pretrain_loader",
]


# -- compact record storage -----------------------------------------------------


class _StringTable:
    """Many strings in one uint8 buffer + offsets: fork-friendly (no per-string refcounts)."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._buffer[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8")


def _read_json_list(path: Path) -> list:
    """The parsed top-level list, or a DatasetError naming the file (and line/column)."""
    data = read_json_file(path, what="annotation file", error=DatasetError, missing=DatasetError)
    if not isinstance(data, list):
        raise DatasetError(
            f"{path}: expected a JSON list of {{\"image\", \"caption\"}} records, got a {type(data).__name__}"
        )
    return data


def record_problem(record: Any, caption: str | None) -> str | None:
    """Why a JSON record cannot be trained on (``caption`` is the cleaned caption), else None."""
    if not isinstance(record, dict):
        return "not_an_object"
    if "image" not in record:
        return "missing_image_field"
    if not isinstance(record["image"], str) or not record["image"].strip():
        return "bad_image_field"
    if "caption" not in record:
        return "missing_caption_field"
    if not isinstance(record["caption"], str):
        return "caption_not_text"
    if not caption:
        return "empty_caption"
    return None


# -- laterality-aware flip ------------------------------------------------------

_LATERALITY = re.compile(r"\b(left|right)(?=(?:wards?|most)?\b)", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left"}


def swap_laterality(text: str) -> str:
    """Swap "left" <-> "right" (also in leftward(s)/leftmost, "left-sided"), keeping case.

    Limits, why the flip is off by default: the verb "left" ("left untreated")
    and "right" meaning "correct" are swapped too, abbreviations ("lt", "rt",
    "L", "R") are not, and letters drawn inside the image come out mirrored.
    """

    def repl(match: re.Match[str]) -> str:
        word = match.group(1)
        swapped = _SWAP[word.lower()]
        if word.isupper():
            return swapped.upper()
        if word[0].isupper():
            return swapped.capitalize()
        return swapped

    return _LATERALITY.sub(repl, text)


# -- per-sample seeding ---------------------------------------------------------


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index), well mixed (numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextlib.contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, ``random`` and ``numpy`` for one sample, then restore them.

    Restoring matters with ``num_workers=0``: the dataset then runs in the training process
    and must not reset the RNG that dropout and ITM negative sampling draw from. Only the CPU
    generator is touched (``torch.manual_seed`` would also reseed CUDA).
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


# -- the dataset ----------------------------------------------------------------


class SeededPairs:
    """Item logic shared by every pretraining dataset (JSON lists, shards): seeded augmentation,
    caption-aware flip, replacement of unreadable samples.

    Subclasses provide ``__len__``, ``load_pair(index) -> (PIL image, caption)`` raising
    :class:`ImageError` (its ``reason`` is the skip counter key), ``image_path(index)`` (where the
    sample is, for messages), ``describe_data()`` and the attributes ``transform``, ``seed``,
    ``hflip``, ``max_attempts`` and ``epoch``.
    """

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        skipped: list[tuple[str, str]] = []
        with _seeded_rng(sample_seed(self.seed, epoch, index)):
            candidate = index
            for attempt in range(self.max_attempts):
                try:
                    img, caption = self.load_pair(candidate)
                except ImageError as err:
                    if attempt == 0:
                        skipped.append((err.reason, self.image_path(candidate)))
                    # Replacement drawn from the sample's own RNG: deterministic, and uniform, so
                    # a block of missing files does not over-weight the record after it.
                    candidate = int(torch.randint(len(self), ()))
                    continue
                if self.hflip and float(torch.rand(())) < self.hflip:
                    img = ImageOps.mirror(img)
                    caption = swap_laterality(caption)
                return {"image": self.transform(img), "caption": caption, "index": candidate, "skipped": skipped}
        # Not raised: inside a DataLoader worker an exception reaches the training process as a
        # re-raised copy with the worker's traceback in its text. The marker travels in the batch
        # and the training loop stops every rank with this message (see engine.loop).
        return {"fatal": (
            f"{self.max_attempts} images in a row could not be loaded (first: {self.image_path(index)}, "
            f"{skipped[0][0]}); check image_root and the data ({self.describe_data()})"
        ), "skipped": skipped}


class PretrainDataset(SeededPairs, Dataset):
    """Image-caption pairs from one or more BLIP pretrain JSON lists.

    Args:
        ann_files: JSON list file(s) of ``{"image": path, "caption": text, ...}``; extra fields are
            ignored. A relative ``image`` resolves against ``image_root`` when given, else against
            the folder of its JSON file.
        transform: PIL image -> tensor (see :func:`data.transforms.build_image_transform`).
        max_words: caption word limit for :func:`data.captions.pre_caption`.
        max_pixels: images with more pixels are skipped as ``too_large`` (decompression bombs).
        seed: with the epoch and index, fixes each sample's augmentation.
        hflip: probability of a horizontal flip that also swaps left/right in the caption
            (:func:`swap_laterality`); 0 disables it.
        max_attempts: replacement draws before giving up; that many unreadable images in a row
            means the data is broken (e.g. a wrong image_root), which should stop the run.
        image_ids: also number the images (:attr:`image_index`): by the record's ``image_id`` when
            it has one, else by its image path (retrieval fine-tuning's positives).

    Items: ``dataset[i]`` or ``dataset[(i, epoch)]`` (what ``ResumableDistributedSampler(...,
    with_epoch=True)`` yields) -> ``{"image", "caption", "index", "skipped"}``, where ``index`` is
    the record actually used and ``skipped`` lists ``(reason, path)`` of the image that was
    replaced (empty normally). A replaced image is counted only when its own index is drawn, so
    each bad record drawn in an epoch is counted exactly once across all ranks. When
    ``max_attempts`` images in a row fail, the item is ``{"fatal": message, "skipped"}`` instead.
    """

    def __init__(
        self,
        ann_files: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Any,
        *,
        image_root: str | os.PathLike | None = None,
        max_words: int = 30,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        hflip: float = 0.0,
        max_attempts: int = 50,
        image_ids: bool = False,
    ):
        files = [ann_files] if isinstance(ann_files, (str, os.PathLike)) else list(ann_files)
        if not files:
            raise DatasetError("no annotation file given (train_file is empty)")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.transform = transform
        self.max_pixels = int(max_pixels)
        self.seed = int(seed)
        self.hflip = float(hflip)
        self.max_attempts = int(max_attempts)
        self.epoch = 0
        self.ann_files = [Path(f) for f in files]
        self.load_skips = SkipCounter(max_examples=20)

        roots: list[str] = []
        root_ids: list[int] = []
        images: list[str] = []
        captions: list[str] = []
        groups: dict[Any, int] = {}
        image_index: list[int] = []
        self.records_per_file: dict[str, int] = {}
        for path in self.ann_files:
            data = _read_json_list(path)
            root = str(Path(image_root) if image_root is not None else path.parent)
            roots.append(root)
            kept = 0
            for index, record in enumerate(data):
                raw = record.get("caption") if isinstance(record, dict) else None
                caption = pre_caption(raw, max_words) if isinstance(raw, str) else None
                problem = record_problem(record, caption)
                if problem:
                    self.load_skips.add(problem, f"{path}[{index}]")
                    continue
                root_ids.append(len(roots) - 1)
                images.append(record["image"])
                captions.append(caption)
                if image_ids:  # BLIP's img_ids: consecutive, in order of first appearance
                    key = record.get("image_id", os.path.join(root, record["image"]))
                    image_index.append(groups.setdefault(key if isinstance(key, (int, str)) else str(key),
                                                         len(groups)))
                kept += 1
            self.records_per_file[str(path)] = kept
        if not images:
            raise DatasetError(
                f"no usable records in {', '.join(map(str, self.ann_files))} ({self.load_skips.summary('records')})"
            )
        self._roots = roots
        self._root_ids = np.asarray(root_ids, dtype=np.int32)
        self._images = _StringTable(images)
        self._captions = _StringTable(captions)
        # image_ids=True: each record's image id (records of the same image share it; retrieval's idx)
        self.image_index = np.asarray(image_index, dtype=np.int64) if image_ids else None
        # index -> reason, per worker process; only saves re-opening files known to be bad
        self._known_bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._captions)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (pairs from the sampler carry their own)."""
        self.epoch = int(epoch)

    def image_path(self, index: int) -> str:
        return os.path.join(self._roots[self._root_ids[index]], self._images[index])

    def caption(self, index: int) -> str:
        return self._captions[index]

    def _load(self, index: int) -> Image.Image:
        if index in self._known_bad:
            raise ImageError(self._known_bad[index], f"{self.image_path(index)}: failed before")
        try:
            return open_image(self.image_path(index), max_pixels=self.max_pixels)
        except ImageError as err:
            self._known_bad[index] = err.reason
            raise

    def load_pair(self, index: int) -> tuple[Image.Image, str]:
        return self._load(index), self.caption(index)

    def describe_data(self) -> str:
        return ", ".join(map(str, self.ann_files))


def collate_pretrain(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack images; keep captions as a list; gather every sample's skip records into one list.

    A sample whose replacement chain ran out (``"fatal"``) turns the batch into ``{"fatal", "skipped"}``.
    """
    fatal = next((s["fatal"] for s in samples if "fatal" in s), None)
    if fatal is not None:
        return {"fatal": fatal, "skipped": [tuple(rec) for s in samples for rec in s["skipped"]]}
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "skipped": [tuple(rec) for s in samples for rec in s["skipped"]],
    }


# -- builders from the pretrain config --------------------------------------------


def pretrain_transform(config: Mapping[str, Any]) -> Any:
    """The training image transform of the pretrain config (JSON lists and shards alike).

    The flip goes to the dataset (caption-aware), never to the image transform.
    """
    return build_image_transform(
        "pretrain",
        config["image_size"],
        crop_scale=config.get("crop_scale"),
        hflip=0.0,
        randaugment=config.get("randaugment", True),
    )


def sample_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The per-sample settings every pretraining dataset takes from the config (captions, images, seed, flip)."""
    return {
        "max_words": config.get("max_words", 30),
        "max_pixels": config.get("max_image_pixels", DEFAULT_MAX_PIXELS),
        "seed": config.get("seed", 0),
        "hflip": config.get("hflip", 0.0),
    }


def build_pretrain_dataset(
    config: Mapping[str, Any], files: Sequence[str | os.PathLike] | None = None
) -> PretrainDataset:
    """The training dataset as the pretrain config describes it (keys of ``engine.config``'s schema).

    ``files``: other JSON lists than ``train_file`` (an epoch's lists with ``laion_path``).
    """
    return PretrainDataset(
        config["train_file"] if files is None else list(files),
        pretrain_transform(config),
        image_root=config.get("image_root"),
        **sample_settings(config),
    )


class PretrainCollator:
    """``collate_pretrain`` plus tokenization, so captions become ids in the loader workers.

    Adds ``text_ids``/``text_atts`` (padded to the longest caption, cut at
    ``max_length`` tokens); picklable for worker processes.
    """

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = collate_pretrain(samples)
        if "fatal" in batch:
            return batch
        text = self.tokenizer(
            batch["caption"], padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch["text_ids"], batch["text_atts"] = text.input_ids, text.attention_mask
        return batch


def build_pretrain_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    tokenizer: Any = None,
    max_length: int = 30,
    sampler: ResumableDistributedSampler | None = None,
) -> ResumableLoader:
    """Training loader: resumable sharded sampler (drop_last), full batches only, skip records kept.

    Call ``loader.set_epoch(epoch)`` before iterating each epoch (and ``loader.load_state_dict``
    before the first one when resuming). With a ``tokenizer``, batches also carry
    ``text_ids``/``text_atts`` (:class:`PretrainCollator`). ``sampler``: another order (e.g. the
    shard streaming order of :mod:`data.shards.dataset`); it must yield ``(index, epoch)`` pairs.
    """
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        pin_memory=pin_memory,
        collate_fn=collate_pretrain if tokenizer is None else PretrainCollator(tokenizer, max_length),
        sampler=sampler,
    )
