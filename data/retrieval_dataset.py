"""Retrieval data as BLIP reads it: Karpathy-style train lists and val/test splits, or flat pairs.

* Train: ``[{"image", "caption", "image_id"}]`` (BLIP's ``coco_karpathy_train``):
  every caption is a pair; captions of the same ``image_id`` (or, without one, the
  same image path) share an image index, numbered in order of first appearance as
  BLIP's ``img_ids``. Bad images are replaced and counted as in pretraining.
* Val/test: ``[{"image", "caption": [...]}]`` (BLIP's ``coco_karpathy_retrieval_eval``):
  images in annotation order, texts flattened in order, each cleaned by
  ``pre_caption(max_words=30)``, ``img2txt``/``txt2img`` as BLIP builds them. A flat
  list of ``{"image", "caption": "..."}`` pairs works too: its captions are grouped by
  image path. An evaluation split must be complete to be comparable: a missing or
  unreadable image or an empty caption stops before evaluation starts, naming the record.
* ``ann_root`` + ``dataset: coco | flickr`` name BLIP's files
  (``coco_karpathy_{train,val,test}.json``, ``flickr30k_{train,val,test}.json``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.captions import pre_caption
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image, probe_image
from data.pretrain_dataset import PretrainCollator, PretrainDataset
from data.transforms import build_image_transform
from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = [
    "RetrievalEvalDataset",
    "RetrievalDataError",
    "RetrievalCollator",
    "BLIP_ANNOTATION_FILES",
    "retrieval_files",
    "build_retrieval_train_dataset",
]

# BLIP's annotation file names per `dataset:` (its data/__init__.py and *_dataset.py).
BLIP_ANNOTATION_FILES = {
    "coco": {split: f"coco_karpathy_{split}.json" for split in ("train", "val", "test")},
    "flickr": {split: f"flickr30k_{split}.json" for split in ("train", "val", "test")},
}


class RetrievalDataError(DatasetError):
    """A retrieval file that cannot be used; the message names the file and record."""


def retrieval_files(config: Mapping[str, Any]) -> dict[str, str | None]:
    """``{"train", "val", "test"}`` paths: ``train_file``/``val_file``/``test_file``, else BLIP's
    ``ann_root`` + ``dataset`` names. A missing file is an error that says where BLIP's copy lives."""
    files: dict[str, str | None] = {}
    for split in ("train", "val", "test"):
        explicit = config.get(f"{split}_file")
        if explicit:
            files[split] = str(explicit)
        elif config.get("ann_root") and config.get("dataset"):
            files[split] = os.path.join(config["ann_root"], BLIP_ANNOTATION_FILES[config["dataset"]][split])
        else:
            files[split] = None
    return files


class RetrievalEvalDataset(Dataset):
    """Images of a val/test split (``__getitem__`` -> (image tensor, image index)) plus all captions."""

    def __init__(
        self,
        ann_file: str | Path,
        transform: Callable[[Any], torch.Tensor],
        *,
        image_root: str | Path | None = None,
        max_words: int = 30,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        check_images: bool = True,
    ):
        path = Path(ann_file)
        self.path = path
        records = read_json_file(path, what="evaluation file", error=RetrievalDataError, missing=RetrievalDataError)
        if not isinstance(records, list) or not records:
            raise RetrievalDataError(f"{path}: expected a non-empty JSON list of {{image, caption: [...]}}")
        root = Path(image_root) if image_root is not None else path.parent
        self.transform = transform
        self.max_pixels = max_pixels
        self.images: list[Path] = []
        self.texts: list[str] = []
        self.img2txt: list[list[int]] = []
        self.txt2img: list[int] = []
        flat = all(isinstance(r, dict) and isinstance(r.get("caption"), str) for r in records)
        by_path: dict[Path, int] = {}
        for i, record in enumerate(records):
            where = f"{path}[{i}]"
            if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"]:
                raise RetrievalDataError(f"{where}: record needs an 'image' path")
            captions = record.get("caption")
            if isinstance(captions, str):
                captions = [captions]
            if not isinstance(captions, list) or not captions:
                raise RetrievalDataError(f"{where}: 'caption' must be a non-empty list of strings")
            image_path = Path(record["image"])
            image_path = image_path if image_path.is_absolute() else root / image_path
            if flat and image_path in by_path:  # flat pairs: another caption of a known image
                image = by_path[image_path]
            else:
                if check_images:
                    self._check_image(image_path, where)
                image = len(self.images)
                by_path[image_path] = image
                self.images.append(image_path)
                self.img2txt.append([])
            for caption in captions:
                text = pre_caption(caption if isinstance(caption, str) else "", max_words)
                if not text:
                    raise RetrievalDataError(f"{where}: empty caption {caption!r}")
                self.img2txt[image].append(len(self.texts))
                self.txt2img.append(image)
                self.texts.append(text)

    def _check_image(self, image_path: Path, where: str) -> None:
        try:
            probe_image(image_path, max_pixels=self.max_pixels)  # the header: cheap, catches most problems
        except ImageError as exc:
            hint = " (check image_root)" if exc.reason == "missing" else ""
            raise RetrievalDataError(f"{where}: {exc}{hint}") from None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = open_image(self.images[index], max_pixels=self.max_pixels)
        except ImageError as exc:
            raise RetrievalDataError(f"{self.path}: image {index} ({self.images[index]}): {exc}") from None
        return self.transform(image), index

    def text_batches(self, batch_size: int) -> Sequence[list[str]]:
        return [self.texts[i : i + batch_size] for i in range(0, len(self.texts), batch_size)]


class RetrievalCollator(PretrainCollator):
    """Pretraining's collate + tokenization, plus ``idx``: the image index of each pair (picklable)."""

    def __init__(self, tokenizer: Any, max_length: int, image_index: np.ndarray):
        super().__init__(tokenizer, max_length)
        self.image_index = image_index

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(samples)
        if "fatal" not in batch:
            batch["idx"] = torch.from_numpy(self.image_index[batch["index"].numpy()])
        return batch


def build_retrieval_train_dataset(config: Mapping[str, Any], train_file: str) -> PretrainDataset:
    """BLIP's retrieval training pairs, with image ids (``dataset.image_index``), and its transform."""
    transform = build_image_transform(
        "pretrain", config["image_size"], crop_scale=config.get("crop_scale"), hflip=0.0,
        randaugment=config.get("randaugment", True),
    )
    return PretrainDataset(
        train_file, transform, image_root=config.get("image_root"), max_words=config.get("max_words", 30),
        max_pixels=config.get("max_image_pixels", DEFAULT_MAX_PIXELS), seed=config.get("seed", 0),
        hflip=config.get("hflip", 0.0), image_ids=True,
    )
