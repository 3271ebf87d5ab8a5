"""Training from shards: a dataset that reads samples by offset, the streaming order, the training-data object.

* :class:`ShardDataset` maps a global sample id to (shard, sample) and reads the image and caption
  bytes with ``os.pread`` at the offsets ``tar_index`` found; every DataLoader worker keeps the
  indexes of the shards it touched and a few open files. Samples are seeded, flipped and replaced
  exactly as :class:`data.pretrain_dataset.PretrainDataset` does (same :class:`SeededPairs` code).
* :class:`ShardSampler` is :class:`data.sampler.ResumableDistributedSampler` with the epoch order of
  :class:`data.shards.order.StreamOrder`: the resume state is the same global offset, so resuming
  mid-epoch is exact on any number of ranks and workers.
* :class:`ShardTrainingData` is what the training loop consumes (the ``TrainData`` contract of
  ``engine/task.py``): the JSON loader :class:`data.loader.ResumableLoader` with that sampler.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.captions import pre_caption
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from data.loader import ResumableLoader
from data.pretrain_dataset import PretrainCollator, SeededPairs, collate_pretrain, pretrain_transform, sample_settings
from data.sampler import ResumableDistributedSampler
from engine.skips import SkipCounter
from data.shards.manifest import Manifest, ShardInfo, usable_samples
from data.shards.order import SourceSpec, StreamOrder
from data.shards.tar_index import TarSample, read_caption, read_member, scan_tar

__all__ = ["ShardDataset", "ShardSampler", "ShardTrainingData", "build_shard_training_data", "load_manifests"]

_MAX_OPEN_FILES = 64
_MAX_INDEXES = 256


def load_manifests(paths: Sequence[str | os.PathLike]) -> list[Manifest]:
    if not paths:
        raise DatasetError("no shard manifest given")
    return [Manifest.load(p) for p in paths]


class ShardDataset(SeededPairs, Dataset):
    """All samples of one or more manifests (one source each), addressed by a global id.

    Ids run over the manifests in the given order, their shards in manifest order and each shard's
    usable samples in file order. Items: ``dataset[(id, epoch)]`` -> ``{"image", "caption", "index",
    "skipped"}`` as :class:`PretrainDataset`.
    """

    def __init__(
        self,
        manifests: Sequence[Manifest],
        transform: Any,
        *,
        max_words: int = 30,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        hflip: float = 0.0,
        max_attempts: int = 50,
    ):
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
        self.manifests = list(manifests)
        self.transform = transform
        self.max_words = int(max_words)
        self.max_pixels = int(max_pixels)
        self.seed, self.hflip, self.max_attempts, self.epoch = int(seed), float(hflip), int(max_attempts), 0
        self.shards: list[ShardInfo] = [s for m in self.manifests for s in m.shards]
        sizes = np.asarray([s.samples for s in self.shards], dtype=np.int64)
        self._shard_base = np.concatenate([[0], np.cumsum(sizes)])
        self._indexes: OrderedDict[int, list[TarSample]] = OrderedDict()
        self._files: OrderedDict[int, int] = OrderedDict()
        self.load_skips = SkipCounter(max_examples=20)  # what prepare/index dropped, by reason
        for manifest in self.manifests:
            for reason, count in manifest.counts.get("skipped", {}).items():
                self.load_skips.counts[reason] += int(count)
            for reason, where in manifest.counts.get("examples", [])[: 20 - len(self.load_skips.examples)]:
                self.load_skips.examples.append((reason, where))

    def __len__(self) -> int:
        return int(self._shard_base[-1])

    def __getstate__(self) -> dict[str, Any]:  # file descriptors do not travel to spawned workers
        state = dict(self.__dict__)
        state["_indexes"], state["_files"] = OrderedDict(), OrderedDict()
        return state

    def __del__(self) -> None:
        for fd in getattr(self, "_files", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def source_specs(self, weights: Sequence[float] | None = None) -> list[SourceSpec]:
        if weights is not None and len(weights) != len(self.manifests):
            raise ValueError(f"{len(weights)} weights for {len(self.manifests)} shard sources")
        return [
            SourceSpec(
                name=m.source, shard_sizes=tuple(s.samples for s in m.shards),
                weight=None if weights is None else float(weights[i]), fingerprint=m.fingerprint,
            )
            for i, m in enumerate(self.manifests)
        ]

    # -- locating and reading ---------------------------------------------------
    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        shard = int(np.searchsorted(self._shard_base, index, side="right")) - 1
        return shard, index - int(self._shard_base[shard])

    def _fd(self, shard: int) -> int:
        fd = self._files.get(shard)
        if fd is None:
            fd = os.open(self.shards[shard].path, os.O_RDONLY)
            self._files[shard] = fd
            if len(self._files) > _MAX_OPEN_FILES:
                os.close(self._files.popitem(last=False)[1])
        else:
            self._files.move_to_end(shard)
        return fd

    def _index(self, shard: int) -> list[TarSample]:
        samples = self._indexes.get(shard)
        if samples is None:
            info = self.shards[shard]
            samples = usable_samples(scan_tar(info.path), info.excluded)
            if len(samples) != info.samples:
                raise DatasetError(
                    f"{info.path}: {len(samples)} usable samples, the manifest says {info.samples} "
                    "(shard changed since it was indexed)"
                )
            self._indexes[shard] = samples
            if len(self._indexes) > _MAX_INDEXES:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(shard)
        return samples

    def _sample(self, index: int) -> tuple[int, TarSample]:
        shard, local = self.locate(index)
        return shard, self._index(shard)[local]

    def image_path(self, index: int) -> str:
        shard, local = self.locate(index)
        try:
            return f"{self.shards[shard].path}:{self._index(shard)[local].key}"
        except (OSError, ValueError):
            return f"{self.shards[shard].path}[{local}]"

    def describe_data(self) -> str:
        return ", ".join(str(m.path) for m in self.manifests)

    def load_pair(self, index: int) -> tuple[Image.Image, str]:
        shard, sample = self._sample(index)
        fd = self._fd(shard)
        caption = pre_caption(read_caption(fd, sample) or "", self.max_words)
        if not caption:
            raise ImageError("empty_caption", f"{self.image_path(index)}: empty caption")
        data = read_member(fd, sample.fields[sample.image_field])
        return open_image(data, max_pixels=self.max_pixels), caption

    def raw_caption(self, index: int) -> str | None:
        shard, sample = self._sample(index)
        return read_caption(self._fd(shard), sample)

    def image_bytes(self, index: int) -> bytes:
        shard, sample = self._sample(index)
        return read_member(self._fd(shard), sample.fields[sample.image_field])

    def metadata(self, index: int) -> dict[str, Any]:
        """The sample's ``json`` field (empty if none) with the shard's source and licence filled in."""
        import json

        shard, sample = self._sample(index)
        meta: dict[str, Any] = {}
        if "json" in sample.fields:
            try:
                loaded = json.loads(read_member(self._fd(shard), sample.fields["json"]))
                meta = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                meta = {}
        manifest = next(m for m in self.manifests if self.shards[shard] in m.shards)
        meta.setdefault("source", self.shards[shard].source or manifest.source)
        meta.setdefault("license", self.shards[shard].license or manifest.license)
        meta.setdefault("source_id", meta.get("key") or meta.get("image") or sample.key)
        return meta


class ShardSampler(ResumableDistributedSampler):
    """The resumable sampler over :class:`StreamOrder`'s epoch order; its state carries the order's fingerprint."""

    def __init__(self, order: StreamOrder, **kwargs: Any):
        self.order = order
        super().__init__(order.epoch_samples, shuffle=order.shuffle, seed=order.seed, **kwargs)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return torch.from_numpy(self.order.order(epoch))

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return {**super().state_dict(consumed), "order": self.order.fingerprint}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        if state.get("order") != self.order.fingerprint:
            if strict:
                raise ValueError(
                    "cannot resume the shard stream mid-epoch: the shards, weights, seed, lanes or "
                    "shuffle_buffer differ from the checkpoint's (the saved offset would point at other samples)"
                )
            state = {**state, "offset": 0}
        super().load_state_dict(state, strict=strict)


class ShardTrainingData(ResumableLoader):
    """Training batches from shards: :class:`data.loader.ResumableLoader` (the engine's ``TrainData``)
    over :class:`ShardSampler`.

    Everything the loop relies on comes from the JSON loader unchanged: full batches, the global
    position, workers that ignore the group's SIGTERM. ``load_skips`` holds what prepare/index
    dropped, by reason (from the manifests).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        order: StreamOrder,
        *,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        tokenizer: Any = None,
        max_length: int = 30,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        sampler = ShardSampler(order, num_replicas=num_replicas, rank=rank, drop_last=True, with_epoch=True)
        super().__init__(
            dataset, batch_size=batch_size, num_workers=num_workers, seed=order.seed, pin_memory=pin_memory,
            collate_fn=collate_pretrain if tokenizer is None else PretrainCollator(tokenizer, max_length),
            sampler=sampler,
        )


def build_shard_training_data(
    config: Mapping[str, Any], *, tokenizer: Any = None, pin_memory: bool = False,
    num_replicas: int | None = None, rank: int | None = None,
) -> ShardTrainingData:
    """From the pretrain config: ``train_shards`` (manifests), ``shard_weights``, ``shard_lanes``,
    ``shuffle_buffer``, ``epoch_samples`` and the image/caption keys JSON lists use too."""
    dataset = ShardDataset(load_manifests([Path(p) for p in config["train_shards"]]), pretrain_transform(config),
                           **sample_settings(config))
    order = StreamOrder(
        dataset.source_specs(config.get("shard_weights")), seed=config.get("seed", 0),
        lanes=config.get("shard_lanes", 64), shuffle_buffer=config.get("shuffle_buffer", 10_000),
        epoch_samples=config.get("epoch_samples"),
    )
    return ShardTrainingData(
        dataset, order, batch_size=config["batch_size"], num_workers=config.get("num_workers", 0),
        pin_memory=pin_memory, tokenizer=tokenizer, max_length=config.get("max_length", 30),
        num_replicas=num_replicas, rank=rank,
    )
