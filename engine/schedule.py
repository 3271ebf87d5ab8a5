"""BLIP's learning-rate schedules as pure functions, plus a per-step scheduler.

BLIP sets the learning rate by hand instead of using ``torch.optim.lr_scheduler``:

* warmup, per optimizer step, only inside epoch 0:
  ``lr = min(init_lr, warmup_lr + (init_lr - warmup_lr) * step / warmup_steps)``
* step decay, per epoch: ``lr = max(min_lr, init_lr * lr_decay_rate ** epoch)`` (pretraining)
* cosine, per epoch: ``lr = (init_lr - min_lr) * 0.5 * (1 + cos(pi * epoch / max_epoch)) + min_lr``
  (BLIP's fine-tuning scripts)

As in BLIP, warmup ends with epoch 0 even if ``warmup_steps`` is longer than
that epoch (epoch 1 then starts at its decay value). The learning rate is a
pure function of (epoch, step in epoch), so resuming needs no scheduler state.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["warmup_lr", "step_lr", "cosine_lr", "LRScheduler"]


def warmup_lr(step: int, warmup_steps: int, warmup_lr: float, init_lr: float) -> float:
    """Linear warmup from ``warmup_lr`` at step 0 to ``init_lr`` at ``warmup_steps`` (then flat)."""
    if warmup_steps <= 0:
        return init_lr
    return min(init_lr, warmup_lr + (init_lr - warmup_lr) * step / warmup_steps)


def step_lr(epoch: int, init_lr: float, min_lr: float, decay_rate: float) -> float:
    """BLIP's pretraining decay: ``max(min_lr, init_lr * decay_rate ** epoch)``."""
    return max(min_lr, init_lr * decay_rate**epoch)


def cosine_lr(epoch: int, max_epoch: int, init_lr: float, min_lr: float) -> float:
    """BLIP's fine-tuning cosine: ``init_lr`` at epoch 0, ``min_lr`` at ``max_epoch``."""
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


class LRScheduler:
    """Sets the learning rate of every param group for (epoch, step in epoch).

    Call ``scheduler.step(epoch, step_in_epoch)`` before each optimizer step; ``step_in_epoch``
    counts optimizer steps (not micro-batches) from 0 at the start of the epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        init_lr: float,
        min_lr: float,
        warmup_lr: float,
        warmup_steps: int,
        lr_decay_rate: float = 0.9,
        max_epoch: int = 1,
        schedule: Literal["step", "cosine"] = "step",
    ):
        if schedule not in ("step", "cosine"):
            raise ValueError(f"lr schedule must be 'step' or 'cosine', got {schedule!r}")
        if schedule == "cosine" and max_epoch < 1:
            raise ValueError(f"cosine schedule needs max_epoch >= 1, got {max_epoch}")
        self.optimizer = optimizer
        self.init_lr = init_lr
        self.min_lr = min_lr
        self.warmup_lr = warmup_lr
        self.warmup_steps = warmup_steps
        self.lr_decay_rate = lr_decay_rate
        self.max_epoch = max_epoch
        self.schedule = schedule

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, config: dict) -> "LRScheduler":
        return cls(
            optimizer,
            init_lr=config["init_lr"],
            min_lr=config["min_lr"],
            warmup_lr=config["warmup_lr"],
            warmup_steps=config["warmup_steps"],
            lr_decay_rate=config["lr_decay_rate"],
            max_epoch=config["max_epoch"],
            schedule=config["lr_schedule"],
        )

    def lr_at(self, epoch: int, step_in_epoch: int) -> float:
        if epoch == 0:
            return warmup_lr(step_in_epoch, self.warmup_steps, self.warmup_lr, self.init_lr)
        if self.schedule == "cosine":
            return cosine_lr(epoch, self.max_epoch, self.init_lr, self.min_lr)
        return step_lr(epoch, self.init_lr, self.min_lr, self.lr_decay_rate)

    def step(self, epoch: int, step_in_epoch: int) -> float:
        """Set and return the learning rate for this optimizer step."""
        lr = self.lr_at(epoch, step_in_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr
