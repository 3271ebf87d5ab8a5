"""A distributed sampler that can stop and resume mid-epoch at the exact sample.

Why not torch's ``DistributedSampler``: it shuffles per (seed, epoch) and
shards, but every epoch starts at sample 0, so a run resumed from a mid-epoch
checkpoint would either repeat the epoch's first part or skip the rest.
Why not torchdata's ``StatefulDataLoader``: an extra dependency whose state is
taken from the loader (tied to its worker count) and which fast-forwards
through the sampler; the offset here is plain arithmetic, survives a change of
``num_workers``, and is a few plain ints in the checkpoint.

Order: the epoch's permutation is ``torch.randperm(N)`` from a generator seeded
with ``seed + epoch`` (the same as ``DistributedSampler``, so at offset 0 the
two give identical shards). Rank ``r`` of ``W`` takes every ``W``-th index of
the permutation from the resume offset on. With ``drop_last`` (training) the
tail is cut so every rank gets the same count and all ranks stay in lockstep;
without it the list is padded by wrapping around, as ``DistributedSampler``.

The state is the *global* offset (samples consumed by all ranks together), so
a job may resume on a different number of ranks: it continues at the same
point of the same permutation (the batches' composition then differs).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sized

import torch
from torch.utils.data import Sampler

from engine.distributed import get_rank, get_world_size

__all__ = ["ResumableDistributedSampler"]


class ResumableDistributedSampler(Sampler):
    """Deterministic per-epoch shuffle, sharded over ranks, resumable at a sample offset.

    Args:
        data: the dataset (anything with ``len``) or its length.
        num_replicas, rank: default to ``engine.distributed`` (1 and 0 without a process group).
        shuffle: permute per epoch (``False``: dataset order).
        seed: the shuffle seed; must be the same on every rank.
        drop_last: cut the tail so all ranks get the same number of samples (use for training).
        with_epoch: yield ``(index, epoch)`` pairs instead of indices, so the dataset can seed each
            sample's augmentation from (seed, epoch, index) even in persistent workers.

    Usage in a loop::

        sampler.set_epoch(epoch)           # after load_state_dict this resumes mid-epoch
        for n_batches, batch in enumerate(loader, 1):
            ...
            state = sampler.state_dict(consumed=n_batches * batch_size)
    """

    def __init__(
        self,
        data: Sized | int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        with_epoch: bool = False,
    ):
        self.dataset_len = int(data) if isinstance(data, int) else len(data)
        self.num_replicas = get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = get_rank() if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"invalid rank {self.rank} for {self.num_replicas} replicas")
        if self.dataset_len < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.with_epoch = with_epoch
        self.epoch = 0
        self.start = 0  # global offset (all ranks together) where the current pass begins
        self._pending: tuple[int, int] | None = None  # (epoch, offset) from load_state_dict

    # -- epoch and resume -------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. Starts at sample 0 unless a loaded state points into this epoch."""
        self.epoch = int(epoch)
        self.start = 0
        if self._pending is not None:
            pending_epoch, offset = self._pending
            self._pending = None
            if pending_epoch == self.epoch:
                self.start = offset

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """Position to resume from after this rank consumed ``consumed`` samples of the current pass.

        ``consumed`` counts samples the training loop has *finished with* since it started iterating
        this pass (batches done x per-rank batch size). The sampler cannot count this itself:
        DataLoader workers prefetch indices well ahead of the training step. After a mid-epoch
        resume, the pass starts at the resume point, so count from there.
        """
        if consumed < 0:
            raise ValueError(f"consumed must be >= 0, got {consumed}")
        offset = self.start + int(consumed) * self.num_replicas
        return {
            "epoch": self.epoch,
            "offset": offset,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Arm a resume: the next ``set_epoch(state['epoch'])`` starts at the saved offset.

        A different dataset length or seed means a different permutation, so the offset would
        point at other samples: an error when ``strict``, otherwise the epoch restarts at 0.
        """
        mismatch = []
        if int(state["dataset_len"]) != self.dataset_len:
            mismatch.append(f"dataset length {state['dataset_len']} -> {self.dataset_len}")
        if int(state["seed"]) != self.seed:
            mismatch.append(f"seed {state['seed']} -> {self.seed}")
        if bool(state.get("shuffle", self.shuffle)) != self.shuffle:
            mismatch.append(f"shuffle {state.get('shuffle')} -> {self.shuffle}")
        offset = int(state["offset"])
        if mismatch:
            if strict:
                raise ValueError(
                    "cannot resume the sampler mid-epoch: " + "; ".join(mismatch)
                    + " (the saved offset would point at different samples)"
                )
            offset = 0
        self.epoch, self.start = int(state["epoch"]), offset
        # stays armed for the loop's own set_epoch(epoch) call at the top of the epoch
        self._pending = (self.epoch, offset)

    # -- iteration ---------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's global order of dataset indices (all ranks); subclasses define other orders."""
        # Tensors, not Python lists: a 15M-record epoch is 120 MB of int64 instead of ~1 GB of ints.
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            return torch.randperm(self.dataset_len, generator=g)
        return torch.arange(self.dataset_len)

    def _rank_indices(self) -> torch.Tensor:
        order = self.epoch_order(self.epoch)
        rest = order[self.start :]
        if self.drop_last:
            rest = rest[: len(rest) // self.num_replicas * self.num_replicas]
        elif len(rest):
            pad = math.ceil(len(rest) / self.num_replicas) * self.num_replicas - len(rest)
            rest = torch.cat([rest, order.repeat(math.ceil(pad / len(order)))[:pad]])
        return rest[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices, epoch = self._rank_indices(), self.epoch
        for chunk in indices.split(1 << 16):
            for i in chunk.tolist():
                yield (i, epoch) if self.with_epoch else i

    def __len__(self) -> int:
        """Samples this rank will yield in the current pass (from the resume point on)."""
        rest = max(0, self.dataset_len - self.start)
        if self.drop_last:
            return rest // self.num_replicas
        return math.ceil(rest / self.num_replicas)
