"""BLIP's learning-rate schedules against hand-computed values."""

import pytest
import torch

from engine.schedule import LRScheduler, cosine_lr, step_lr, warmup_lr


def test_warmup_hand_values():
    # warmup_lr 1e-6 -> init 3e-4 over 3000 steps: step 1500 is halfway: 1e-6 + 2.99e-4 / 2
    assert warmup_lr(0, 3000, 1e-6, 3e-4) == pytest.approx(1e-6)
    assert warmup_lr(1500, 3000, 1e-6, 3e-4) == pytest.approx(1.505e-4)
    assert warmup_lr(3000, 3000, 1e-6, 3e-4) == pytest.approx(3e-4)
    assert warmup_lr(9999, 3000, 1e-6, 3e-4) == pytest.approx(3e-4)  # capped at init_lr
    assert warmup_lr(5, 0, 1e-6, 3e-4) == 3e-4


def test_step_decay_hand_values():
    assert step_lr(0, 3e-4, 1e-6, 0.9) == pytest.approx(3e-4)
    assert step_lr(1, 3e-4, 1e-6, 0.9) == pytest.approx(2.7e-4)
    assert step_lr(2, 3e-4, 1e-6, 0.9) == pytest.approx(2.43e-4)
    assert step_lr(19, 3e-4, 1e-6, 0.9) == pytest.approx(3e-4 * 0.1350852, rel=1e-6)  # 0.9**19
    assert step_lr(100, 3e-4, 1e-6, 0.9) == 1e-6  # floor


def test_cosine_hand_values():
    assert cosine_lr(0, 10, 1e-4, 0.0) == pytest.approx(1e-4)
    assert cosine_lr(5, 10, 1e-4, 0.0) == pytest.approx(5e-5)
    assert cosine_lr(10, 10, 1e-4, 1e-6) == pytest.approx(1e-6)
    # epoch 2 of 6: cos(pi/3) = 0.5 -> 0.75 of the range above min
    assert cosine_lr(2, 6, 1e-4, 1e-5) == pytest.approx(1e-5 + 0.75 * 9e-5)


def _opt():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.0)


def test_scheduler_sets_every_group_and_follows_blip_phases():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "weight_decay": 0.0}], lr=1.0)
    sched = LRScheduler(opt, init_lr=1e-3, min_lr=1e-5, warmup_lr=1e-4, warmup_steps=10, lr_decay_rate=0.5,
                        max_epoch=4)
    assert sched.step(0, 0) == pytest.approx(1e-4)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-4)] * 2
    assert sched.step(0, 5) == pytest.approx(5.5e-4)
    assert sched.step(0, 50) == pytest.approx(1e-3)
    # warmup belongs to epoch 0 only, as in BLIP: epoch 1 step 0 is the decayed value
    assert sched.step(1, 0) == pytest.approx(5e-4)
    assert sched.step(3, 7) == pytest.approx(1.25e-4)
    cos = LRScheduler(opt, init_lr=1e-3, min_lr=0.0, warmup_lr=0.0, warmup_steps=0, max_epoch=4, schedule="cosine")
    assert cos.step(0, 3) == pytest.approx(1e-3)
    assert cos.step(2, 0) == pytest.approx(5e-4)


def test_from_config_and_bad_schedule():
    cfg = dict(init_lr=3e-4, min_lr=1e-6, warmup_lr=1e-6, warmup_steps=3000, lr_decay_rate=0.9, max_epoch=20,
               lr_schedule="step")
    sched = LRScheduler.from_config(_opt(), cfg)
    assert sched.lr_at(2, 0) == pytest.approx(2.43e-4)
    with pytest.raises(ValueError, match="linear"):
        LRScheduler(_opt(), init_lr=1, min_lr=0, warmup_lr=0, warmup_steps=0, schedule="linear")
