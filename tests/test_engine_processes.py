"""The engine as a cluster meets it: signals to the whole process group, DataLoader workers on, 2 ranks.

Every subprocess is bounded in time, so a hang fails the test instead of stalling CI.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.pretrain_helpers import tiny_pretrain_config, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "engine_worker.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _torchrun() -> str | None:
    local = Path(sys.executable).parent / "torchrun"
    return str(local) if local.exists() else shutil.which("torchrun")


needs_torchrun = pytest.mark.skipif(_torchrun() is None, reason="torchrun not installed")


def _config_file(tmp_path, **overrides) -> tuple[Path, dict]:
    config = tiny_pretrain_config(tmp_path, **overrides)
    path = tmp_path / "config.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    return path, config


def _wait_for_steps(log: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count('"step"') >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {count} step lines in {log} within {timeout} s (exit {proc.poll()})")


def _signal_group_and_wait(proc: subprocess.Popen, timeout: float = 120) -> str:
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM and scancel do: the launcher, ranks and loader workers
    output, _ = proc.communicate(timeout=timeout)
    return output


# -- preemption: SIGTERM to the process group with DataLoader workers ----------------------------------

def test_sigterm_to_process_group_with_loader_workers_saves_and_exits_zero(tmp_path):
    train = write_tiny_dataset(tmp_path / "data", n=80)  # 20 steps per epoch
    config_path, config = _config_file(tmp_path, train_file=str(train), max_epoch=200, num_workers=2, log_every=1)
    cmd = [sys.executable, str(ROOT / "pretrain.py"), "--config", str(config_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for_steps(Path(config["output_dir"]) / "log.txt", 3, proc)
    output = _signal_group_and_wait(proc)
    assert proc.returncode == 0, output
    assert "killed by signal" not in output and "Traceback" not in output, output
    assert "SIGTERM: saved" in output and "stopped by signal" in output
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] >= 3
    resumed = subprocess.run(cmd + ["--resume", "max_epoch=" + str(saved["epoch"] + 1)], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "finished at epoch" in resumed.stdout
    final = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert final["epoch_finished"] and final["global_step"] == 20 * (saved["epoch"] + 1)


@needs_torchrun
def test_sigterm_to_torchrun_process_group_two_ranks_with_workers(tmp_path):
    config_path, config = _config_file(tmp_path, max_epoch=200, num_workers=2, log_every=1, batch_size=2)
    cmd = [_torchrun(), "--standalone", "--nproc_per_node=2", str(ROOT / "pretrain.py"), "--config", str(config_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for_steps(Path(config["output_dir"]) / "log.txt", 3, proc, timeout=180)
    output = _signal_group_and_wait(proc)
    # torchrun reports the signal it got with its own exit status; the ranks saved and returned normally
    assert "SIGTERM: saved" in output and "killed by signal" not in output, output
    # torchrun prints its own SignalException traceback; none comes from the ranks' code
    assert not re.search(rf'File "{ROOT}/(engine|tasks|models|data|pretrain\.py)', output), output
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert len(saved["rng"]) == 2 and saved["global_step"] >= 3
    resumed = subprocess.run(cmd + ["--resume", "max_epoch=" + str(saved["epoch"] + 1)], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout


# -- unreadable data: one clear message, non-zero exit, no hang -----------------------------------------

def test_unreadable_data_stops_with_one_message_not_a_traceback(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text(json.dumps([{"image": f"gone{i}.png", "caption": f"scan {i}"} for i in range(60)]))
    config_path, _ = _config_file(tmp_path, train_file=str(data / "train.json"), num_workers=2)
    proc = subprocess.run([sys.executable, str(ROOT / "pretrain.py"), "--config", str(config_path)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "50 images in a row could not be loaded" in proc.stderr and "check image_root" in proc.stderr
    assert str(data / "train.json") in proc.stderr


@needs_torchrun
def test_one_rank_with_unreadable_data_stops_every_rank_quickly(tmp_path):
    config_path, config = _config_file(tmp_path, max_epoch=50, num_workers=1, batch_size=2)
    start = time.time()
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", str(WORKER), "broken_rank1",
                           str(tmp_path), "0", "--", "--config", str(config_path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    elapsed = time.time() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "pretrain.py: error: 50 images in a row could not be loaded" in output, output
    assert "stopping because rank 1 failed" in output, output
    assert elapsed < 120, elapsed  # not the 30-minute collective timeout


# -- resume on another world size: every sample of the epoch exactly once -------------------------------

def _record_run(tmp_path, config_path, world, stop_at, resume=False):
    args = [str(WORKER), "record", str(tmp_path), str(stop_at), "--", "--config", str(config_path)]
    args += ["--resume"] if resume else []
    cmd = [_torchrun(), "--standalone", f"--nproc_per_node={world}"] + args if world > 1 else [sys.executable] + args
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 or (world > 1 and stop_at and "SIGTERM: saved" in proc.stdout + proc.stderr), (
        proc.stdout[-3000:] + proc.stderr[-3000:])
    seen = []
    for rank in range(world):
        path = tmp_path / f"indices_rank{rank}.json"
        seen += json.loads(path.read_text())
        path.unlink()
    return seen


@needs_torchrun
@pytest.mark.parametrize("first, second, stop_at", [(1, 2, 4), (2, 1, 2)])
def test_resume_on_another_world_size_sees_every_sample_once(tmp_path, first, second, stop_at):
    # 48 pairs, batch 4: stop after 16 samples (4 steps of 4, or 2 steps of 2 x 4), 32 left for the other world
    train = write_tiny_dataset(tmp_path / "data", n=48)
    config_path, config = _config_file(tmp_path, train_file=str(train), max_epoch=1, batch_size=4, log_every=0)
    before = _record_run(tmp_path, config_path, first, stop_at)
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert not saved["epoch_finished"] and saved["sampler"]["offset"] == 16
    after = _record_run(tmp_path, config_path, second, 0, resume=True)
    assert len(before) == 16 and len(after) == 32
    assert sorted(before + after) == list(range(48))  # each sample exactly once across the two runs


# -- resume errors reach the user as messages ------------------------------------------------------------

def _pretrain(args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "pretrain.py")] + args, cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_resume_with_changed_config_names_the_keys_and_what_to_do(tmp_path):
    config_path, config = _config_file(tmp_path, max_epoch=1)
    out = config["output_dir"]
    # the run was started with an override (batch_size=2); resuming without it must say so, not crash
    first = _pretrain(["--config", str(config_path), "batch_size=2", "max_epoch=3", "save_every=1",
                       "keep_checkpoints=1"], timeout=300)
    assert first.returncode == 0, first.stderr
    ckpt = torch.load(Path(out) / "checkpoint_last.pth", weights_only=True)
    ckpt["epoch"], ckpt["epoch_finished"], ckpt["step_in_epoch"] = 1, False, 3  # as if stopped mid-epoch 1
    ckpt["sampler"]["offset"] = 6
    torch.save(ckpt, Path(out) / "checkpoint_last.pth")
    again = _pretrain(["--config", str(config_path), "--resume", "max_epoch=3"])
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
    assert "batch_size: run 2, now 4" in again.stderr
    assert f"--config {Path(out) / 'config.yaml'} --resume" in again.stderr
    # the run's own config continues it
    ok = _pretrain(["--config", str(Path(out) / "config.yaml"), "--resume"])
    assert ok.returncode == 0 and "resumed from" in ok.stdout, ok.stderr


def test_resume_of_a_finished_run_reports_it_finished_even_with_other_overrides(tmp_path):
    config_path, config = _config_file(tmp_path, max_epoch=1)
    assert _pretrain(["--config", str(config_path), "batch_size=2"]).returncode == 0
    again = _pretrain(["--config", str(config_path), "--resume"])
    assert again.returncode == 0, again.stderr
    assert "had already finished at epoch 0" in again.stdout and "Traceback" not in again.stderr


def test_resume_when_the_data_changed_is_a_message(tmp_path):
    train = write_tiny_dataset(tmp_path / "data", n=16)
    config_path, config = _config_file(tmp_path, train_file=str(train), max_epoch=2)
    first = _pretrain(["--config", str(config_path), "save_every=1"])
    assert first.returncode == 0
    ckpt = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    ckpt["epoch"], ckpt["epoch_finished"], ckpt["sampler"]["offset"] = 1, False, 8
    torch.save(ckpt, Path(config["output_dir"]) / "checkpoint_last.pth")
    write_tiny_dataset(tmp_path / "data", n=12)  # the same file now holds fewer records
    again = _pretrain(["--config", str(config_path), "--resume"])
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
    assert "dataset length 16 -> 12" in again.stderr and "checkpoint_last.pth" in again.stderr


def test_stop_at_step_one_names_only_files_that_exist(tmp_path):
    from engine.cli import finished_message
    from engine.loop import RunResult

    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint_last.pth").write_bytes(b"x")
    message = finished_message(RunResult(output_dir=out, global_step=1, epoch=0, stopped_by_signal=True))
    assert "checkpoint" in message and "log.txt" not in message and "loss_curves.png" not in message
