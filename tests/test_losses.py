"""ITC / ITM / LM loss functions against hand-computed values; sampling and queue properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.blip_base import ring_enqueue
from models.losses import distilled_targets, itc_loss, itm_loss, sample_hard_negatives, soft_cross_entropy
from models.med import lm_loss

LN2, LN3 = math.log(2), math.log(3)


def test_soft_cross_entropy_hand_value():
    # softmax([0, ln3]) = [1/4, 3/4]; -(0.5 ln 1/4 + 0.5 ln 3/4) = 0.836988
    value = soft_cross_entropy(torch.tensor([[0.0, LN3]]), torch.tensor([[0.5, 0.5]]))
    assert value.item() == pytest.approx(0.836988, abs=1e-6)


def test_itc_target_mixing_hand_value():
    targets = distilled_targets(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]), alpha=0.4)
    assert targets.tolist()[0] == pytest.approx([0.7, 0.3], abs=1e-6)  # 0.4*[.25,.75] + 0.6*[1,0]
    # alpha = 0: plain one-hot contrastive loss
    sim = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    hard = itc_loss(sim, sim, torch.eye(2), torch.eye(2))
    assert hard.item() == pytest.approx(F.cross_entropy(sim, torch.arange(2)).item(), abs=1e-6)


def test_itm_loss_labels_and_invalid_rows():
    # rows: [positive, (text, negative image), (negative text, image)], B = 1
    logits = torch.tensor([[0.0, LN3], [LN3, 0.0], [0.0, 0.0]])
    every = itm_loss(logits, torch.tensor([True]), torch.tensor([True]))
    assert every.item() == pytest.approx((2 * -math.log(0.75) + LN2) / 3, abs=1e-6)  # 0.422837
    no_text_negative = itm_loss(logits, torch.tensor([True]), torch.tensor([False]))
    assert no_text_negative.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_lm_loss_label_smoothing_and_padding_hand_value():
    # vocab 3; position 0 predicts label 0 with softmax [0.5, 0.25, 0.25]
    # smoothed CE = 0.9 * ln2 + 0.1 * (ln2 + ln4 + ln4) / 3 = 0.739357
    logits = torch.zeros(2, 3, 3)
    logits[0, 0] = torch.tensor([LN2, 0.0, 0.0])
    labels = torch.tensor([[5, 0, -100], [7, -100, -100]])  # label 0 ignored (shifted); padding ignored
    assert lm_loss(logits, labels, 0.1).item() == pytest.approx(0.739357, abs=1e-6)
    per_sequence = lm_loss(logits, labels, 0.1, reduction="none")
    assert per_sequence.tolist() == pytest.approx([0.739357, 0.0], abs=1e-6)
    with pytest.raises(ValueError):
        lm_loss(logits, labels, 0.1, reduction="sum")


def test_hard_negative_sampling_matches_multinomial_distribution():
    torch.manual_seed(0)
    rows = 40000
    sim = torch.tensor([[0.0, LN2, LN3, 5.0]]).expand(rows, -1)
    exclude = torch.tensor([[False, False, False, True]]).expand(rows, -1)
    index, valid = sample_hard_negatives(sim, exclude)
    assert valid.all()
    freq = torch.bincount(index, minlength=4).float() / rows
    assert freq[3] == 0
    assert freq[:3].tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=0.01)
    reference = torch.multinomial(torch.tensor([1.0, 2.0, 3.0]), rows, replacement=True)
    ref_freq = torch.bincount(reference, minlength=3).float() / rows
    assert (freq[:3] - ref_freq).abs().max() < 0.015


def test_hard_negative_sampling_degenerate_rows_do_not_crash():
    # batch of one (BLIP issue #76): no candidate at all
    index, valid = sample_hard_negatives(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), smoothing=1e-4)
    assert valid.tolist() == [False] and index.shape == (1,)
    # every sample shows the same image: all candidates are positives
    index, valid = sample_hard_negatives(torch.randn(3, 3), torch.ones(3, 3, dtype=torch.bool))
    assert not valid.any()
    # non-finite similarities are tolerated and never pick an excluded column
    sim = torch.tensor([[float("nan"), float("inf"), 1.0], [float("-inf"), 0.0, float("nan")]])
    exclude = torch.eye(3, dtype=torch.bool)[:2]
    index, valid = sample_hard_negatives(sim, exclude)
    assert valid.all() and not exclude[torch.arange(2), index].any()


def test_ring_enqueue_wraps_and_keeps_last_rows():
    queue = torch.zeros(2, 5)
    ptr = torch.tensor([3])
    values = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    ring_enqueue([queue], [values], ptr)
    assert queue[0].tolist() == [3, 0, 0, 1, 2] and ptr.item() == 1  # 3 rows into a queue of 5: no assert
    many = torch.arange(1.0, 8.0).unsqueeze(1).expand(7, 2)  # 7 rows > 5 slots: rows 3..7 kept
    ring_enqueue([queue], [many], ptr)
    assert sorted(queue[0].tolist()) == [3, 4, 5, 6, 7] and ptr.item() == (1 + 7) % 5
    ids = torch.full((1, 5), -100)
    ring_enqueue([ids], [torch.tensor([9, 8])], torch.tensor([4]))
    assert ids.tolist() == [[8, -100, -100, -100, 9]]


def test_ring_enqueue_refuses_non_finite_features():
    queue = torch.zeros(2, 4)
    ptr = torch.tensor([1])
    ring_enqueue([queue], [torch.tensor([[float("nan"), 1.0]])], ptr)
    assert queue.abs().sum() == 0 and ptr.item() == 1
