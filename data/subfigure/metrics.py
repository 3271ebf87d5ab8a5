"""Scores for the splitter: ImageCLEF panel splitting, label accuracy, caption splitting.

The panel score is the ImageCLEF 2016 compound-figure-separation measure: a
predicted box is correct when the area it shares with a not yet matched
ground-truth panel is more than 66 % of its own area; a figure scores
``correct / max(#ground truth, #predicted)`` and a set scores the mean.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

__all__ = [
    "match_panels",
    "panel_split_score",
    "caption_tokens",
    "token_f1",
    "caption_split_scores",
]

Box = tuple[int, int, int, int]
OVERLAP_THRESHOLD = 0.66


def _intersection(a: Box, b: Box) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def match_panels(pred: Sequence[Box], gt: Sequence[Box]) -> list[int | None]:
    """For each predicted box, the index of the ground-truth panel it correctly hits (or ``None``).

    Predictions are taken in order; each ground-truth panel is matched once.
    """
    used: set[int] = set()
    out: list[int | None] = []
    for p in pred:
        area = max(1, (p[2] - p[0]) * (p[3] - p[1]))
        best, best_ratio = None, OVERLAP_THRESHOLD
        for j, g in enumerate(gt):
            if j in used:
                continue
            ratio = _intersection(p, g) / area
            if ratio > best_ratio:
                best, best_ratio = j, ratio
        if best is not None:
            used.add(best)
        out.append(best)
    return out


def panel_split_score(pred: Sequence[Box], gt: Sequence[Box]) -> float:
    """ImageCLEF score of one figure: correct / max(#gt, #pred)."""
    denom = max(len(gt), len(pred))
    if denom == 0:
        return 1.0
    correct = sum(m is not None for m in match_panels(pred, gt))
    return correct / denom


_TOKEN = re.compile(r"[a-z0-9]+")


def caption_tokens(text: str) -> list[str]:
    """Lower-case word tokens; punctuation and markers' brackets do not count."""
    return _TOKEN.findall(text.lower())


def token_f1(pred: str, gold: str) -> float:
    """Bag-of-tokens F1 (as in SQuAD) between two texts; 1.0 when both are empty."""
    p, g = Counter(caption_tokens(pred)), Counter(caption_tokens(gold))
    if not p and not g:
        return 1.0
    common = sum((p & g).values())
    if common == 0:
        return 0.0
    precision = common / sum(p.values())
    recall = common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def caption_split_scores(pred: Sequence[tuple[str, str]], gold: Sequence[tuple[str, str]]) -> tuple[bool, float]:
    """(label sets equal, mean token F1 over the union of labels) for one caption.

    Labels compare case-insensitively; a label missing on either side scores 0.
    A caption that is correctly found not compound (both empty) scores (True, 1.0).
    """
    p = {label.lower(): text for label, text in pred}
    g = {label.lower(): text for label, text in gold}
    exact = set(p) == set(g)
    labels = set(p) | set(g)
    if not labels:
        return exact, 1.0
    f1 = sum(token_f1(p[k], g[k]) if k in p and k in g else 0.0 for k in labels) / len(labels)
    return exact, f1
