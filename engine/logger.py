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
import re
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from utils.atomic import atomic_open
from engine.distributed import all_reduce_sum, is_dist, is_main_process

__all__ = ["MetricAccumulator", "TrainLogger", "read_log", "read_log_events", "plot_loss_curves"]

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

    def totals_across_ranks(self) -> dict[str, list[float]]:
        """{name: [sum, count]} over all ranks (a collective): what a mid-epoch checkpoint keeps."""
        if not self._sums:
            return {}
        names, sums = self._stacked()
        counts = torch.tensor([float(self._counts[n]) for n in names], device=sums.device)
        packed = torch.cat([sums, counts])
        if is_dist() and dist.get_backend() == "nccl" and packed.device.type != "cuda":
            packed = packed.cuda()  # NCCL reduces CUDA tensors only
        values = all_reduce_sum(packed).tolist()
        k = len(names)
        return {n: [values[i], values[k + i]] for i, n in enumerate(names)}

    def add_totals(self, totals: Mapping[str, Sequence[float]]) -> None:
        """Add saved ``{name: [sum, count]}`` (on one rank only, so the cross-rank sum counts them once)."""
        for name, (total, count) in totals.items():
            value = torch.tensor(float(total))
            if name in self._sums:
                self._sums[name] = self._sums[name] + value.to(self._sums[name].device)
            else:
                self._sums[name] = value
            self._counts[name] = self._counts.get(name, 0) + int(count)

    def means_across_ranks(self) -> dict[str, float]:
        """Per-metric mean over all updates on all ranks (a collective: call on every rank).

        Every rank must have updated the same metric names (they run the same steps).
        """
        return {n: total / count for n, (total, count) in self.totals_across_ranks().items() if count}


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
        self._resumed_at_step = 0
        self.writer = None
        if self.enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self.writer = _tensorboard_writer(self.output_dir / "tensorboard", global_step or None)

    # -- per epoch -----------------------------------------------------------------
    def start_epoch(self, epoch: int, steps_in_epoch: int, start_step: int = 0) -> None:
        """Open the progress bar; ``start_step`` > 0 when resuming inside the epoch."""
        self.epoch = int(epoch)
        self._resumed_at_step = int(start_step)
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

    def epoch_means(self) -> dict[str, Any]:
        """The epoch's numbers so far: ``train_*`` means over all ranks (a collective), mean lr, pace."""
        means = self._epoch_metrics.means_across_ranks()
        elapsed = time.perf_counter() - self._epoch_start
        stats: dict[str, Any] = {f"train_{k}": v for k, v in means.items()}
        if self._lr_count:
            stats["train_lr"] = self._lr_sum / self._lr_count  # BLIP's epoch line carries the mean lr
        stats["epoch"] = self.epoch
        stats["global_step"] = self.global_step
        stats["epoch_time_sec"] = elapsed
        stats["samples_per_sec"] = self._epoch_samples / elapsed if elapsed > 0 else 0.0
        if self._resumed_at_step:
            # means cover the whole epoch (sums restored from the checkpoint); time and pace only the resumed part
            stats["resumed_at_step"] = self._resumed_at_step
        return stats

    def end_epoch(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`epoch_means` (a collective) plus ``extra``, written by :meth:`write_epoch`."""
        return self.write_epoch({**self.epoch_means(), **(extra or {})})

    def write_epoch(self, stats: Mapping[str, Any]) -> dict[str, Any]:
        """Write an epoch line (BLIP's, from :meth:`epoch_means` plus evaluation), TensorBoard, the plot.

        Rank 0 writes; no collective. Returns the line.
        """
        stats = dict(stats)
        if not self.enabled:
            return stats
        if self._bar is not None:
            self._bar.set_postfix({k[6:]: f"{v:.4f}" for k, v in stats.items()
                                   if k.startswith("train_") and isinstance(v, float)}, refresh=True)
            self._bar.close()
            self._bar = None
        self._append(stats)
        if self.writer is not None:
            for name, value in stats.items():
                if isinstance(value, (int, float)) and name not in ("epoch", "global_step"):
                    self.writer.add_scalar(f"epoch/{name}", value, int(stats.get("epoch", self.epoch)))
            self.writer.flush()
        plot_loss_curves(self.log_path, self.plot_path)
        return stats

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's running sums over all ranks (a collective), for a mid-epoch checkpoint."""
        return {"metrics": self._epoch_metrics.totals_across_ranks(), "lr_sum": self._lr_sum,
                "lr_count": self._lr_count}

    def restore_epoch_state(self, state: Mapping[str, Any]) -> None:
        """Continue the epoch's sums from a checkpoint (call on every rank after :meth:`start_epoch`)."""
        if is_main_process():
            self._epoch_metrics.add_totals(state.get("metrics", {}))
            self._lr_sum += float(state.get("lr_sum", 0.0))
            self._lr_count += int(state.get("lr_count", 0))

    def event(self, name: str, **fields: Any) -> None:
        """A marker line in log.txt (e.g. where a run was resumed): ``{"event", "global_step", ...}``."""
        if self.enabled:
            self._append({"event": name, "global_step": self.global_step, **fields})

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


def _log_lines(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a crash can leave a partial last line
        if isinstance(line, dict):
            yield line


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(step lines, epoch lines) of a ``log.txt``; unreadable lines are skipped.

    After a resume the steps between the checkpoint and the crash appear twice: the later
    line (from the resumed run) wins.
    """
    steps: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    for line in _log_lines(Path(path)):
        if "event" in line:
            continue
        if "step" in line:
            steps[int(line["step"])] = line
        elif "epoch" in line:
            epochs[int(line["epoch"])] = line
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def read_log_events(path: str | Path, name: str | None = None) -> list[dict]:
    """The marker lines of a ``log.txt`` (``{"event": ...}``), optionally of one kind."""
    return [line for line in _log_lines(Path(path)) if "event" in line and (name is None or line["event"] == name)]


_RECALL = re.compile(r"^(eval|val|test)_(txt|img)_r(1|5|10)$")


def plot_loss_curves(log_path: str | Path, out_path: str | Path) -> list[str]:
    """Draw ``log.txt`` as one panel per loss (each on its own scale), lr, grad norm and eval recall.

    Step lines give the curves (means over ``log_every`` steps), epoch means are dashed segments
    across their epoch, grey vertical lines mark resumes, and recall per epoch is drawn next to its
    chance level (dotted). Written atomically. Returns the panel titles ([] when there is nothing
    to plot yet).
    """
    steps, epochs = read_log(log_path)
    resumes = [int(e["global_step"]) for e in read_log_events(log_path, "resumed")]
    keys = {k for line in steps + epochs for k in line}
    losses = sorted(k for k in keys if k.startswith("train_") and "loss" in k)
    if not losses:
        return []
    panels: list[tuple[str, list[str]]] = [(k.removeprefix("train_"), [k]) for k in losses]
    for name in ("train_lr", "train_grad_norm"):
        if name in keys:
            panels.append((name.removeprefix("train_"), [name]))
    recall = sorted(k for k in keys if _RECALL.match(k))
    if recall:
        panels.append(("recall (epoch)", recall))
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cols = 3 if len(panels) > 4 else 2
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.2 * rows), dpi=100)
    titles = []
    for i, (title, names) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        if title == "recall (epoch)":
            _draw_recall(ax, epochs, names)
        else:
            _draw_series(ax, steps, epochs, names[0])
        for step in resumes:
            ax.axvline(step, color="0.5", linestyle=":", linewidth=1.0)
        titles.append(title + (" (dotted grey: resumed)" if resumes and i == 0 else ""))
        ax.set_title(titles[-1], fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("training log (solid: means over log_every steps; dashed: epoch means)", fontsize=10)
    fig.tight_layout()
    with atomic_open(out_path, "wb") as handle:
        fig.savefig(handle, format="png")
    return titles


def _draw_series(ax: Any, steps: list[dict], epochs: list[dict], name: str) -> None:
    pts = [(line["step"], line[name]) for line in steps if _finite(line.get(name))]
    if pts:
        ax.plot(*zip(*pts), color="C0", linewidth=1.2)
    start = 0
    for line in epochs:  # epoch mean drawn across the epoch's steps
        end = line.get("global_step")
        if end is not None and _finite(line.get(name)):
            ax.hlines(line[name], start, end, colors="C1", linestyles="dashed", linewidth=1.5)
        start = end if end is not None else start
    ax.set_xlabel("optimizer step")
    if name == "train_lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))


def _draw_recall(ax: Any, epochs: list[dict], names: list[str]) -> None:
    for i, name in enumerate(names):
        pts = [(line["epoch"], line[name]) for line in epochs if _finite(line.get(name))]
        if not pts:
            continue
        color = f"C{i % 10}"
        ax.plot(*zip(*pts), marker="o", color=color, label=name)
        chance_name = "chance_" + name.split("_", 1)[1]
        chance = [(line["epoch"], line[chance_name]) for line in epochs if _finite(line.get(chance_name))]
        if chance:
            ax.plot(*zip(*chance), linestyle=":", color=color, linewidth=1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.legend(fontsize=7, ncol=2)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
