"""The pretraining loop: one process or torchrun/SLURM, mixed precision, exact resume, clean preemption.

``run_pretraining(config, resume=...)`` is everything ``pretrain.py`` does.
What makes it survive real runs:

* no per-step host sync: losses stay on the device, a non-finite step is
  skipped inside the fused AdamW kernel (``found_inf``) rather than by
  reading the loss on the host, and the host looks at the counters only
  every ``CHECK_EVERY`` steps (and at log intervals);
* exact resume: model, optimizer, scaler, every rank's RNG, the sampler's
  position and the skip counters are saved; the data loader has its own
  generator, and augmentation is seeded per sample, so a resumed run takes
  the same steps as an uninterrupted one;
* SIGTERM/SIGINT (preemption, Ctrl-C) ask the loop to stop: all ranks agree
  at the next check, write a checkpoint and return normally (exit code 0);
* atomic checkpoints (``checkpoint_last.pth`` is always complete).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from data.pretrain_dataset import SkipCounter, build_pretrain_dataset, build_pretrain_loader
from data.retrieval_dataset import RetrievalEvalDataset
from data.transforms import build_image_transform
from models import build_model, unwrap
from models.checkpoint import LoadReport
from models.retrieval_eval import chance_recall, itc_similarity_matrix, recall_at_k
from models.tokenizer import load_tokenizer
from utils.checkpointing import (
    build_checkpoint,
    find_resume_checkpoint,
    gather_rng_states,
    load_checkpoint,
    restore_rng_state,
    resume_position,
    rng_state_for_this_rank,
    save_checkpoint,
)
from utils.config import save_config
from utils.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    destroy_distributed,
    init_distributed,
    is_dist,
    is_main_process,
)
from utils.logger import TrainLogger
from utils.schedule import LRScheduler

__all__ = ["run_pretraining", "RunResult", "TrainingError", "CHECK_EVERY"]

# Optimizer steps between host checks of the stop request and the non-finite counter
# (one small all-reduce across ranks; in one process the stop request is read every step).
CHECK_EVERY = 10
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. too many non-finite losses in a row)."""


@dataclass
class RunResult:
    output_dir: Path
    global_step: int
    epoch: int
    stopped_by_signal: bool = False
    last_epoch_stats: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    model: torch.nn.Module | None = None  # the trained model (unwrapped), for notebooks and tests


