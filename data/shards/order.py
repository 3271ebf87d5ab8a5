"""Each epoch's global sample order over shards: streaming-friendly, several sources, no world size in it.

The order is a pure function of (sources, seed, epoch, lanes, shuffle_buffer), computed with numpy
in a second or two for 15M samples. The rank and worker split and the resume offset are the
existing sampler's arithmetic (``data.sampler``): rank ``r`` of ``W`` takes every ``W``-th sample of
this order from the global resume offset on, so a job resumes exactly on any number of ranks
and workers.

1. **Sources and weights.** Source ``s`` (one manifest) is an endless stream of passes; each pass
   visits its shards in a fresh random order (seed, source, pass) and each shard front to back.
   An epoch takes the next ``n_s`` samples of every source, ``n_s`` proportional to its weight
   (largest remainder, summing to ``epoch_samples``). Without weights ``n_s`` is the source's size,
   so every sample is read exactly once per epoch. The sources' samples are then spread evenly
   through the epoch (the ``k``-th of ``n_s`` sits at ``(k + 0.5) / n_s``).
2. **Lanes.** That stream is cut into ``lanes`` contiguous parts, each covering a few neighbouring
   shards; the final order takes one sample of each lane in turn. A global batch therefore holds
   samples from ``lanes`` different places of the data, while the whole job reads from about
   ``lanes x (shuffle_buffer / shard size + 1)`` shards at any time. With ``lanes`` divisible by the
   world size, rank ``r`` reads only lanes ``r, r + W, ...``: a fixed ``1/W`` of the shards in use.
3. **Shuffle buffer.** Inside each lane, samples are shuffled within consecutive windows of
   ``shuffle_buffer`` samples (a block shuffle: the memory/locality bound of a shuffle buffer, but
   computable for any position without replaying the stream, which is what makes resume exact).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

__all__ = ["SourceSpec", "StreamOrder"]


@dataclass(frozen=True)
class SourceSpec:
    """One source: its name, the usable sample count of each shard, its mixing weight (None: natural)."""

    name: str
    shard_sizes: tuple[int, ...]
    weight: float | None = None
    fingerprint: str = ""

    @property
    def size(self) -> int:
        return int(sum(self.shard_sizes))


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    raw = np.asarray(weights, dtype=np.float64) / float(sum(weights)) * total
    counts = np.floor(raw).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return [int(c) for c in counts]


class StreamOrder:
    """Global sample ids (sources concatenated, shards in manifest order) of each epoch."""

    def __init__(
        self,
        sources: list[SourceSpec],
        *,
        seed: int = 0,
        lanes: int = 64,
        shuffle_buffer: int = 10_000,
        epoch_samples: int | None = None,
        shuffle: bool = True,
    ):
        if not sources:
            raise ValueError("no shard sources given")
        for spec in sources:
            if spec.size < 1:
                raise ValueError(f"source {spec.name!r} has no samples")
            if spec.weight is not None and spec.weight <= 0:
                raise ValueError(f"source {spec.name!r}: weight must be > 0, got {spec.weight}")
        if lanes < 1 or shuffle_buffer < 1:
            raise ValueError("lanes and shuffle_buffer must be >= 1")
        weighted = [s.weight is not None for s in sources]
        if any(weighted) and not all(weighted):
            raise ValueError("give a weight to every source or to none")
        self.sources = list(sources)
        self.seed, self.lanes, self.shuffle_buffer, self.shuffle = int(seed), int(lanes), int(shuffle_buffer), shuffle
        natural = sum(s.size for s in sources)
        self.epoch_samples = int(epoch_samples) if epoch_samples is not None else natural
        if self.epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {epoch_samples}")
        if all(weighted):
            self.quotas = _largest_remainder(self.epoch_samples, [float(s.weight) for s in sources])
        elif epoch_samples is None:
            self.quotas = [s.size for s in sources]
        else:
            self.quotas = _largest_remainder(self.epoch_samples, [float(s.size) for s in sources])
        self._source_base = np.cumsum([0] + [s.size for s in sources])[:-1]

    @property
    def total_samples(self) -> int:
        """Size of the id space (all samples of all sources)."""
        return int(sum(s.size for s in self.sources))

    @property
    def fingerprint(self) -> str:
        """Changes with anything that changes the order; a saved position is only valid under the same one."""
        blob = json.dumps({
            "sources": [[s.name, list(s.shard_sizes), s.weight, s.fingerprint] for s in self.sources],
            "seed": self.seed, "lanes": self.lanes, "buffer": self.shuffle_buffer,
            "epoch_samples": self.epoch_samples, "shuffle": self.shuffle,
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _pass(self, index: int, number: int) -> np.ndarray:
        """Global ids of one pass over source ``index``: shards in a seeded order, each front to back."""
        sizes = np.asarray(self.sources[index].shard_sizes, dtype=np.int64)
        starts = np.cumsum(np.concatenate([[0], sizes[:-1]])) + self._source_base[index]
        shard_order = (
            np.random.default_rng([self.seed, index, number, 1]).permutation(len(sizes))
            if self.shuffle else np.arange(len(sizes))
        )
        lengths = sizes[shard_order]
        # ids = start of each shard repeated, plus the position inside the shard
        offsets = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(starts[shard_order], lengths) + offsets

    def _source_epoch(self, index: int, epoch: int) -> np.ndarray:
        quota, size = self.quotas[index], self.sources[index].size
        if quota == 0:
            return np.zeros(0, dtype=np.int64)
        begin, end = epoch * quota, (epoch + 1) * quota
        first, last = begin // size, (end - 1) // size
        stream = np.concatenate([self._pass(index, p) for p in range(first, last + 1)])
        return stream[begin - first * size : end - first * size]

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's ``epoch_samples`` global ids, in the order all ranks together consume them."""
        parts = [self._source_epoch(i, epoch) for i in range(len(self.sources))]
        ids = np.concatenate(parts)
        if len(parts) > 1:  # spread every source evenly over the epoch
            keys = np.concatenate([(np.arange(len(p)) + 0.5) / len(p) for p in parts if len(p)])
            ids = ids[np.argsort(keys, kind="stable")]
        total = len(ids)
        lanes = min(self.lanes, total)
        base, extra = divmod(total, lanes)
        lane_sizes = np.full(lanes, base, dtype=np.int64)
        lane_sizes[:extra] += 1
        lane_starts = np.cumsum(lane_sizes) - lane_sizes
        if self.shuffle:
            # block shuffle: one argsort on (window number + uniform noise); windows never straddle lanes
            windows_per_lane = -(-int(lane_sizes.max()) // self.shuffle_buffer)
            lane = np.repeat(np.arange(lanes, dtype=np.int64), lane_sizes)
            position = np.arange(total, dtype=np.int64) - lane_starts[lane]
            key = (lane * windows_per_lane + position // self.shuffle_buffer).astype(np.float64)
            key += np.random.default_rng([self.seed, epoch, 2]).random(total)
            ids = ids[np.argsort(key, kind="stable")]
        # one sample of each lane in turn: row k of (base x lanes) holds the k-th sample of every lane,
        # then the first `extra` lanes' last samples
        gather = (lane_starts[None, :] + np.arange(base, dtype=np.int64)[:, None]).reshape(-1)
        gather = np.concatenate([gather, lane_starts[:extra] + base])
        return ids[gather]
