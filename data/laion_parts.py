"""BLIP's ``laion_path``: a folder of JSON list parts, one part per epoch next to all of ``train_file``.

BLIP (``data/pretrain_dataset.py``, ``reload_laion``) reads ``glob(laion_path/*.json)`` and trains
epoch ``e`` on every ``train_file`` list plus part ``e mod n``. The same here, with one deliberate
difference: the parts are sorted by name (``glob`` order is the file system's, so BLIP's own order
is not reproducible across machines). An empty ``laion_path`` (BLIP's default ``''``) means no parts.

:class:`LaionPartsData` is the training-data object for it: the epoch's data set (and so
``samples_per_epoch``) changes with the part, and a mid-epoch resume position is exact because the
epoch's file list -- hence its length and order -- is a pure function of the epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from data.pretrain_dataset import DatasetError, PretrainDataset, SkipCounter, build_pretrain_loader

__all__ = ["laion_part_files", "epoch_files", "LaionPartsData"]


def laion_part_files(laion_path: str | os.PathLike | None) -> list[Path]:
    """The sorted ``*.json`` parts of ``laion_path``; [] when it is empty or None."""
    if not laion_path:
        return []
    folder = Path(laion_path)
    if not folder.is_dir():
        raise DatasetError(f"laion_path {folder}: not a folder (BLIP's laion_path is a folder of JSON list parts)")
    parts = sorted(folder.glob("*.json"))
    if not parts:
        raise DatasetError(f"laion_path {folder}: no *.json parts in it")
    return parts


def epoch_files(train_files: Sequence[str | os.PathLike], parts: Sequence[Path], epoch: int) -> list[Path]:
    """All ``train_file`` lists plus part ``epoch mod len(parts)`` (BLIP's ``reload_laion``)."""
    files = [Path(f) for f in train_files]
    return files + [parts[epoch % len(parts)]] if parts else files


class LaionPartsData:
    """Training data for ``train_file`` + ``laion_path``, with the training loop's data interface.

    ``make_dataset(files)`` builds the epoch's :class:`PretrainDataset` (transform, image_root, ...
    from the config); loader settings as :func:`build_pretrain_loader`.
    """

    def __init__(
        self,
        train_files: Sequence[str | os.PathLike],
        laion_path: str | os.PathLike | None,
        make_dataset: Callable[[list[Path]], PretrainDataset],
        *,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Any = None,
        max_length: int = 30,
    ):
        self.train_files = list(train_files)
        self.parts = laion_part_files(laion_path)
        self.make_dataset = make_dataset
        self.loader_args = dict(batch_size=batch_size, num_workers=num_workers, seed=seed, tokenizer=tokenizer,
                                max_length=max_length)
        self._files: list[Path] | None = None
        self._pending: dict[str, Any] | None = None
        self.load_skips = SkipCounter(max_examples=20)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        files = epoch_files(self.train_files, self.parts, epoch)
        if files != self._files:  # another part: a new data set, loader and sampler (BLIP reloads too)
            self.dataset = self.make_dataset(files)
            self.loader, self.sampler = build_pretrain_loader(self.dataset, **self.loader_args)
            self._files = files
            self.load_skips = self.dataset.load_skips
        if self._pending is not None:
            self.sampler.load_state_dict(self._pending)
            self._pending = None
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    @property
    def samples_per_epoch(self) -> int:
        return len(self.dataset)

    @property
    def epoch_part(self) -> Path | None:
        return self._files[-1] if self.parts and self._files else None

    def __len__(self) -> int:
        return len(self.sampler) // self.loader.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return {"kind": "json", **self.sampler.state_dict(consumed),
                "laion_part": str(self.epoch_part) if self.epoch_part else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Armed until ``set_epoch(state['epoch'])`` has built that epoch's data set."""
        self._pending = {k: v for k, v in state.items() if k not in ("kind", "laion_part")}
