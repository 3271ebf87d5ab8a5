"""The training loop every task shares: launch, resume, step, checkpoint, epoch end.

``Trainer(task, config, resume=...).run()`` is what ``pretrain.py`` and
``train_retrieval.py`` do. The task (``engine/task.py``) supplies the model,
the data, the losses of a micro-batch and the evaluation; everything that makes
a run survive a real cluster lives here, once:

* one plain process, torchrun or SLURM (``engine/distributed.py``); a rank that
  fails stops the others within seconds (:class:`~engine.distributed.PeerFailureWatch`);
* fp32 / bf16 / fp16 autocast, gradient accumulation (DDP syncs only the last
  micro-batch), gradient clipping;
* no per-step host sync: losses stay on the device, a non-finite step is skipped
  inside the fused AdamW kernel (``found_inf``), and the host reads the counters
  every :data:`CHECK_EVERY` optimizer steps and at log intervals;
* exact resume, also on another number of processes: model, optimizer, scaler,
  every rank's RNG, the data position in samples of the whole job, the skip
  counters and the epoch's running loss sums are saved;
* SIGTERM/SIGINT to the whole process group finish the current step, write a
  complete checkpoint and return normally (``engine/preemption.py``); the
  epoch-end checkpoint is written before the evaluation: a signal during the
  evaluation stops the run once it is done, and an evaluation that never ran or
  was killed runs first on resume;
* atomic checkpoints: ``checkpoint_last.pth`` is always complete, and
  ``checkpoint_best.pth`` keeps the best evaluation when the task names a metric.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from engine.checkpoint import (
    CHECKPOINT_BEST,
    build_training_state,
    find_resume_checkpoint,
    gather_rng_states,
    load_training_state,
    restore_rng_state,
    resume_position,
    rng_state_for_this_rank,
    save_training_state,
)
from engine.config import OPERATIONAL_KEYS, same_setting, save_config
from engine.distributed import (
    DistInfo,
    PeerFailureWatch,
    all_reduce_sum,
    barrier,
    broadcast_object,
    destroy_distributed,
    init_distributed,
    is_dist,
    is_main_process,
    unwrap_model,
)
from engine.logger import TrainLogger, read_log, read_log_events
from engine.preemption import StopRequest
from engine.schedule import LRScheduler
from engine.skips import SkipCounter
from engine.task import StepContext, Task, TrainData
from utils.atomic import atomic_save
from utils.errors import DatasetError, TrainingError

__all__ = ["Trainer", "RunResult", "CHECK_EVERY", "PRECISIONS"]

# Optimizer steps between host checks of the stop request, the non-finite counter and peers
# (one small all-reduce across ranks; in one process the stop request is read every step).
CHECK_EVERY = 10
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoggedAbout:
    """log.txt's record of a saved epoch: its epoch line, the run's "finished" event, the best metric so far."""

    epoch_line: bool = False
    finished: bool = False
    best: float | None = None


@dataclass
class RunResult:
    """Where a run ended; what the CLI prints and tests look at."""

    output_dir: Path
    global_step: int
    epoch: int
    stopped_by_signal: bool = False
    already_finished: bool = False  # --resume found a run that had finished: nothing was trained
    last_epoch_stats: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)  # e.g. the test set after retrieval training
    model: torch.nn.Module | None = None  # the trained model (unwrapped), for notebooks and tests


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader_error(exc: BaseException) -> str:
    """The informative part of an exception re-raised from a DataLoader worker."""
    text = str(exc).strip()
    if "Original Traceback" in text:  # torch's ExceptionWrapper: the original error is the last line
        text = text.splitlines()[-1]
    return text or type(exc).__name__


class Trainer:
    """Runs ``task`` with a validated ``config`` (the task's schema); see the module docstring."""

    def __init__(self, task: Task, config: Mapping[str, Any], *, resume: bool = False):
        self.task = task
        self.cfg = dict(config)
        self.resume = resume
        self.output_dir = Path(self.cfg["output_dir"])
        self.accum = int(self.cfg["grad_accum_steps"])
        self.amp_dtype = PRECISIONS[self.cfg["precision"]]
        self.global_step = 0
        self.start_epoch = 0
        self.best_value: float | None = None
        self.pending_eval: dict[str, Any] | None = None  # epoch stats of a finished epoch not yet evaluated
        self.epoch_state: dict[str, Any] | None = None  # running sums of the epoch a resume lands in
        self.resumed_from: tuple[Path, int, int] | None = None
        self.result = RunResult(output_dir=self.output_dir, global_step=0, epoch=0)

    # ----- the run ------------------------------------------------------------------
    def run(self) -> RunResult:
        device_pref = None if self.cfg["device"] == "auto" else self.cfg["device"]
        self.info: DistInfo = init_distributed(device_pref)
        self.device = self.info.device
        try:
            with StopRequest() as self.stop, PeerFailureWatch():
                return self._run()
        finally:
            data = getattr(self, "data", None)  # absent when setup failed before building it
            if data is not None:  # loader workers ignore SIGTERM: end them here, not at exit
                data.close()
            destroy_distributed()

    def _run(self) -> RunResult:
        self._setup()
        checkpoint = self._find_checkpoint()
        if checkpoint is not None:
            self._restore(checkpoint)
            if self.result.already_finished:
                return self.result
        self._open_log()
        if self.pending_eval is not None:
            self._evaluate_and_log(self.start_epoch - 1, self.pending_eval)
        for epoch in range(self.start_epoch, self.cfg["max_epoch"]):
            if self._train_epoch(epoch):
                return self._stopped()
            if self._end_epoch(epoch):
                return self._stopped()
        self.result.final_metrics = self._call_task_finish()
        # The run's end, after the task's finish (e.g. the test split): a resume of a run killed during
        # that finish runs it again instead of reporting the run as finished.
        self.logger.event("finished", epoch=self.cfg["max_epoch"] - 1)
        self.logger.close()
        self.result.global_step = self.global_step
        return self.result

    # ----- setup ------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg["num_workers"] > 0:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers + fork: no thread pools
        # Same init on every rank (DDP also broadcasts it); per-rank streams afterwards, as BLIP.
        _seed_everything(cfg["seed"])
        self.model = self.task.build_model(cfg, self.device)
        _seed_everything(cfg["seed"] + self.info.rank)
        self.data: TrainData = self.task.build_train_data(cfg, self.device)
        self.samples_per_step = cfg["batch_size"] * self.info.world_size * self.accum
        if self.data.samples_per_epoch < self.samples_per_step:
            raise TrainingError(
                f"{self.data.samples_per_epoch} usable records are fewer than one optimizer step "
                f"(batch_size {cfg['batch_size']} x {self.info.world_size} processes x grad_accum_steps {self.accum})"
            )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg["init_lr"], weight_decay=cfg["weight_decay"],
                                           fused=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.scheduler = LRScheduler.from_config(self.optimizer, cfg)
        self.run_skips = SkipCounter()
        zero = torch.zeros((), device=self.device)
        self.zero = zero
        self.nonfinite_run = zero.clone()      # non-finite steps in a row, now
        self.nonfinite_max = zero.clone()      # longest such run since the last host check
        self.nonfinite_hit = zero.clone() - 1  # global step where the run reached the limit (-1: not yet)
        self.nonfinite_total = zero.clone()    # this epoch

    def _find_checkpoint(self) -> Path | None:
        existing = find_resume_checkpoint(self.output_dir)
        if existing is not None and not self.resume:
            raise TrainingError(
                f"{self.output_dir} already holds a run ({existing.name}); continue it with --resume "
                "or choose another --output_dir"
            )
        return existing if self.resume else None

    def _restore(self, path: Path) -> None:
        """Continue the run saved at ``path``: same config (or only operational keys changed)."""
        checkpoint = load_training_state(path)
        saved_cfg = checkpoint.get("config") or {}
        epoch, step = resume_position(checkpoint)
        finished = epoch >= self.cfg["max_epoch"] and checkpoint["epoch_finished"]
        self._check_same_run(path, saved_cfg, finished)
        logged = self._logged_about(int(checkpoint["epoch"]))
        if finished and logged.epoch_line and logged.finished:
            self.result.already_finished = True
            self.result.epoch = int(checkpoint["epoch"])
            self.result.global_step = int(checkpoint["global_step"])
            self.result.checkpoint = path
            self.result.model = self.model
            return
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as exc:
            raise TrainingError(f"{path}: does not fit this config's model ({str(exc)[:300]})") from None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(checkpoint["scaler"])
        try:
            self.data.load_state_dict(checkpoint["sampler"])
        except ValueError as exc:  # the data changed under the run: the saved position means other samples
            raise TrainingError(f"cannot resume {path}: {exc}; restore the training data the run used, "
                                "or start a new run with another --output_dir") from None
        if checkpoint.get("skips"):
            self.run_skips = SkipCounter.from_state_dict(checkpoint["skips"])
        self.start_epoch, self.global_step = epoch, int(checkpoint["global_step"])
        self.best_value = checkpoint.get("best_value")
        if checkpoint["epoch_finished"]:  # its epoch was evaluated after this file was written: the log knows
            if logged.best is not None and (self.best_value is None or logged.best > self.best_value):
                self.best_value = logged.best
        self.epoch_state = checkpoint.get("epoch_state") if not checkpoint["epoch_finished"] else None
        if checkpoint["epoch_finished"] and not logged.epoch_line:
            self.pending_eval = dict(checkpoint.get("epoch_stats") or {"epoch": int(checkpoint["epoch"])})
        rng = rng_state_for_this_rank(checkpoint)
        if rng is not None:
            restore_rng_state(rng)
        self.resumed_from = (path, epoch, step)

    def _check_same_run(self, path: Path, saved: Mapping[str, Any], finished: bool) -> None:
        """A resume must continue the same computation: name any key that changed and what to do."""
        keys = {key.name: key for key in self.task.schema}
        changed = [k for k in sorted(set(saved) | set(self.cfg))
                   if k not in OPERATIONAL_KEYS and not same_setting(keys.get(k), saved.get(k), self.cfg.get(k))]
        if not changed or finished:
            return
        shown = "; ".join(f"{k}: run {saved.get(k)!r}, now {self.cfg.get(k)!r}" for k in changed[:8])
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise TrainingError(
            f"cannot resume {path}: the config differs from the one the run was started with in "
            f"{len(changed)} key(s): {shown}{more}. Continue the run with its own config "
            f"(--config {self.output_dir / 'config.yaml'} --resume; add max_epoch=N to extend it), "
            "or start a new run with another --output_dir"
        )

    def _logged_about(self, epoch: int) -> "LoggedAbout":
        """What log.txt says about the run up to ``epoch``: read once on rank 0, the same on every rank."""
        facts = LoggedAbout()
        if is_main_process():
            log = self.output_dir / "log.txt"
            _, epochs = read_log(log)
            name = self.task.best_metric
            facts = LoggedAbout(
                epoch_line=any(int(line.get("epoch", -1)) == epoch for line in epochs),
                finished=any(int(line.get("epoch", -1)) == epoch for line in read_log_events(log, "finished")),
                best=max((float(line[name]) for line in epochs if name and name in line and int(line["epoch"]) <= epoch),
                         default=None))
        return broadcast_object(facts)

    def _open_log(self) -> None:
        cfg = self.cfg
        self.logger = TrainLogger(self.output_dir, log_every=cfg["log_every"], global_step=self.global_step)
        self.ddp = self._wrap_ddp() if is_dist() else self.model
        self.result.model = self.model
        if not is_main_process():
            return
        save_config(cfg, self.output_dir / "config.yaml")
        n_params = sum(p.numel() for p in self.params)
        self.logger.write(
            f"MedVLP {self.task.name}: {self.data.samples_per_epoch} pairs, {self.info.world_size} process(es) "
            f"on {self.device.type}, {n_params / 1e6:.1f}M trainable parameters, precision {cfg['precision']}, "
            f"{self.data.samples_per_epoch // self.samples_per_step} steps/epoch")
        if self.device.type == "cpu" and cfg["precision"] != "fp32":
            self.logger.write(f"note: precision {cfg['precision']} on CPU runs, but without native bf16/fp16 "
                              "matmul instructions it is far slower than fp32 (about 15x on an AVX2 CPU, "
                              "docs/benchmarks/pretrain.md); it is meant for GPUs")
        if self.data.load_skips.total:
            self.logger.write(f"at load: {self.data.load_skips.summary('records')}")
        for message in self.task.setup_messages(cfg, self.data):
            self.logger.write(message)
        if self.resumed_from is not None:
            path, epoch, step = self.resumed_from
            self.logger.write(f"resumed from {path} at epoch {epoch}, step {step} (global step {self.global_step})")
            self.logger.event("resumed", epoch=epoch, step_in_epoch=step)
        elif self.resume:
            self.logger.write(f"--resume: no checkpoint in {self.output_dir}; starting from scratch")
        else:
            for report in getattr(self.model, "init_reports", []):
                self.logger.write(report.summary() if hasattr(report, "summary") else str(report))

    def _wrap_ddp(self) -> DistributedDataParallel:
        # The feature queues are updated identically on every rank (from gathered features): no
        # buffer broadcast before each forward. torch 2.14 renamed the switch.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids, **no_buffer_sync)

    # ----- one epoch ----------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> bool:
        """Train ``epoch`` from where it stands; True when a stop request ended it early."""
        cfg = self.cfg
        self.data.set_epoch(epoch)
        start_sample = self.data.start_sample
        first_step = start_sample // self.samples_per_step
        steps_per_epoch = first_step + (self.data.samples_per_epoch - start_sample) // self.samples_per_step
        self.logger.start_epoch(epoch, steps_per_epoch, first_step)
        if self.epoch_state and first_step > 0:
            self.logger.restore_epoch_state(self.epoch_state)  # the epoch means cover the whole epoch
        self.epoch_state = None
        if first_step == 0:
            self.run_skips.reset()  # (a mid-epoch resume keeps the counts saved with the checkpoint)
        self.ddp.train()
        step, micro, micro_done = first_step, 0, 0
        step_losses: dict[str, torch.Tensor] = {}
        lr = 0.0
        batches = self._batches()
        while step < steps_per_epoch:
            batch = next(batches, None)
            if batch is None:
                break
            if micro == 0:
                lr = self.scheduler.step(epoch, step)
                step_losses = {}
            self.run_skips.update(batch["skipped"])
            ctx = StepContext(epoch=epoch, step_in_epoch=step, steps_per_epoch=steps_per_epoch, micro_batch=micro,
                              grad_accum_steps=self.accum, device=self.device, autocast_dtype=self.amp_dtype,
                              config=cfg)
            self._forward_backward(batch, ctx, step_losses)
            micro += 1
            if micro < self.accum:
                continue
            micro = 0
            micro_done += self.accum
            self._optimizer_step(step_losses, lr)
            step += 1
            self.global_step += 1
            position = (epoch, step, micro_done)
            if cfg["save_every"] and self.global_step % cfg["save_every"] == 0:
                self.result.checkpoint = self._save(position, finished=False)
            if self._check_due():
                if self._host_check(position):
                    self.result.checkpoint = self._save(position, finished=False)
                    self.logger.write(f"{self.stop.signal_name or 'stop request'}: saved "
                                      f"{self.result.checkpoint or self.output_dir} at epoch {epoch}, step {step}; "
                                      "resume with --resume")
                    self.result.epoch = epoch
                    return True
        self.epoch_position = (epoch, step, micro_done)
        return False

    def _batches(self) -> Iterator[dict[str, Any]]:
        """This rank's batches; data errors become one clear message (and stop every rank)."""
        iterator = iter(self.data)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except DatasetError:
                raise
            except Exception as exc:  # raised inside a DataLoader worker or the sampler
                raise DatasetError(f"reading the training data failed: {_loader_error(exc)}") from None
            if "fatal" in batch:
                raise DatasetError(batch["fatal"])
            yield batch

    def _forward_backward(self, batch: Mapping[str, Any], ctx: StepContext,
                          step_losses: dict[str, torch.Tensor]) -> None:
        last_micro = ctx.micro_batch == self.accum - 1
        sync = contextlib.nullcontext() if (last_micro or not is_dist()) else self.ddp.no_sync()
        with sync:
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                losses = self.task.forward(self.ddp, batch, ctx)
            total = sum(losses.values())
            self.scaler.scale(total / self.accum).backward()
        for name, value in losses.items():
            step_losses[name] = step_losses.get(name, self.zero) + value.detach().float() / self.accum

    def _optimizer_step(self, step_losses: dict[str, torch.Tensor], lr: float) -> None:
        """Clip, step (skipped on device when anything is non-finite), count, log; no host sync."""
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg["grad_clip"] if self.cfg["grad_clip"] is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
        loss_sum = sum(step_losses.values())
        loss_finite = torch.isfinite(loss_sum)
        applied = loss_finite & torch.isfinite(grad_norm)  # the update happens only then
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips steps with inf/nan gradients itself
            self.scaler.update()
            bad = (~loss_finite).float()  # fp16 overflows are the scaler's business, not an error
        else:
            self.optimizer.found_inf = (~applied).float()  # fused AdamW skips the update on device
            self.optimizer.step()
            bad = (~applied).float()
        self.optimizer.zero_grad(set_to_none=True)
        self.task.after_step(unwrap_model(self.ddp), applied)  # e.g. enqueue features of applied steps only
        self.nonfinite_run = (self.nonfinite_run + 1) * bad
        self.nonfinite_max = torch.maximum(self.nonfinite_max, self.nonfinite_run)
        reached = (self.nonfinite_run >= self.cfg["max_nonfinite_steps"]) & (self.nonfinite_hit < 0)
        self.nonfinite_hit = torch.where(reached, self.zero + self.global_step + 1, self.nonfinite_hit)
        self.nonfinite_total += bad
        metrics = {k: torch.where(loss_finite, v, self.zero) for k, v in step_losses.items()}
        metrics["loss"] = torch.where(loss_finite, loss_sum, self.zero)
        metrics["grad_norm"] = torch.where(torch.isfinite(grad_norm), grad_norm.float(), self.zero)
        self.logger.log_step(metrics, lr=lr, samples=self.samples_per_step)

    def _check_due(self) -> bool:
        return self.global_step % CHECK_EVERY == 0 or (not is_dist() and self.stop.requested)

    def _host_check(self, position: tuple[int, int, int]) -> bool:
        """One small collective: stop requested anywhere? too many non-finite steps? True: stop now."""
        flags = torch.stack([torch.tensor(float(self.stop.requested), device=self.device), self.nonfinite_max,
                             self.nonfinite_hit])
        if is_dist():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        requested, longest, hit = flags.tolist()
        self.nonfinite_max.zero_()
        if longest >= self.cfg["max_nonfinite_steps"]:
            path = self._save(position, finished=False)
            self.logger.close()
            raise TrainingError(
                f"{self.cfg['max_nonfinite_steps']} non-finite losses in a row (max_nonfinite_steps) at global "
                f"step {int(hit)} (the run checks every {CHECK_EVERY} steps and stopped at step "
                f"{self.global_step}); every non-finite step was skipped. Checkpoint: {path or self.output_dir}. "
                "Lower init_lr, set grad_clip, or check the data."
            )
        self.nonfinite_hit.fill_(-1)
        return bool(requested)

    # ----- epoch end ------------------------------------------------------------------
    def _end_epoch(self, epoch: int) -> bool:
        """Counts, a checkpoint, then the evaluation and the epoch line; True when asked to stop."""
        merged = self.run_skips.merged_across_ranks()  # collective
        stats: dict[str, Any] = self.logger.epoch_means()  # collective
        stats.update({"skipped": merged.total, "skipped_by_reason": dict(merged.counts),
                      "skipped_at_load": self.data.load_skips.total,
                      "nonfinite_steps": int(all_reduce_sum(self.nonfinite_total.clone()).item())})
        self.nonfinite_total.zero_()
        if merged.total:
            self.logger.write(f"epoch {epoch}: {merged.summary('samples')}")
        if self.data.load_skips.total:
            self.logger.write(f"epoch {epoch}: at load {self.data.load_skips.summary('records')}")
        # Saved before the evaluation: a preemption during a long evaluation loses no training.
        self.result.checkpoint = self._save(self.epoch_position, finished=True, epoch_stats=stats)
        if self._stop_requested_anywhere():
            self.logger.write(f"{self.stop.signal_name or 'stop request'}: saved {self.result.checkpoint} after "
                              f"epoch {epoch}; its evaluation runs first on --resume")
            self.result.epoch = epoch
            return True
        self._evaluate_and_log(epoch, stats)
        # A signal during the evaluation: stop before the next epoch (the last one goes on to the task's finish,
        # which a resume of a finished run would not run). Saved again: the evaluation moved the RNG.
        if epoch + 1 < self.cfg["max_epoch"] and self._stop_requested_anywhere():
            self.result.checkpoint = self._save(self.epoch_position, finished=True, epoch_stats=stats)
            self.logger.write(f"{self.stop.signal_name or 'stop request'}: saved {self.result.checkpoint} after "
                              f"the evaluation of epoch {epoch}; resume with --resume")
            return True
        return False

    def _evaluate_and_log(self, epoch: int, stats: dict[str, Any]) -> None:
        metrics = self.task.evaluate(unwrap_model(self.ddp), self.cfg, self.device, self.amp_dtype)
        metrics = dict(broadcast_object(metrics))  # every rank acts on rank 0's numbers
        stats = {**stats, **metrics}
        self.result.last_epoch_stats = self.logger.write_epoch(stats)
        self.result.epoch = epoch
        self._keep_best(epoch, metrics)

    def _keep_best(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        name = self.task.best_metric
        if not name or name not in metrics:
            return
        value = float(metrics[name])
        if self.best_value is not None and value <= self.best_value:
            return
        self.best_value = value
        path = self.output_dir / CHECKPOINT_BEST
        if is_main_process():
            payload = {"model": unwrap_model(self.ddp).state_dict(), "config": dict(self.cfg), "epoch": epoch,
                       "metrics": dict(metrics), "best_metric": name, "global_step": self.global_step}
            atomic_save(path, lambda handle: torch.save(payload, handle))
            self.logger.write(f"epoch {epoch}: best {name} so far ({value:.2f}): saved {path}")
        self.result.best_checkpoint = path
        barrier()

    def _stop_requested_anywhere(self) -> bool:
        flag = torch.tensor(float(self.stop.requested), device=self.device)
        if is_dist():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    # ----- saving -------------------------------------------------------------------
    def _save(self, position: tuple[int, int, int], *, finished: bool,
              epoch_stats: Mapping[str, Any] | None = None) -> Path | None:
        """Checkpoint at ``position`` = (epoch, optimizer steps done in it, micro-batches done in this pass).

        A collective (RNG states and the running epoch sums are gathered); rank 0 writes.
        """
        epoch, step, micro_done = position
        states = gather_rng_states()
        epoch_state = None if finished else self.logger.epoch_state()
        path = None
        if is_main_process():
            consumed = 0 if finished else micro_done * self.cfg["batch_size"]
            extra: dict[str, Any] = {"task": self.task.name, "best_value": self.best_value,
                                     "epoch_state": epoch_state}
            if epoch_stats is not None:
                extra["epoch_stats"] = dict(epoch_stats)
            state = build_training_state(
                model=self.ddp, optimizer=self.optimizer, config=self.cfg, epoch=epoch,
                global_step=self.global_step, step_in_epoch=step, epoch_finished=finished,
                sampler_state=self.data.state_dict(consumed), scaler=self.scaler, rng_states=states,
                skip_state=self.run_skips.state_dict(), extra=extra,
            )
            path = save_training_state(state, self.output_dir, keep_checkpoints=self.cfg["keep_checkpoints"])
        barrier()
        return path

    def _stopped(self) -> RunResult:
        self.logger.close()
        self.result.global_step = self.global_step
        self.result.stopped_by_signal = True
        return self.result

    def _call_task_finish(self) -> dict[str, Any]:
        finish = getattr(self.task, "finish", None)
        if finish is None:
            return {}
        return finish(self) or {}
