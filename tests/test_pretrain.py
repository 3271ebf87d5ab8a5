"""pretrain.py end to end on a tiny model: plain process, exact resume, SIGTERM, bad data, non-finite steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import engine.logger
import tasks.common
from models.blip_pretrain import BlipPretrain
from tests.pretrain_helpers import raise_signal_after_step, tiny_pretrain_config, write_tiny_dataset
from models.retrieval_eval import chance_recall
from tasks.pretrain import run_pretraining, small_eval_warning
from utils.errors import TrainingError

ROOT = Path(__file__).resolve().parents[1]


def epoch_lines(output_dir):
    lines = [json.loads(l) for l in (Path(output_dir) / "log.txt").read_text().splitlines()]
    return [l for l in lines if "step" not in l and "event" not in l]


def test_single_plain_process_without_process_group(tmp_path, monkeypatch):
    seen = []
    real_forward = BlipPretrain.forward
    monkeypatch.setattr(BlipPretrain, "forward", lambda self, *a, **k: (
        seen.append(torch.distributed.is_initialized()), real_forward(self, *a, **k))[1])
    config = tiny_pretrain_config(tmp_path)
    result = run_pretraining(config)
    assert seen and not any(seen)  # no process group at any step
    assert result.global_step == 8 and not result.stopped_by_signal
    out = Path(config["output_dir"])
    for name in ("checkpoint_last.pth", "log.txt", "loss_curves.png", "config.yaml"):
        assert (out / name).exists(), name
    epochs = epoch_lines(out)
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert {"train_loss_ita", "train_loss_itm", "train_loss_lm", "train_lr"} <= set(epochs[0])
    checkpoint = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert {"model", "optimizer", "config", "epoch"} <= set(checkpoint) and checkpoint["epoch"] == 1


def test_resume_after_sigterm_mid_epoch_equals_uninterrupted(tmp_path):
    straight = run_pretraining(tiny_pretrain_config(tmp_path / "a"))

    # Same run, SIGTERM delivered (really) after the 3rd optimizer step of epoch 0.
    config = tiny_pretrain_config(tmp_path / "b")
    with raise_signal_after_step(3):
        stopped = run_pretraining(config)
    assert stopped.stopped_by_signal and stopped.global_step == 3
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"], saved["epoch_finished"]) == (0, 3, False)

    resumed = run_pretraining(config, resume=True)
    assert resumed.global_step == straight.global_step == 8
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    # the epoch line after the resume covers the whole epoch (sums restored), as the straight run's does
    line_a, line_b = (epoch_lines(r.output_dir)[0] for r in (straight, resumed))
    assert line_b["resumed_at_step"] == 3 and "resumed_at_step" not in line_a
    for name in ("train_loss_ita", "train_loss_itm", "train_loss_lm", "train_lr"):
        assert line_b[name] == pytest.approx(line_a[name], abs=1e-6), name


def test_sigterm_subprocess_exits_zero_and_resumes(tmp_path):
    config = tiny_pretrain_config(tmp_path, max_epoch=40, num_workers=1)
    config_path = tmp_path / "config.json"  # JSON is YAML
    config_path.write_text(json.dumps(config))
    cmd = [sys.executable, str(ROOT / "pretrain.py"), "--config", str(config_path)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = Path(config["output_dir"]) / "log.txt"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count('"step"') >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "SIGTERM: saved" in output and "stopped by signal" in output
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["global_step"] >= 2
    resumed = subprocess.run(cmd + ["--resume", "max_epoch=1"] if saved["epoch"] == 0 else cmd + ["--resume"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "resumed from" in resumed.stdout + resumed.stderr, resumed.stdout + resumed.stderr


def test_bad_records_are_skipped_counted_and_named(tmp_path, capsys):
    data = tmp_path / "data"
    train = write_tiny_dataset(data, n=12)
    records = json.loads(train.read_text())
    (data / "images" / "truncated.jpg").write_bytes((data / "images" / "000.png").read_bytes()[:200])
    (data / "images" / "notes.png").write_text("not an image at all")
    records += [
        {"image": "images/missing.png", "caption": "a missing file"},
        {"image": "images/truncated.jpg", "caption": "a truncated file"},
        {"image": "images/notes.png", "caption": "a text file"},
        {"image": "images/001.png", "caption": "   "},
    ]
    train.write_text(json.dumps(records))
    config = tiny_pretrain_config(tmp_path, train_file=str(train), max_epoch=1, batch_size=3)
    result = run_pretraining(config)
    assert result.global_step == 5  # 15 usable records / 3
    (epoch,) = epoch_lines(config["output_dir"])
    assert epoch["skipped"] == 3 and epoch["skipped_at_load"] == 1
    assert epoch["skipped_by_reason"] == {"missing": 1, "truncated": 1, "not_an_image": 1}
    printed = capsys.readouterr()
    text = printed.out + printed.err
    for name in ("missing.png", "truncated.jpg", "notes.png", "train.json[15]"):
        assert name in text, name


def test_malformed_json_fails_at_start_with_position(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"image": "a.png", "caption": "x"},\n {"image": "b.png" "caption": "y"}]')
    config = tiny_pretrain_config(tmp_path, train_file=str(bad))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, str(ROOT / "pretrain.py"), "--config", str(config_path)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"{bad}:2:" in proc.stderr and "malformed JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def _nan_on(steps):
    real_forward = BlipPretrain.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        out = real_forward(self, *args, **kwargs)
        if calls["n"] in steps:
            out["loss_lm"] = out["loss_lm"] * float("nan")
        return out

    return forward


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(BlipPretrain, "forward", _nan_on({2, 3}))
    snapshots = []
    real_log_step = engine.logger.TrainLogger.log_step

    def log_step(self, *args, **kwargs):
        snapshots.append(result_model[0].itm_head.weight.detach().clone())
        real_log_step(self, *args, **kwargs)

    result_model = []
    real_build = tasks.common.build_model
    monkeypatch.setattr(tasks.common, "build_model", lambda *a, **k: result_model.append(real_build(*a, **k)) or result_model[0])
    monkeypatch.setattr(engine.logger.TrainLogger, "log_step", log_step)
    config = tiny_pretrain_config(tmp_path, max_epoch=1)
    result = run_pretraining(config)
    assert result.global_step == 4
    assert torch.equal(snapshots[0], snapshots[1]) and torch.equal(snapshots[1], snapshots[2])  # steps 2, 3 skipped
    assert not torch.equal(snapshots[2], snapshots[3])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    (epoch,) = epoch_lines(config["output_dir"])
    assert epoch["nonfinite_steps"] == 2


def test_too_many_nonfinite_steps_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(BlipPretrain, "forward", _nan_on(set(range(1, 1000))))
    config = tiny_pretrain_config(tmp_path, max_epoch=5, max_nonfinite_steps=3)
    with pytest.raises(TrainingError, match="non-finite losses in a row"):
        run_pretraining(config)
    assert (Path(config["output_dir"]) / "checkpoint_last.pth").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(tmp_path, precision, capsys):
    config = tiny_pretrain_config(tmp_path, max_epoch=1, precision=precision, grad_accum_steps=2, grad_clip=1.0)
    result = run_pretraining(config)
    assert f"precision {precision} on CPU runs, but" in capsys.readouterr().out  # the user is told it is slow
    assert result.global_step == 2  # 4 micro-batches / 2
    (epoch,) = epoch_lines(config["output_dir"])
    assert all(torch.isfinite(torch.tensor(epoch[k])) for k in ("train_loss_ita", "train_loss_itm", "train_loss_lm"))


def test_fresh_run_into_a_used_output_dir_is_refused(tmp_path):
    config = tiny_pretrain_config(tmp_path, max_epoch=1)
    run_pretraining(config)
    before = (Path(config["output_dir"]) / "checkpoint_last.pth").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run .*--resume"):
        run_pretraining(config)
    assert (Path(config["output_dir"]) / "checkpoint_last.pth").read_bytes() == before  # nothing overwritten


def test_eval_file_recall_is_logged_each_epoch_and_printed_next_to_chance(tmp_path, capsys):
    train = write_tiny_dataset(tmp_path / "data", n=16)
    records = json.loads(train.read_text())
    test_list = tmp_path / "data" / "test.json"  # BLIP's retrieval format: one image, a list of captions
    test_list.write_text(json.dumps([{"image": r["image"], "caption": [r["caption"]]} for r in records[:10]]))
    config = tiny_pretrain_config(tmp_path, train_file=str(train), eval_file=str(test_list))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    import pretrain

    assert pretrain.main(["--config", str(config_path)]) == 0
    epochs = epoch_lines(config["output_dir"])
    assert [e["epoch"] for e in epochs] == [0, 1]
    for epoch in epochs:
        # 10 images, one caption each: chance R@K = K / 10, and a recall is a multiple of 10 %
        assert [epoch[f"chance_txt_r{k}"] for k in (1, 5, 10)] == pytest.approx([10.0, 50.0, 100.0])
        assert [epoch[f"chance_img_r{k}"] for k in (1, 5, 10)] == pytest.approx([10.0, 50.0, 100.0])
        for key in ("txt", "img"):
            values = [epoch[f"eval_{key}_r{k}"] for k in (1, 5, 10)]
            assert values == sorted(values) and values[-1] == pytest.approx(100.0)
            assert all(abs(v / 10 - round(v / 10)) < 1e-6 for v in values)
    printed = capsys.readouterr().out
    assert f"zero-shot ITC retrieval on {test_list} (after epoch 1)" in printed
    assert "image -> text chance     10.0%   50.0%  100.0%" in printed
    assert "text -> image chance     10.0%   50.0%  100.0%" in printed
    # chance R@5 = 50 %: the user is told the set is too small (keys sorted: img_r10, img_r5, txt_r10, txt_r5)
    assert (f"warning: eval_file {test_list} (10 images) is too small for recall to mean much: a random ranking "
            "already scores img_r10 100%, img_r5 50%, txt_r10 100%, txt_r5 50%; use a larger evaluation set") in printed


def test_small_eval_warning_starts_at_fifty_percent_chance():
    # one caption per image: chance R@10 = 10 / images; 20 images reach 50 %, 21 stay below (47.6 %)
    assert small_eval_warning(chance_recall([[i] for i in range(21)], 21), "x") is None
    assert small_eval_warning(chance_recall([[i] for i in range(20)], 20), "x").endswith(
        "a random ranking already scores img_r10 50%, txt_r10 50%; use a larger evaluation set")
