"""Training output: progress bar, BLIP-style ``log.txt``, TensorBoard, loss-curve plot.

Metrics are summed *on their device*: ``loss.item()`` every step would make
the CPU wait for the GPU each step. The host reads values (one ``.tolist()``)
only every ``log_every`` steps on rank 0 and once per epoch for the
cross-rank average.

``output_dir/log.txt`` holds JSON lines. Epoch lines are BLIP's
(``{"train_<metric>": mean over the epoch and all ranks, ..., "epoch": e}``,
values as numbers rather than BLIP's formatted strings) plus ``global_step``
and whatever the loop adds (skip counts, eval recall). With ``log_every`` > 0
there are also step lines with a ``"step"`` key (means over the interval,
rank 0). ``loss_curves.png`` is redrawn from ``log.txt`` at the end of each
epoch, so it covers the whole run across resumes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from utils.atomic import atomic_open
from utils.distributed import all_reduce_sum, is_dist, is_main_process

__all__ = ["MetricAccumulator", "TrainLogger", "read_log", "plot_loss_curves"]

LOG_NAME = "log.txt"
PLOT_NAME = "loss_curves.png"


class MetricAccumulator:
    """Running sums of scalar tensors, kept on their device (no host sync in :meth:`update`)."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def update(self, metrics: Mapping[str, torch.Tensor | float]) -> None:
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().reshape(())
            else:
                value = torch.tensor(float(value))
            if name in self._sums:
                self._sums[name] = self._sums[name] + value.to(self._sums[name].device)
            else:
                self._sums[name] = value.clone()
            self._counts[name] = self._counts.get(name, 0) + 1

    def __bool__(self) -> bool:
        return bool(self._sums)

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()

    def _stacked(self) -> tuple[list[str], torch.Tensor]:
        names = list(self._sums)
        device = self._sums[names[0]].device
        return names, torch.stack([self._sums[n].to(device) for n in names])

    def means(self) -> dict[str, float]:
        """Per-metric mean on this rank (one host sync)."""
        if not self._sums:
            return {}
        names, sums = self._stacked()
        return {n: s / self._counts[n] for n, s in zip(names, sums.tolist())}

    def means_across_ranks(self) -> dict[str, float]:
        """Per-metric mean over all updates on all ranks (a collective: call on every rank).

        Every rank must have updated the same metric names (they run the same steps).
        """
        if not self._sums:
            return {}
        names, sums = self._stacked()
        counts = torch.tensor([float(self._counts[n]) for n in names], device=sums.device)
        packed = torch.cat([sums, counts])
        if is_dist() and dist.get_backend() == "nccl" and packed.device.type != "cuda":
            packed = packed.cuda()  # NCCL reduces CUDA tensors only
        packed = all_reduce_sum(packed)
        values = packed.tolist()
        k = len(names)
        return {n: values[i] / values[k + i] for i, n in enumerate(names)}


def _tensorboard_writer(log_dir: Path, purge_step: int | None) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the rest of the logging still works
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class TrainLogger:
    """Rank-0 training output. Create and call it on every rank; only rank 0 prints or writes.

    Per optimizer step: :meth:`log_step` (cheap, no sync except every ``log_every`` steps on
    rank 0). Per epoch: :meth:`start_epoch` before, :meth:`end_epoch` after (a collective).

    Args:
        output_dir: where ``log.txt``, ``loss_curves.png`` and ``tensorboard/`` go.
        log_every: step lines / TensorBoard points / progress-bar numbers every N steps (0: per epoch).
        global_step: optimizer steps already done (non-zero when resuming; TensorBoard events
            after it from the interrupted run are purged).
        tensorboard: write TensorBoard scalars when ``torch.utils.tensorboard`` imports.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        log_every: int = 50,
        global_step: int = 0,
        tensorboard: bool = True,
        enabled: bool | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.log_every = int(log_every)
        self.global_step = int(global_step)
        self.enabled = is_main_process() if enabled is None else enabled
        self.log_path = self.output_dir / LOG_NAME
        self.plot_path = self.output_dir / PLOT_NAME
        self._epoch_metrics = MetricAccumulator()
        self._interval_metrics = MetricAccumulator()
        self._interval_samples = 0
        self._interval_start = time.perf_counter()
        self._epoch_start = time.perf_counter()
        self._epoch_samples = 0
        self._lr_sum, self._lr_count = 0.0, 0  # host floats: lr comes from the scheduler, not the GPU
        self._bar: tqdm | None = None
        self.epoch = 0
        self.writer = None
        if self.enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.writer = _tensorboard_writer(self.output_dir / "tensorboard", global_step or None)

    # -- per epoch -----------------------------------------------------------------
    def start_epoch(self, epoch: int, steps_in_epoch: int, start_step: int = 0) -> None:
        """Open the progress bar; ``start_step`` > 0 when resuming inside the epoch."""
        self.epoch = int(epoch)
        self._epoch_metrics.reset()
        self._interval_metrics.reset()
        self._interval_samples = self._epoch_samples = 0
        self._lr_sum, self._lr_count = 0.0, 0
        self._interval_start = self._epoch_start = time.perf_counter()
        if self.enabled:
            self._bar = tqdm(
                total=steps_in_epoch, initial=start_step, desc=f"epoch {epoch}", unit="step", dynamic_ncols=True
            )

    def log_step(self, metrics: Mapping[str, torch.Tensor | float], *, lr: float, samples: int) -> None:
        """Record one optimizer step: metric tensors (left on device), lr, samples in the step (all ranks)."""
        self.global_step += 1
        self._epoch_metrics.update(metrics)
        self._lr_sum += lr
        self._lr_count += 1
        self._epoch_samples += samples
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
        if self.log_every <= 0:
            return
        self._interval_metrics.update(metrics)
        self._interval_samples += samples
        if self.global_step % self.log_every == 0:
            self._flush_interval(lr)

    def _flush_interval(self, lr: float) -> None:
        means = self._interval_metrics.means()  # the one host sync of the interval
        elapsed = time.perf_counter() - self._interval_start
        throughput = self._interval_samples / elapsed if elapsed > 0 else 0.0
        self._interval_metrics.reset()
        self._interval_samples = 0
        self._interval_start = time.perf_counter()
        if self._bar is not None:
            postfix = {k: f"{v:.4f}" for k, v in means.items()}
            postfix.update(lr=f"{lr:.2e}", samples_s=f"{throughput:.1f}")
            self._bar.set_postfix(postfix, refresh=False)
        line = {"step": self.global_step, "epoch": self.epoch}
        line.update({f"train_{k}": v for k, v in means.items()})
        line.update(train_lr=lr, samples_per_sec=throughput)
        self._append(line)
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"train/{name}", value, self.global_step)
            self.writer.add_scalar("train/lr", lr, self.global_step)
            self.writer.add_scalar("train/samples_per_sec", throughput, self.global_step)

    def end_epoch(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Epoch means over all ranks (a collective), the BLIP epoch line, TensorBoard, the plot.

        Returns the line written (``train_*`` means, ``epoch``, ``global_step``, ``extra``).
        """
        means = self._epoch_metrics.means_across_ranks()
        elapsed = time.perf_counter() - self._epoch_start
        stats: dict[str, Any] = {f"train_{k}": v for k, v in means.items()}
        if self._lr_count:
            stats["train_lr"] = self._lr_sum / self._lr_count  # BLIP's epoch line carries the mean lr
        stats["epoch"] = self.epoch
        stats["global_step"] = self.global_step
        stats["epoch_time_sec"] = elapsed
        stats["samples_per_sec"] = self._epoch_samples / elapsed if elapsed > 0 else 0.0
        stats.update(extra or {})
        if not self.enabled:
            return stats
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()}, refresh=True)
            self._bar.close()
            self._bar = None
        self._append(stats)
        if self.writer is not None:
            for name, value in stats.items():
                if isinstance(value, (int, float)) and name not in ("epoch", "global_step"):
                    self.writer.add_scalar(f"epoch/{name}", value, self.epoch)
            self.writer.flush()
        plot_loss_curves(self.log_path, self.plot_path)
        return stats

    def write(self, message: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _append(self, line: Mapping[str, Any]) -> None:
        # Append-only: a crash can at worst leave a partial last line, which read_log skips.
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(step lines, epoch lines) of a ``log.txt``; unreadable lines are skipped.

    After a resume the steps between the checkpoint and the crash appear twice: the later
    line (from the resumed run) wins.
    """
    steps: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    path = Path(path)
    if not path.exists():
        return [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(line, dict):
            continue
        if "step" in line:
            steps[int(line["step"])] = line
        elif "epoch" in line:
            epochs[int(line["epoch"])] = line
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def plot_loss_curves(log_path: str | Path, out_path: str | Path) -> bool:
    """Draw every ``train_*loss*`` metric of ``log.txt`` against the optimizer step (atomic PNG).

    Step lines give the curves; each epoch mean is a dashed segment across that epoch's steps.
    Returns False when there is nothing to plot yet.
    """
    steps, epochs = read_log(log_path)
    names = sorted({k for line in steps + epochs for k in line if k.startswith("train_") and "loss" in k})
    if not names:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        label = name.removeprefix("train_")
        pts = [(line["step"], line[name]) for line in steps if _finite(line.get(name))]
        if pts:
            ax.plot(*zip(*pts), color=color, label=label, linewidth=1.2)
        start = 0
        for j, line in enumerate(epochs):  # epoch mean drawn across the epoch's steps
            end = line.get("global_step")
            if end is not None and _finite(line.get(name)):
                ax.hlines(line[name], start, end, colors=color, linestyles="dashed", linewidth=1.5,
                          label=None if pts or j else label)
            start = end if end is not None else start
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("training losses (solid: means over log_every steps; dashed: epoch means)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(out_path, "wb") as handle:
        fig.savefig(handle, format="png")
    return True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
