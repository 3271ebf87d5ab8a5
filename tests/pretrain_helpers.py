"""A tiny pretraining setup on disk: images, a BLIP JSON list, a tokenizer, a config."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models.tokenizer import train_wordpiece_tokenizer
from tests.conftest import TEST_CAPTIONS, TINY_TEXT, TINY_VIT
from engine.config import load_config
from tasks.pretrain import PRETRAIN_SCHEMA


def write_tiny_dataset(folder: Path, n: int = 16, seed: int = 0) -> Path:
    """``n`` small distinct images with captions; returns the JSON list path."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        pixels[: 10 + i, :] //= 3  # a band of varying height so images differ in structure
        Image.fromarray(pixels).save(folder / "images" / f"{i:03d}.png")
        records.append({"image": f"images/{i:03d}.png", "caption": TEST_CAPTIONS[i % 6] + f" case {i}",
                         "source": "test"})
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


def write_tokenizer(folder: Path) -> Path:
    out = folder / "tokenizer"
    if not out.exists():
        train_wordpiece_tokenizer(TEST_CAPTIONS + [f"case {i}" for i in range(64)], out, deterministic=True)
    return out


def tiny_pretrain_config(tmp_path: Path, **overrides) -> dict:
    """A validated config for a seconds-long CPU run (4 steps per epoch with 16 pairs)."""
    train = overrides.pop("train_file") if "train_file" in overrides else str(write_tiny_dataset(tmp_path / "data"))
    values = {
        "train_file": [train] if isinstance(train, str) else train,
        "tokenizer": str(write_tokenizer(tmp_path)),
        "text_encoder": None,
        "vit_init": None,
        "vit": dict(TINY_VIT),
        "med_config": dict(TINY_TEXT, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
        "image_size": 32,
        "embed_dim": 16,
        "queue_size": 24,
        "batch_size": 4,
        "max_epoch": 2,
        "init_lr": 1e-3,
        "warmup_steps": 2,
        "num_workers": 0,
        "log_every": 1,
        "save_every": 0,
        "output_dir": str(tmp_path / "out"),
        "device": "cpu",
        "seed": 3,
        "randaugment": True,
        "max_length": 24,
    }
    values.update(overrides)
    args = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    return load_config(None, args, PRETRAIN_SCHEMA)


def signal_after_steps(cmd: list[str], log: Path, signum: int, env: dict, steps: int = 2,
                       timeout: float = 120, group: bool = False) -> subprocess.CompletedProcess:
    """Run a training command, send it ``signum`` once ``log`` holds ``steps`` step lines; its exit and output.

    ``group``: signal its whole process group (loader workers included), as SLURM and scancel do.
    """
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=group)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not (
                log.exists() and log.read_text().count('"step"') >= steps):
            time.sleep(0.2)
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        output, _ = proc.communicate(timeout=timeout)
    finally:  # a hang fails the test instead of leaving a training process behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, output)


@contextlib.contextmanager
def raise_signal_after_step(step: int, signum: int = signal.SIGTERM):
    """In this process, deliver ``signum`` (really) right after optimizer step ``step`` is logged."""
    import engine.logger

    real_log_step = engine.logger.TrainLogger.log_step

    def log_step_then_signal(self, *args, **kwargs):
        real_log_step(self, *args, **kwargs)
        if self.global_step == step:
            signal.raise_signal(signum)

    engine.logger.TrainLogger.log_step = log_step_then_signal
    try:
        yield
    finally:
        engine.logger.TrainLogger.log_step = real_log_step
