"""BLIP's Karpathy-format retrieval evaluation split: ``[{"image": path, "caption": [text, ...]}]``.

Flattens captions into one text list and keeps both index maps BLIP's
evaluation uses: ``img2txt[i]`` (caption indices of image i) and ``txt2img[t]``.
Records are validated at load: a malformed file fails with its name and
position, a bad record (no image, no captions, empty captions after cleaning)
fails with its index -- an evaluation split must be complete to be comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from data.captions import pre_caption
from data.image_io import DEFAULT_MAX_PIXELS, open_image
from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = ["RetrievalEvalDataset", "RetrievalDataError"]


class RetrievalDataError(DatasetError):
    """A retrieval evaluation file that cannot be used."""


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
    ):
        path = Path(ann_file)
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
        for i, record in enumerate(records):
            where = f"{path}[{i}]"
            if not isinstance(record, dict) or not isinstance(record.get("image"), str):
                raise RetrievalDataError(f"{where}: record needs an 'image' path")
            captions = record.get("caption")
            if isinstance(captions, str):
                captions = [captions]
            if not isinstance(captions, list) or not captions:
                raise RetrievalDataError(f"{where}: 'caption' must be a non-empty list of strings")
            image_path = Path(record["image"])
            self.images.append(image_path if image_path.is_absolute() else root / image_path)
            self.img2txt.append([])
            for caption in captions:
                text = pre_caption(caption if isinstance(caption, str) else "", max_words)
                if not text:
                    raise RetrievalDataError(f"{where}: empty caption {caption!r}")
                self.img2txt[-1].append(len(self.texts))
                self.txt2img.append(i)
                self.texts.append(text)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_image(self.images[index], max_pixels=self.max_pixels)), index

    def text_batches(self, batch_size: int) -> Sequence[list[str]]:
        return [self.texts[i : i + batch_size] for i in range(0, len(self.texts), batch_size)]
