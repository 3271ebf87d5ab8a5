"""BLIP's ITC and ITM objectives as small pure functions (the LM loss lives in ``med.lm_loss``).

Kept apart from the models so each can be checked against hand-computed
values, and so pretraining and retrieval share one implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["similarity_logits", "soft_cross_entropy", "itc_loss", "distilled_targets", "sample_hard_negatives", "itm_loss"]


def similarity_logits(features: torch.Tensor, bank: torch.Tensor, temp: torch.Tensor | float) -> torch.Tensor:
    """``features @ bank / temp`` in float32, also inside ``torch.autocast``.

    Autocast casts every matmul to bf16/fp16, even of fp32 inputs; for ITC that
    would quantise the logits, the distillation targets, the hard-negative
    weights and temp's gradient (bf16 keeps 8 bits of mantissa, and these
    logits reach 1/0.07 = 14). So the similarity runs with autocast off.
    """
    with torch.autocast(features.device.type, enabled=False):
        temp = temp.float() if isinstance(temp, torch.Tensor) else temp
        return features.float() @ bank.float() / temp


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets_ij * log_softmax(logits)_ij``."""
    return -(F.log_softmax(logits.float(), dim=1) * targets).sum(dim=1).mean()


def distilled_targets(sim_momentum: torch.Tensor, positives: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """BLIP's momentum distillation: ``alpha * softmax(sim_m) + (1 - alpha) * positives``.

    ``positives`` rows sum to one (one-hot in pretraining, uniform over the
    captions of the same image in retrieval).
    """
    return alpha * F.softmax(sim_momentum.float(), dim=1) + (1 - alpha) * positives


def itc_loss(
    sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, targets_i2t: torch.Tensor, targets_t2i: torch.Tensor
) -> torch.Tensor:
    """Image-text contrastive loss: mean of the two soft cross-entropies."""
    return (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2


@torch.no_grad()
def sample_hard_negatives(
    sim: torch.Tensor,
    exclude: torch.Tensor,
    smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one column per row with probability proportional to ``softmax(sim) + smoothing``, excluded columns 0.

    This is BLIP's ``torch.multinomial(weights, 1)`` (pretraining adds
    ``smoothing=1e-4``, retrieval 0) done with the Gumbel-max trick: the same
    distribution, vectorised, no host sync, and no crash when a row has no
    candidate at all (batch size 1, or every sample of the batch shows the same
    image; BLIP issue #76). Such rows come back with ``valid=False`` and must be
    left out of the ITM loss. Non-finite similarities are treated as 0.

    Returns ``(index, valid)``: LongTensor and BoolTensor of shape ``(rows,)``.
    """
    sim = torch.nan_to_num(sim.float(), nan=0.0, posinf=1e4, neginf=-1e4)
    weights = (F.softmax(sim, dim=1) + smoothing).masked_fill(exclude, 0.0)
    valid = (weights > 0).any(dim=1)
    # argmax(log w - log E), E ~ Exp(1), picks j with probability w_j / sum(w).
    noise = torch.empty_like(weights).exponential_(generator=generator)
    index = (weights.log() - noise.log()).argmax(dim=1)
    return index, valid


def itm_loss(logits: torch.Tensor, valid_neg_image: torch.Tensor, valid_neg_text: torch.Tensor) -> torch.Tensor:
    """Image-text matching cross-entropy over [B positives, B negative images, B negative texts].

    With every negative valid this is BLIP's plain mean over 3B pairs; rows
    whose negative could not be drawn are left out of the mean.
    """
    batch = valid_neg_image.shape[0]
    labels = torch.cat([
        torch.ones(batch, dtype=torch.long, device=logits.device),
        torch.zeros(2 * batch, dtype=torch.long, device=logits.device),
    ])
    weight = torch.cat([
        torch.ones(batch, device=logits.device),
        valid_neg_image.float(),
        valid_neg_text.float(),
    ])
    per_pair = F.cross_entropy(logits.float(), labels, reduction="none")
    return (per_pair * weight).sum() / weight.sum()
