"""What a training task hands the engine: its config schema, model, data, step and evaluation.

The loop in :mod:`engine.loop` knows nothing about BLIP: pretraining
(``tasks/pretrain.py``) and retrieval fine-tuning (``tasks/retrieval.py``)
each implement :class:`Task`, and the loop gives both the same launch modes,
precision, accumulation, exact resume, preemption, non-finite guard, logging
and checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from engine.config import Schema
from engine.skips import SkipCounter

__all__ = ["StepContext", "TrainData", "Task"]


@dataclass(frozen=True)
class StepContext:
    """Where the loop stands when it calls :meth:`Task.forward`."""

    epoch: int
    step_in_epoch: int  # optimizer steps done in this epoch before this one
    steps_per_epoch: int
    micro_batch: int  # 0 .. grad_accum_steps - 1 inside the optimizer step
    grad_accum_steps: int
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: fp32
    config: Mapping[str, Any]  # the run's validated config

    @property
    def first_micro_batch(self) -> bool:
        """True once per optimizer step: where per-step work (the momentum EMA) belongs."""
        return self.micro_batch == 0


@runtime_checkable
class TrainData(Protocol):
    """A resumable, sharded source of training batches for one rank.

    The position is counted in samples of the whole job (all ranks together), so a
    run can resume on another number of processes at the same point of the epoch.
    """

    load_skips: SkipCounter  # records dropped when the data was read

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (and a position armed by :meth:`load_state_dict`)."""

    @property
    def samples_per_epoch(self) -> int:
        """Samples of the current epoch over all ranks (it may vary by epoch)."""

    @property
    def start_sample(self) -> int:
        """Where the current pass begins in the epoch (samples, all ranks): > 0 after a mid-epoch resume."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """This rank's batches from the current position: dicts with at least ``"skipped"``."""

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """The position after this rank finished ``consumed`` samples of the current pass."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Arm a resume at a saved position."""

    def close(self) -> None:
        """End loader worker processes (the engine calls it when the run ends, however it ends)."""


class Task(Protocol):
    """One kind of training run. Methods run on every rank unless they say otherwise."""

    name: str  # "pretrain", "retrieval": used in messages and checkpoints
    schema: Schema  # its config keys (data, model, then engine.config.ENGINE_KEYS)
    best_metric: str | None  # an evaluation metric to keep checkpoint_best.pth by (higher is better)

    def build_model(self, config: Mapping[str, Any], device: torch.device) -> nn.Module:
        """The model, on ``device``; same initial weights on every rank."""

    def build_train_data(self, config: Mapping[str, Any], device: torch.device) -> TrainData:
        """This rank's training data."""

    def forward(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """The losses of one micro-batch (``model`` may be DDP-wrapped); the loop sums them."""

    def after_step(self, model: nn.Module, finite: torch.Tensor) -> None:
        """After each optimizer step (``model`` unwrapped; ``finite``: 0-d bool tensor, on device)."""

    def evaluate(self, model: nn.Module, config: Mapping[str, Any], device: torch.device,
                 autocast_dtype: torch.dtype | None) -> dict[str, float]:
        """Metrics after an epoch (all ranks call it; rank 0's result is logged); {} for none."""

    def setup_messages(self, config: Mapping[str, Any], data: TrainData) -> list[str]:
        """Warnings and notes for the log at the start of a run (rank 0)."""
