"""BLIP's ``laion_path``: a folder of JSON list parts, one part per epoch next to all of ``train_file``.

BLIP (``data/pretrain_dataset.py``, ``reload_laion``) reads ``glob(laion_path/*.json)`` and trains
epoch ``e`` on every ``train_file`` list plus part ``e mod n``. The same here, with one deliberate
difference: the parts are sorted by name (``glob`` order is the file system's, so BLIP's own order
is not reproducible across machines). An empty ``laion_path`` (BLIP's default ``''``) means no parts.

:class:`LaionPartsData` is the engine's ``TrainData`` for it: the epoch's data set (and so
``samples_per_epoch``) changes with the part, and a mid-epoch resume position is exact because the
epoch's file list -- hence its length and order -- is a pure function of the epoch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from data.loader import ResumableLoader
from data.pretrain_dataset import PretrainDataset, build_pretrain_loader
from engine.skips import SkipCounter
from utils.errors import DatasetError

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
    """Training data for ``train_file`` + ``laion_path``: the engine's ``TrainData`` (``engine/task.py``).

    ``make_dataset(files)`` builds the epoch's :class:`PretrainDataset` (transform, image_root, ...
    from the config); ``loader_args`` go to :func:`build_pretrain_loader`. Each epoch whose file
    list differs from the previous one gets a new data set and loader, as BLIP reloads its part.
    """

    def __init__(
        self,
        train_files: Sequence[str | os.PathLike],
        laion_path: str | os.PathLike | None,
        make_dataset: Callable[[list[Path]], PretrainDataset],
        **loader_args: Any,
    ):
        self.train_files = list(train_files)
        self.parts = laion_part_files(laion_path)
        self.make_dataset = make_dataset
        self.loader_args = loader_args
        self._files: list[Path] | None = None
        self.loader: ResumableLoader
        self.set_epoch(0)

    def _use(self, epoch: int) -> None:
        files = epoch_files(self.train_files, self.parts, epoch)
        if files != self._files:  # another part: a new data set and loader
            if self._files is not None:
                self.loader.close()  # the previous part's workers
            self.dataset = self.make_dataset(files)
            self.loader = build_pretrain_loader(self.dataset, **self.loader_args)
            self._files = files

    def set_epoch(self, epoch: int) -> None:
        self._use(epoch)
        self.loader.set_epoch(epoch)

    @property
    def load_skips(self) -> SkipCounter:
        return self.loader.load_skips

    @property
    def samples_per_epoch(self) -> int:
        return self.loader.samples_per_epoch

    @property
    def start_sample(self) -> int:
        return self.loader.start_sample

    @property
    def epoch_part(self) -> Path | None:
        """The part of the current epoch (None without laion_path)."""
        return self._files[-1] if self.parts and self._files else None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def close(self) -> None:
        self.loader.close()

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return {**self.loader.state_dict(consumed), "laion_part": str(self.epoch_part) if self.epoch_part else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Build the saved epoch's data set now and arm the position on it (a ValueError if it changed)."""
        epoch = int(state["epoch"])
        self._use(epoch)
        saved_part = Path(state["laion_part"]).name if state.get("laion_part") else None
        if saved_part != (self.epoch_part.name if self.epoch_part else None):
            raise ValueError(f"epoch {epoch} trained on laion part {saved_part}, now it would be "
                             f"{self.epoch_part} (the parts in laion_path changed)")
        self.loader.load_state_dict({k: v for k, v in state.items() if k != "laion_part"})