class StopRequest:
    """SIGTERM/SIGINT handlers that only set a flag; the loop decides when to stop."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _alpha(config: Mapping[str, Any], epoch: int, step: int, steps_per_epoch: int) -> float:
    """BLIP: alpha ramps linearly from 0 over the first ``alpha_rampup_epochs`` epochs."""
    ramp = float(config["alpha_rampup_epochs"])
    if ramp <= 0:
        return float(config["alpha"])
    progress = (epoch * steps_per_epoch + step) / (ramp * steps_per_epoch)
    return float(config["alpha"]) * min(1.0, progress)


def _report_init(logger: TrainLogger, reports: list[LoadReport | str]) -> None:
    for report in reports:
        logger.write(report.summary() if isinstance(report, LoadReport) else str(report))


def _evaluate(model: torch.nn.Module, config: Mapping[str, Any], device: torch.device,
              dtype: torch.dtype | None) -> dict[str, float]:
    """Zero-shot ITC recall on ``eval_file`` (rank 0), with chance levels alongside."""
    transform = build_image_transform("test", config["image_size"])
    dataset = RetrievalEvalDataset(config["eval_file"], transform, image_root=config.get("image_root"),
                                   max_words=config["max_words"], max_pixels=config["max_image_pixels"])
    sims = itc_similarity_matrix(unwrap(model), dataset, batch_size=max(8, config["batch_size"]),
                                 device=device, autocast_dtype=dtype)
    metrics = {f"eval_{k}": v for k, v in recall_at_k(sims, dataset.img2txt, dataset.txt2img).items()}
    metrics.update({f"chance_{k}": v for k, v in chance_recall(dataset.img2txt, len(dataset.texts)).items()})
    return metrics


def run_pretraining(config: Mapping[str, Any], *, resume: bool = False) -> RunResult:
    """Train ``config`` (a validated pretrain config) and return where it ended."""
    cfg = dict(config)
    device_pref = None if cfg["device"] == "auto" else cfg["device"]
    info = init_distributed(device_pref)
    try:
        with StopRequest() as stop:
            return _train(cfg, info, resume, stop)
    finally:
        destroy_distributed()


def _train(cfg: dict[str, Any], info: DistInfo, resume: bool, stop: StopRequest) -> RunResult:
    device = info.device
    output_dir = Path(cfg["output_dir"])
    if cfg["num_workers"] > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers + fork: no thread pools
    amp_dtype = PRECISIONS[cfg["precision"]]
    if amp_dtype is torch.float16 and device.type == "cpu" and not hasattr(torch.amp, "GradScaler"):
        raise TrainingError("precision fp16 needs torch.amp.GradScaler (torch >= 2.3)")

    # Same init on every rank (DDP also broadcasts it); per-rank streams afterwards, as BLIP.
    _seed_everything(cfg["seed"])
    tokenizer = load_tokenizer(cfg["tokenizer"])
    model = build_model("pretrain", cfg, tokenizer=tokenizer).to(device)
    _seed_everything(cfg["seed"] + info.rank)

    dataset = build_pretrain_dataset(cfg)
    loader, sampler = build_pretrain_loader(
        dataset, batch_size=cfg["batch_size"], num_workers=cfg["num_workers"], seed=cfg["seed"],
        pin_memory=device.type == "cuda", tokenizer=tokenizer, max_length=cfg["max_length"],
    )
    accum = cfg["grad_accum_steps"]
    global_batch = cfg["batch_size"] * info.world_size
    steps_per_epoch = len(dataset) // global_batch // accum
    if steps_per_epoch < 1:
        raise TrainingError(
            f"{len(dataset)} usable records are fewer than one optimizer step "
            f"(batch_size {cfg['batch_size']} x {info.world_size} processes x grad_accum_steps {accum})"
        )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["init_lr"], weight_decay=cfg["weight_decay"], fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    scheduler = LRScheduler.from_config(optimizer, cfg)

    start_epoch, start_step, global_step = 0, 0, 0
    run_skips = SkipCounter()
    existing = find_resume_checkpoint(output_dir)
    if existing is not None and not resume:
        raise TrainingError(
            f"{output_dir} already holds a run ({existing.name}); continue it with --resume "
            "or choose another --output_dir"
        )
    resumed_from = existing if resume else None
    if resumed_from is not None:
        checkpoint = load_checkpoint(resumed_from)
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as exc:
            raise TrainingError(f"{resumed_from}: does not fit this config's model ({str(exc)[:300]})") from None
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        sampler.load_state_dict(checkpoint["sampler"])
        if checkpoint.get("skips"):
            run_skips = SkipCounter.from_state_dict(checkpoint["skips"])
        start_epoch, start_step = resume_position(checkpoint)
        global_step = int(checkpoint["global_step"])
        rng = rng_state_for_this_rank(checkpoint)
        if rng is not None:
            restore_rng_state(rng)

    ddp = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                broadcast_buffers=False)  # queues are identical on every rank already
        if is_dist() else model
    )
    logger = TrainLogger(output_dir, log_every=cfg["log_every"], global_step=global_step)
    if is_main_process():
        save_config(cfg, output_dir / "config.yaml")
        n_params = sum(p.numel() for p in params)
        logger.write(f"MedVLP pretraining: {len(dataset)} pairs, {info.world_size} process(es) on {device.type}, "
                     f"{n_params / 1e6:.1f}M trainable parameters, precision {cfg['precision']}, "
                     f"{steps_per_epoch} steps/epoch")
        if device.type == "cpu" and cfg["precision"] != "fp32":
            logger.write(f"note: precision {cfg['precision']} on CPU runs, but without native bf16/fp16 matmul "
                         "instructions it is far slower than fp32 (about 15x on an AVX2 CPU, "
                         "docs/benchmarks/pretrain.md); it is meant for GPUs")
        if dataset.load_skips.total:
            logger.write(f"at load: {dataset.load_skips.summary('records')}")
        if resumed_from is not None:
            logger.write(f"resumed from {resumed_from} at epoch {start_epoch}, step {start_step} "
                         f"(global step {global_step})")
        elif resume:
            logger.write(f"--resume: no checkpoint in {output_dir}; starting from scratch")
        else:
            _report_init(logger, getattr(model, "init_reports", []))

    zero = torch.zeros((), device=device)
    nonfinite_run, nonfinite_max, nonfinite_total = zero.clone(), zero.clone(), zero.clone()
    # a resumed run that had already finished reports its last epoch, as the run that finished it did
    last_epoch = min(start_epoch, max(cfg["max_epoch"] - 1, 0))
    result = RunResult(output_dir=output_dir, global_step=global_step, epoch=last_epoch, model=model)

    def save(epoch: int, step_in_epoch: int, finished: bool) -> Path | None:
        states = gather_rng_states()  # collective
        path = None
        if is_main_process():
            ckpt = build_checkpoint(
                model=model, optimizer=optimizer, config=cfg, epoch=epoch, global_step=global_step,
                step_in_epoch=step_in_epoch, epoch_finished=finished,
                sampler_state=sampler.state_dict(consumed=(step_in_epoch - first_step) * accum * cfg["batch_size"])
                if not finished else sampler.state_dict(consumed=0),
                scaler=scaler, rng_states=states, skip_state=run_skips.state_dict(),
            )
            path = save_checkpoint(ckpt, output_dir, keep_checkpoints=cfg["keep_checkpoints"])
        barrier()
        return path

    def host_check() -> tuple[bool, int]:
        """(stop requested on any rank, longest non-finite run on any rank): one small collective."""
        flags = torch.stack([torch.tensor(float(stop.requested), device=device), nonfinite_max])
        if is_dist():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        requested, longest = flags.tolist()
        return bool(requested), int(longest)

    for epoch in range(start_epoch, cfg["max_epoch"]):
        sampler.set_epoch(epoch)
        first_step = start_step if epoch == start_epoch else 0
        logger.start_epoch(epoch, steps_per_epoch, first_step)
        if first_step == 0:
            run_skips.reset()  # (a mid-epoch resume keeps the counts saved with the checkpoint)
        step_in_epoch, micro = first_step, 0
        step_losses: dict[str, torch.Tensor] = {}
        lr = alpha = 0.0
        ddp.train()
        for batch in loader:
            if step_in_epoch >= steps_per_epoch:
                break  # micro-batches left over when len(loader) is not a multiple of grad_accum_steps
            if micro == 0:
                lr = scheduler.step(epoch, step_in_epoch)
                alpha = _alpha(cfg, epoch, step_in_epoch, steps_per_epoch)
                step_losses = {}
            run_skips.update(batch["skipped"])
            images = batch["image"].to(device, non_blocking=True)
            text_ids = batch["text_ids"].to(device, non_blocking=True)
            text_atts = batch["text_atts"].to(device, non_blocking=True)
            last_micro = micro == accum - 1
            sync = contextlib.nullcontext() if (last_micro or not is_dist()) else ddp.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    losses = ddp(images, text_ids, text_atts, alpha)
                total = sum(losses.values())
                scaler.scale(total / accum).backward()
            for name, value in losses.items():
                step_losses[name] = step_losses.get(name, zero) + value.detach().float() / accum
            micro += 1
            if not last_micro:
                continue
            micro = 0

            scaler.unscale_(optimizer)
            max_norm = cfg["grad_clip"] if cfg["grad_clip"] is not None else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
            loss_sum = sum(step_losses.values())
            finite = torch.isfinite(loss_sum)
            if not scaler.is_enabled():  # under fp16, overflowing gradients are the scaler's business
                finite = finite & torch.isfinite(grad_norm)
            if scaler.is_enabled():
                scaler.step(optimizer)  # the scaler skips steps with inf/nan gradients itself
                scaler.update()
            else:
                optimizer.found_inf = (~finite).float()  # fused AdamW skips the update on device
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            bad = (~finite).float()
            nonfinite_run = (nonfinite_run + 1) * bad
            nonfinite_max = torch.maximum(nonfinite_max, nonfinite_run)
            nonfinite_total += bad
            metrics = {k: torch.where(finite, v, zero) for k, v in step_losses.items()}
            metrics["loss"] = torch.where(finite, loss_sum, zero)
            metrics["grad_norm"] = torch.where(torch.isfinite(grad_norm), grad_norm.float(), zero)
            logger.log_step(metrics, lr=lr, samples=global_batch * accum)
            step_in_epoch += 1
            global_step += 1

            if cfg["save_every"] and global_step % cfg["save_every"] == 0:
                result.checkpoint = save(epoch, step_in_epoch, finished=False)
            if global_step % CHECK_EVERY == 0 or (not is_dist() and stop.requested):
                requested, longest = host_check()
                if longest >= cfg["max_nonfinite_steps"]:
                    path = save(epoch, step_in_epoch, finished=False)
                    logger.close()
                    raise TrainingError(
                        f"{longest} non-finite losses in a row (max_nonfinite_steps="
                        f"{cfg['max_nonfinite_steps']}) at global step {global_step}; every one was skipped. "
                        f"Checkpoint: {path or output_dir}. Lower init_lr, set grad_clip, or check the data."
                    )
                nonfinite_max.zero_()
                if requested:
                    result.checkpoint = save(epoch, step_in_epoch, finished=step_in_epoch >= steps_per_epoch)
                    logger.write(f"{stop.signal_name or 'stop request'}: saved {result.checkpoint or output_dir} "
                                 f"at epoch {epoch}, step {step_in_epoch}; resume with --resume")
                    logger.close()
                    result.global_step, result.epoch, result.stopped_by_signal = global_step, epoch, True
                    return result

        merged = run_skips.merged_across_ranks()  # collective
        extra: dict[str, Any] = {"skipped": merged.total, "skipped_by_reason": dict(merged.counts),
                                 "skipped_at_load": dataset.load_skips.total}
        extra["nonfinite_steps"] = int(all_reduce_sum(nonfinite_total.clone()).item())
        nonfinite_total.zero_()
        if cfg.get("eval_file"):
            if is_main_process():
                extra.update(_evaluate(ddp, cfg, device, amp_dtype))
            barrier()
        stats = logger.end_epoch(extra)
        if merged.total or dataset.load_skips.total:
            logger.write(f"epoch {epoch}: {merged.summary('samples')}")
            if dataset.load_skips.total:
                logger.write(f"epoch {epoch}: at load {dataset.load_skips.summary('records')}")
        result.checkpoint = save(epoch, step_in_epoch, finished=True)
        result.last_epoch_stats = stats
        result.epoch = epoch
        start_step = 0
        requested, _ = host_check()
        if requested and epoch + 1 < cfg["max_epoch"]:
            logger.write(f"{stop.signal_name or 'stop request'}: saved {result.checkpoint or output_dir} "
                         f"after epoch {epoch}; resume with --resume")
            result.stopped_by_signal = True
            break
    result.global_step = global_step
    logger.close()
    return result
