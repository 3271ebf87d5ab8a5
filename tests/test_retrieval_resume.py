"""train_retrieval.py on the shared engine: SIGTERM mid-epoch and --resume give the uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine.loop
import train_retrieval
from tasks.retrieval import RetrievalTask, run_retrieval
from tests.conftest import TINY_TEXT
from tests.pretrain_helpers import raise_signal_after_step, signal_after_steps
from tests.test_retrieval_task import tiny_retrieval_config

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
DROPOUT = dict(TINY_TEXT, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # RNG restore matters


def _lines(output_dir):
    return [json.loads(l) for l in (Path(output_dir) / "log.txt").read_text().splitlines()]


def _epoch_lines(output_dir):
    return [l for l in _lines(output_dir) if "epoch" in l and "step" not in l and "event" not in l]


SETTINGS = dict(med_config=DROPOUT, hflip=0.5, k_test=3)  # dropout + flips + RandomAugment: RNG and sampler


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with (2 epochs of 8 steps, val + test)."""
    return run_retrieval(tiny_retrieval_config(tmp_path_factory.mktemp("straight"), **SETTINGS))


def _assert_same_run(straight, resumed):
    """Same weights, queues, epoch lines (train means and val) and results.json as the uninterrupted run."""
    assert resumed.global_step == straight.global_step == 16  # 32 pairs / 4 x 2 epochs
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:  # weights, momentum copies, queues and the idx queue
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    lines_a, lines_b = _epoch_lines(straight.output_dir), _epoch_lines(resumed.output_dir)
    assert [l["epoch"] for l in lines_b] == [0, 1]
    for line_a, line_b in zip(lines_a, lines_b):  # epoch means cover the whole epoch; val on the same weights
        for name in ("train_loss_ita", "train_loss_itm", "train_lr", "val_r_mean", "val_txt_r1", "val_img_r1"):
            assert line_b[name] == pytest.approx(line_a[name], abs=1e-6), name
    results_a, results_b = (json.loads((Path(r.output_dir) / "results.json").read_text()) for r in (straight, resumed))
    assert results_b.keys() == results_a.keys() == {"val", "test"}
    for split in results_a:
        for key, value in results_a[split].items():
            assert results_b[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_retrieval_resume_after_sigterm_mid_epoch_equals_uninterrupted(straight, tmp_path):
    config = tiny_retrieval_config(tmp_path, **SETTINGS)
    with raise_signal_after_step(3):  # the real handler: finish the step, save, stop
        stopped = run_retrieval(config)
    assert stopped.stopped_by_signal and stopped.global_step == 3
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"], saved["epoch_finished"]) == (0, 3, False)
    assert not (Path(config["output_dir"]) / "results.json").exists()  # the test split waits for the end

    resumed = run_retrieval(config, resume=True)
    assert _epoch_lines(config["output_dir"])[0]["resumed_at_step"] == 3
    _assert_same_run(straight, resumed)


def test_resume_with_other_execution_keys_and_loader_workers_equals_uninterrupted(straight, tmp_path):
    """num_workers, log_every, save_every, keep_checkpoints may change on --resume; the run stays the same."""
    config = tiny_retrieval_config(tmp_path, **SETTINGS)
    with raise_signal_after_step(5):
        assert run_retrieval(config).global_step == 5
    changed = tiny_retrieval_config(tmp_path, **SETTINGS, num_workers=2, log_every=3, save_every=4,
                                    keep_checkpoints=1)
    _assert_same_run(straight, run_retrieval(changed, resume=True))
    numbered = sorted(p.name for p in Path(config["output_dir"]).glob("checkpoint_step_*.pth"))
    assert numbered == ["checkpoint_step_00000016.pth"]  # keep_checkpoints=1 of steps 5, 8, 12, 16


def test_signal_before_the_epoch_end_evaluation_runs_it_first_on_resume(straight, tmp_path, monkeypatch, capsys):
    """SIGTERM while the epoch-end checkpoint is written: the run stops; --resume evaluates that epoch first."""
    config = tiny_retrieval_config(tmp_path, **SETTINGS)
    real_save = engine.loop.Trainer._save

    def save_then_signal(self, position, *, finished, epoch_stats=None):
        path = real_save(self, position, finished=finished, epoch_stats=epoch_stats)
        if finished and position[0] == 0:
            signal.raise_signal(signal.SIGTERM)
        return path

    monkeypatch.setattr(engine.loop.Trainer, "_save", save_then_signal)
    stopped = run_retrieval(config)
    assert stopped.stopped_by_signal and stopped.global_step == 8
    assert "SIGTERM: saved" in capsys.readouterr().out and _epoch_lines(config["output_dir"]) == []  # not evaluated
    monkeypatch.setattr(engine.loop.Trainer, "_save", real_save)
    _assert_same_run(straight, run_retrieval(config, resume=True))


def test_signal_during_the_evaluation_stops_after_it(straight, tmp_path, monkeypatch, capsys):
    """SIGTERM while epoch 0 is validated: the evaluation finishes and the run stops before epoch 1."""
    config = tiny_retrieval_config(tmp_path, **SETTINGS)
    real_evaluate = RetrievalTask.evaluate

    def evaluate_with_signal(self, *args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(RetrievalTask, "evaluate", evaluate_with_signal)
    stopped = run_retrieval(config)
    assert stopped.stopped_by_signal and stopped.global_step == 8  # no step of epoch 1
    assert "after the evaluation of epoch 0; resume with --resume" in capsys.readouterr().out
    assert [l["epoch"] for l in _epoch_lines(config["output_dir"])] == [0]
    monkeypatch.setattr(RetrievalTask, "evaluate", real_evaluate)
    _assert_same_run(straight, run_retrieval(config, resume=True))


def test_resume_in_an_empty_output_dir_starts_from_scratch(tmp_path, capsys):
    settings = dict(max_epoch=1, val_file=None, test_file=None)
    fresh = run_retrieval(tiny_retrieval_config(tmp_path / "a", **settings))
    config = tiny_retrieval_config(tmp_path / "b", **settings)
    config_path = tmp_path / "b.json"  # JSON is YAML
    config_path.write_text(json.dumps(config))
    assert train_retrieval.main(["--config", str(config_path), "--resume"]) == 0
    assert f"--resume: no checkpoint in {config['output_dir']}; starting from scratch" in capsys.readouterr().out
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] == 8 and saved["epoch_finished"]
    for key, value in fresh.model.state_dict().items():  # the same run as one started without --resume
        assert torch.allclose(saved["model"][key].float(), value.float(), atol=1e-6), key


def test_sigterm_to_train_retrieval_exits_zero_and_resume_finishes_the_run(tmp_path):
    config = tiny_retrieval_config(tmp_path, max_epoch=50, k_test=3, num_workers=2)
    config_path = tmp_path / "config.json"  # JSON is YAML
    config_path.write_text(json.dumps(config))
    cmd = [sys.executable, str(ROOT / "train_retrieval.py"), "--config", str(config_path)]
    # the whole process group, loader workers included, as SLURM and scancel signal a job
    stopped = signal_after_steps(cmd, Path(config["output_dir"]) / "log.txt", signal.SIGTERM, ENV, group=True)
    assert stopped.returncode == 0, stopped.stdout
    assert "SIGTERM: saved" in stopped.stdout and "stopped by signal" in stopped.stdout
    assert "Traceback" not in stopped.stdout and "killed by signal" not in stopped.stdout
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] >= 2 and not (Path(config["output_dir"]) / "results.json").exists()
    end = saved["epoch"] + 1  # execution-only key: the run may be shortened on resume
    resumed = subprocess.run(cmd + ["--resume", f"max_epoch={end}"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "test: {'txt_r1'" in resumed.stdout
    final = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert final["epoch_finished"] and final["global_step"] == 8 * end  # 32 pairs / 4 per epoch
    assert set(json.loads((Path(config["output_dir"]) / "results.json").read_text())) == {"val", "test"}


def test_extending_a_finished_run_keeps_the_best_checkpoint_of_the_earlier_epochs(tmp_path, monkeypatch):
    """The best epoch is remembered across a resume: a worse later epoch does not replace checkpoint_best.pth."""
    val_r_mean = {0: 60.0, 1: 40.0}  # epoch 1 validates worse than epoch 0
    real_evaluate = RetrievalTask.evaluate
    evaluated = []

    def evaluate(self, *args, **kwargs):
        metrics = real_evaluate(self, *args, **kwargs)
        metrics["val_r_mean"] = val_r_mean[len(evaluated)]
        evaluated.append(metrics["val_r_mean"])
        return metrics

    monkeypatch.setattr(RetrievalTask, "evaluate", evaluate)
    config = tiny_retrieval_config(tmp_path, max_epoch=1, k_test=3, test_file=None)
    run_retrieval(config)
    out = Path(config["output_dir"])
    assert torch.load(out / "checkpoint_best.pth", weights_only=True)["epoch"] == 0
    extended = tiny_retrieval_config(tmp_path, max_epoch=2, k_test=3, test_file=None)  # max_epoch may change
    run_retrieval(extended, resume=True)
    assert evaluated == [60.0, 40.0]
    best = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert (best["epoch"], best["metrics"]["val_r_mean"]) == (0, 60.0)
    assert json.loads((out / "results.json").read_text())["val"]["val_r_mean"] == 60.0


def test_run_killed_during_the_final_test_evaluation_runs_it_on_resume(tmp_path, monkeypatch):
    """The last epoch is saved and logged before the test split runs: a kill there must not leave the run
    'finished' without results.json; --resume runs the test, and a further --resume reports the finished run."""
    config = tiny_retrieval_config(tmp_path, max_epoch=1, k_test=3)
    real_finish = RetrievalTask.finish
    calls = []

    def killed_in_finish(self, trainer):
        calls.append(trainer.global_step)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as a kill -9 during the test evaluation: nothing after it runs
        return real_finish(self, trainer)

    monkeypatch.setattr(RetrievalTask, "finish", killed_in_finish)
    with pytest.raises(KeyboardInterrupt):
        run_retrieval(config)
    out = Path(config["output_dir"])
    assert not (out / "results.json").exists() and _epoch_lines(out)[-1]["epoch"] == 0
    resumed = run_retrieval(config, resume=True)
    assert calls == [8, 8] and not resumed.already_finished  # nothing trained again, the test split evaluated
    assert set(json.loads((out / "results.json").read_text())) == {"val", "test"}
    assert [l["epoch"] for l in _lines(out) if l.get("event") == "finished"] == [0]
    again = run_retrieval(config, resume=True)
    assert again.already_finished and calls == [8, 8]
