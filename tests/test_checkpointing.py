"""Checkpoints: weights_only round trip, exact continuation, atomic writes, pruning, clear errors."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from data.pretrain_dataset import SkipCounter
from data.sampler import ResumableDistributedSampler
from engine.checkpoint import (
    CHECKPOINT_LAST,
    build_training_state,
    capture_rng_state,
    find_resume_checkpoint,
    gather_rng_states,
    list_checkpoints,
    load_training_state,
    read_torch_file,
    restore_rng_state,
    resume_position,
    rng_state_for_this_rank,
    save_training_state,
)
from utils.errors import CheckpointError


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    return model, opt


def _train_step(model, opt, scaler):
    x = torch.randn(5, 4)  # draws from the torch RNG, as dropout does
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def _checkpoint(model, opt, scaler, step, finished=False):
    sampler = ResumableDistributedSampler(10, seed=1)
    skips = SkipCounter()
    skips.add("missing", "/data/x.png")
    return build_training_state(
        model=model, optimizer=opt, config={"batch_size": 2, "train_file": ["a.json"], "grad_clip": None},
        epoch=1, global_step=step, step_in_epoch=3, epoch_finished=finished,
        sampler_state=sampler.state_dict(consumed=6), scaler=scaler, rng_states=gather_rng_states(),
        skip_state=skips.state_dict(),
    )


def test_resume_continues_exactly_and_loads_weights_only(tmp_path):
    model, opt = _model_and_opt()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    for _ in range(3):
        _train_step(model, opt, scaler)
    random.random(), np.random.rand()
    path = save_training_state(_checkpoint(model, opt, scaler, step=3), tmp_path)
    for _ in range(3):  # uninterrupted continuation
        _train_step(model, opt, scaler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draws = (random.random(), float(np.random.rand()))

    ckpt = load_training_state(tmp_path / CHECKPOINT_LAST)  # weights_only=True inside
    fresh, fresh_opt = _model_and_opt(seed=123)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt.load_state_dict(ckpt["optimizer"])
    fresh_scaler = torch.amp.GradScaler("cpu")
    fresh_scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(rng_state_for_this_rank(ckpt))
    for _ in range(3):
        _train_step(fresh, fresh_opt, fresh_scaler)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert (random.random(), float(np.random.rand())) == expected_draws
    assert ckpt["config"]["train_file"] == ["a.json"] and ckpt["epoch"] == 1 and ckpt["global_step"] == 3
    assert SkipCounter.from_state_dict(ckpt["skips"]).counts == {"missing": 1}
    assert path.name == "checkpoint_step_00000003.pth"
    # the whole file loads with the strict unpickler, not only through our helper
    torch.load(path, weights_only=True)


def test_rng_capture_restore_roundtrip():
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(2), random.random(), np.random.randn())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(2), random.random(), np.random.randn())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def test_resume_position():
    assert resume_position({"epoch": 2, "step_in_epoch": 7, "epoch_finished": False}) == (2, 7)
    assert resume_position({"epoch": 2, "step_in_epoch": 50, "epoch_finished": True}) == (3, 0)


def test_pruning_keeps_newest_and_last_is_newest(tmp_path):
    model, opt = _model_and_opt()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in (10, 20, 30, 40):
        save_training_state(_checkpoint(model, opt, scaler, step), tmp_path, keep_checkpoints=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_step_00000030.pth", "checkpoint_step_00000040.pth"]
    assert load_training_state(tmp_path / CHECKPOINT_LAST)["global_step"] == 40
    assert find_resume_checkpoint(tmp_path) == tmp_path / CHECKPOINT_LAST
    assert load_training_state(tmp_path / CHECKPOINT_LAST)["scaler"] is None  # disabled scaler
    save_training_state(_checkpoint(model, opt, scaler, 50), tmp_path, keep_checkpoints=None)
    assert len(list_checkpoints(tmp_path)) == 3
    save_training_state(_checkpoint(model, opt, scaler, 60), tmp_path, keep_checkpoints=0)
    assert list_checkpoints(tmp_path) == [] and load_training_state(tmp_path / CHECKPOINT_LAST)["global_step"] == 60


def test_find_resume_falls_back_to_newest_numbered(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    assert find_resume_checkpoint(tmp_path / "absent") is None
    model, opt = _model_and_opt()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in (5, 12):
        save_training_state(_checkpoint(model, opt, scaler, step), tmp_path, keep_checkpoints=None)
    (tmp_path / CHECKPOINT_LAST).unlink()
    assert find_resume_checkpoint(tmp_path).name == "checkpoint_step_00000012.pth"


def test_failed_save_leaves_previous_checkpoint_and_no_temporaries(tmp_path):
    model, opt = _model_and_opt()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    save_training_state(_checkpoint(model, opt, scaler, 1), tmp_path)
    bad = _checkpoint(model, opt, scaler, 2)
    bad["unpicklable"] = lambda: None
    with pytest.raises(Exception):
        save_training_state(bad, tmp_path)
    assert load_training_state(tmp_path / CHECKPOINT_LAST)["global_step"] == 1
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / ".checkpoint_last.pth.abc.tmp").write_bytes(b"x" * 100)  # left by a killed save
    save_training_state(_checkpoint(model, opt, scaler, 3), tmp_path)
    assert not list(tmp_path.glob(".*tmp"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _write_corrupt(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "truncated":
        model, opt = _model_and_opt()
        torch.save({"model": model.state_dict()}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("<html>not found</html>")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unsafe":
        torch.save({"model": {}, "x": _Evil()}, path)
    elif kind == "raw_pickle":
        path.write_bytes(pickle.dumps({"model": {}}, protocol=2))
    return path


@pytest.mark.parametrize(
    "kind, match",
    [
        ("truncated", "not a torch checkpoint|cannot load"),
        ("text", "not a torch checkpoint"),
        ("empty", "empty file"),
        ("unsafe", "cannot load checkpoint"),
        ("raw_pickle", "not a torch checkpoint"),
    ],
)
def test_corrupt_checkpoints_name_the_file(tmp_path, kind, match):
    path = _write_corrupt(tmp_path, kind)
    with pytest.raises(CheckpointError, match=match) as err:
        load_training_state(path)
    assert str(path) in str(err.value)


def test_model_only_checkpoint_is_refused_for_resume_with_a_hint(tmp_path):
    path = tmp_path / "model_base.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="model_base.pth: not a training checkpoint.*pretrained="):
        load_training_state(path)
    assert "model" in read_torch_file(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_training_state(tmp_path / "nope.pth")
