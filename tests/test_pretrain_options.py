"""pretrain.py behaviour the README promises: the alpha ramp, SIGINT as SIGTERM, numbered checkpoints, notes."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import engine.logger
from models.blip_pretrain import BlipPretrain
from tasks.pretrain import run_pretraining
from tests.pretrain_helpers import signal_after_steps, tiny_pretrain_config

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("rampup, expected", [
    # 16 pairs / batch 4 = 4 steps per epoch, 2 epochs; alpha 0.4 x (global step / (rampup x 4)), capped
    (2, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35]),  # BLIP's default: still ramping at the end
    (0.5, [0.0, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]),
    (0, [0.4] * 8),  # no ramp
])
def test_alpha_ramps_over_alpha_rampup_epochs(tmp_path, monkeypatch, rampup, expected):
    alphas = []
    real_forward = BlipPretrain.forward

    def forward(self, image, text_ids, text_atts, alpha, **kwargs):
        alphas.append(alpha)
        return real_forward(self, image, text_ids, text_atts, alpha, **kwargs)

    monkeypatch.setattr(BlipPretrain, "forward", forward)
    run_pretraining(tiny_pretrain_config(tmp_path, alpha=0.4, alpha_rampup_epochs=rampup))
    assert alphas == pytest.approx(expected)


@pytest.fixture
def default_sigint():
    """SIGINT as an interactive Python has it (a job started in the background inherits SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_saves_and_stops_like_sigterm_and_a_second_one_stops_at_once(tmp_path, monkeypatch, default_sigint):
    real_log_step = engine.logger.TrainLogger.log_step
    signals = {"count": 1}

    def log_step_then_interrupt(self, *args, **kwargs):
        real_log_step(self, *args, **kwargs)
        if self.global_step == 3:
            # without a handler Ctrl-C would abort pytest itself: fail as a test instead
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler, "no SIGINT handler"
            for _ in range(signals["count"]):
                signal.raise_signal(signal.SIGINT)  # Ctrl-C

    monkeypatch.setattr(engine.logger.TrainLogger, "log_step", log_step_then_interrupt)
    config = tiny_pretrain_config(tmp_path / "once")
    stopped = run_pretraining(config)
    assert stopped.stopped_by_signal and stopped.global_step == 3
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"], saved["epoch_finished"]) == (0, 3, False)

    signals["count"] = 2
    config = tiny_pretrain_config(tmp_path / "twice")
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(config)
    assert not (Path(config["output_dir"]) / "checkpoint_last.pth").exists()  # stopped at once: nothing saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back


def test_sigint_to_a_plain_process_exits_zero_with_a_checkpoint(tmp_path):
    config = tiny_pretrain_config(tmp_path, max_epoch=200)
    config_path = tmp_path / "config.json"  # JSON is YAML
    config_path.write_text(json.dumps(config))
    stopped = signal_after_steps([sys.executable, str(ROOT / "pretrain.py"), "--config", str(config_path)],
                                 Path(config["output_dir"]) / "log.txt", signal.SIGINT, ENV)
    assert stopped.returncode == 0, stopped.stdout
    assert "SIGINT: saved" in stopped.stdout and "stopped by signal" in stopped.stdout
    assert "Traceback" not in stopped.stdout
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] >= 2


def test_numbered_checkpoints_appear_every_save_every_steps_and_are_pruned(tmp_path, monkeypatch):
    listings = []
    out = tmp_path / "out"
    real_forward = BlipPretrain.forward

    def forward(self, *args, **kwargs):  # what output_dir holds before each step
        listings.append(sorted(int(p.stem.split("_")[-1]) for p in out.glob("checkpoint_step_*.pth")))
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(BlipPretrain, "forward", forward)
    run_pretraining(tiny_pretrain_config(tmp_path, save_every=3, keep_checkpoints=2))
    # saves after steps 3 (save_every), 4 (end of epoch 0), 6 (save_every), 8 (end of epoch 1); 2 kept
    assert listings == [[], [], [], [3], [3, 4], [3, 4], [4, 6], [4, 6]]
    assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == [
        "checkpoint_last.pth", "checkpoint_step_00000006.pth", "checkpoint_step_00000008.pth"]
    step_6 = torch.load(out / "checkpoint_step_00000006.pth", weights_only=True)
    assert (step_6["global_step"], step_6["epoch"], step_6["step_in_epoch"]) == (6, 1, 2)


def test_note_when_train_file_comes_from_the_command_line_but_eval_file_from_the_config(tmp_path):
    from engine.cli import build_parser, load_cli_config
    from tasks.pretrain import PretrainTask

    config = tmp_path / "demo.yaml"
    config.write_text("train_file: demo.json\neval_file: phantom_test.json\n")

    def notes(*overrides):
        args = build_parser("pretrain.py", "").parse_args(["--config", str(config), *overrides])
        return load_cli_config(PretrainTask(), args)[1]

    (note,) = notes("train_file=mine.json")
    assert note == (f"note: train_file was set on the command line but eval_file (phantom_test.json) comes from "
                    f"{config}:2; set eval_file=... (or eval_file=null) if it does not belong to your data")
    assert notes() == [] and notes("train_file=mine.json", "eval_file=mine_test.json") == []
    assert notes("train_file=mine.json", "eval_file=null") == []


def test_grad_clip_bounds_the_global_norm_and_the_log_keeps_the_norm_before_clipping(tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step
    norms_at_step = []

    def step(self, *args, **kwargs):  # the gradients the update actually uses
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms_at_step.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    config = tiny_pretrain_config(tmp_path, grad_clip=1.0, log_every=1, max_epoch=1)
    run_pretraining(config)
    logged = [json.loads(l)["train_grad_norm"] for l in (Path(config["output_dir"]) / "log.txt").read_text().splitlines()
              if '"step"' in l]
    assert len(norms_at_step) == len(logged) == 4
    assert all(n <= 1.0 + 1e-5 for n in norms_at_step)  # clipped to grad_clip
    assert all(n > 1.0 for n in logged)  # this tiny model's raw norms are far above 1: the log shows them
    assert all(abs(n - 1.0) < 1e-4 for n in norms_at_step)  # and clipping scaled each one down to exactly 1
