"""The training loader: a map-style dataset behind a resumable sharded sampler, ready for the engine.

:class:`ResumableLoader` is what ``engine.loop`` iterates (the ``TrainData``
contract of ``engine/task.py``): full batches only (all ranks take the same
number of same-shaped steps), a position counted in samples of the whole job
(so a run resumes on another number of processes at the same point), and
DataLoader workers that survive a SIGTERM or Ctrl-C sent to the whole process
group, as SLURM's preemption, ``scancel`` and a terminal do: the workers ignore
the signal and the training process decides when to stop, after its current
step and a checkpoint. Because the workers ignore SIGTERM, the loader shuts them
down itself (:meth:`ResumableLoader.close`, also at interpreter exit): Python's
multiprocessing would otherwise SIGTERM the persistent workers at exit and wait
for them forever.
"""

from __future__ import annotations

import atexit
import signal
import weakref
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from data.sampler import ResumableDistributedSampler
from engine.skips import SkipCounter

__all__ = ["ResumableLoader", "ignore_stop_signals"]


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave SIGTERM/SIGINT to the training process.

    torch's workers otherwise die on the group's SIGTERM, and the training
    process then fails with "DataLoader worker ... is killed by signal" before it
    can save. The workers still exit when the training process goes away (their
    parent watchdog) or shuts the loader down.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shut_down_workers(loader: DataLoader) -> None:
    """End ``loader``'s persistent workers: torch keeps them in its private ``_iterator`` until collection."""
    iterator, loader._iterator = getattr(loader, "_iterator", None), None
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


_OPEN_LOADERS: "weakref.WeakSet[ResumableLoader]" = weakref.WeakSet()


@atexit.register
def _close_open_loaders() -> None:
    """At exit, before multiprocessing's hook (which would SIGTERM the workers, which ignore it, and then
    join them forever) and before torch's exit flag (which turns its shutdown into a no-op): both were
    registered when this module imported torch, and atexit runs hooks in reverse order."""
    for loader in list(_OPEN_LOADERS):
        loader.close()


class ResumableLoader:
    """Batches of ``dataset`` for this rank, in a per-epoch shuffle that can resume at any sample.

    Args:
        dataset: map-style; indexed with ``(index, epoch)`` pairs so augmentation can depend on
            (seed, epoch, index) alone. ``dataset.load_skips`` (optional) counts records dropped at load.
        batch_size: per rank.
        collate_fn: list of samples -> batch dict (with a ``"skipped"`` list).
        num_workers, pin_memory: as DataLoader's.
        seed: shuffle seed, the same on every rank.
        sampler: another epoch order (a :class:`ResumableDistributedSampler` subclass yielding
            ``(index, epoch)`` pairs, e.g. the shard stream of :mod:`data.shards.dataset`).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        collate_fn: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]],
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        sampler: ResumableDistributedSampler | None = None,
    ):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.load_skips: SkipCounter = getattr(dataset, "load_skips", None) or SkipCounter()
        self.sampler = sampler if sampler is not None else ResumableDistributedSampler(
            dataset, shuffle=True, seed=seed, drop_last=True, with_epoch=True)
        self.loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            collate_fn=collate_fn,
            persistent_workers=num_workers > 0,
            worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
            # The loader's own generator: creating an iterator must not draw from the global RNG,
            # or a run resumed mid-epoch would see different dropout/negative-sampling draws.
            generator=torch.Generator().manual_seed(seed),
        )
        # When this loader is collected; at exit, _close_open_loaders does it (in the right order).
        weakref.finalize(self, _shut_down_workers, self.loader).atexit = False
        _OPEN_LOADERS.add(self)

    def close(self) -> None:
        """Stop the persistent worker processes now (idempotent); iterating again starts new ones."""
        _shut_down_workers(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def samples_per_epoch(self) -> int:
        return self.sampler.dataset_len

    @property
    def start_sample(self) -> int:
        return self.sampler.start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)

    def __len__(self) -> int:
        """Batches this rank yields in the current pass."""
        return len(self.loader)

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return self.sampler.state_dict(consumed=consumed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(dict(state))
