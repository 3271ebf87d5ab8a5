"""Pairing panels with subcaptions: by OCR'd label, else by reading order, else not at all.

OCR readings are matched to caption labels case-insensitively and through the
usual recogniser confusions ("1"/"l"/"I", "0"/"O", "5"/"S", "8"/"B", ...).
Panels and labels that OCR left unpaired are paired in reading order when
their numbers agree and the result keeps the OCR'd pairs in order. A figure
whose caption labels cannot all be given a panel is not split (the caller
keeps it whole with its full caption and counts it as unmatched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from data.subfigure.captions import label_scheme
from data.subfigure.ocr import LabelCandidate

__all__ = ["Pair", "align", "labels_equivalent"]

# Characters a recogniser confuses in isolated labels (both directions).
_CONFUSABLE = {
    "1": "il|!", "l": "1i|I", "i": "1l|!", "0": "o", "o": "0", "5": "s", "s": "5",
    "8": "b", "b": "8", "2": "z", "z": "2", "6": "g", "g": "6", "9": "g",
}
# Discount for matches that need a confusion or a non-top reading.
CONFUSION_FACTOR = 0.7
NON_TOP_FACTOR = 0.8
# Weaker evidence than this (a faint reading from another corner) does not pair a panel.
MIN_EVIDENCE = 0.35


@dataclass(frozen=True)
class Pair:
    """Panel ``panel`` (index into the panel list) gets caption label ``label`` and ``subcaption``."""

    panel: int
    label: str
    subcaption: str
    method: str  # "ocr" | "order"


def labels_equivalent(read: str, label: str) -> float:
    """1.0 when an OCR reading equals a caption label (ignoring case), CONFUSION_FACTOR when
    it does after undoing typical recogniser confusions, 0.0 otherwise."""
    a, b = read.lower(), label.lower()
    if a == b:
        return 1.0
    if len(a) != len(b):
        return 0.0
    for x, y in zip(a, b):
        if x != y and y not in _CONFUSABLE.get(x, "").lower():
            return 0.0
    return CONFUSION_FACTOR


def _rank(label: str) -> tuple[int, int]:
    scheme = label_scheme(label)
    if scheme == "digit":
        return (int(label), 0)
    low = label.lower()
    if scheme == "roman":
        roman = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
        return (roman.index(low) + 1, 0)
    return (ord(low[0]) - ord("a") + 1, int(low[1:]) if low[1:].isdigit() else 0)


def _units(
    candidates: Sequence[Sequence[LabelCandidate]], subcaptions: Sequence[tuple[str, str]],
    sublabels: Mapping[str, Sequence[str]] | None,
) -> list[tuple[str, str]]:
    """(label a panel may carry, caption label it belongs to), in label order.

    A caption label with sub-labels ("b" with b1-b3) stands for one panel per
    sub-label; sub-labels the caption does not list but the figure prints
    ("b1", "b2" under a caption "(b) ...") are taken from the readings.
    """
    subs = {k.lower(): list(v) for k, v in (sublabels or {}).items() if v}
    printed: dict[str, set[str]] = {}
    for cands in candidates:
        for cand in cands:
            lab = cand.label
            if len(lab) > 1 and lab[0].isalpha() and lab[1:].isdigit():
                printed.setdefault(lab[0].lower(), set()).add(lab)
    units = []
    for label, _ in subcaptions:
        key = label.lower()
        extra = printed.get(key, set())
        members = subs.get(key) or (sorted(extra, key=lambda s: int(s[1:])) if len(extra) >= 2 else [label])
        units.extend((member, label) for member in members)
    return units


def align(
    candidates: Sequence[Sequence[LabelCandidate]], subcaptions: Sequence[tuple[str, str]],
    sublabels: Mapping[str, Sequence[str]] | None = None,
) -> list[Pair] | None:
    """Pairs for a figure whose panels (in reading order) have OCR ``candidates``.

    ``sublabels`` maps a caption label to its sub-labels (A -> A1, A2): each
    sub-label is a panel of its own that gets the caption label's text, and the
    pair carries the sub-label. Returns ``None`` when the figure cannot be split
    reliably: fewer than two panels, or a caption label left without a panel.
    Panels no label claims (a legend, a colour bar the cutter kept) are left out.
    """
    if len(candidates) < 2 or len(subcaptions) < 2:
        return None
    text_of = {label.lower(): sub for label, sub in subcaptions}
    units = _units(candidates, subcaptions, sublabels)
    text = {unit.lower(): text_of[parent.lower()] for unit, parent in units}
    display = {unit.lower(): unit for unit, _ in units}
    keys = [unit.lower() for unit, _ in units]

    # 1. OCR: strongest (label, panel) evidence first, each used once.
    evidence = []
    for p, cands in enumerate(candidates):
        for position, cand in enumerate(cands):
            for key in keys:
                match = labels_equivalent(cand.label, key)
                if match:
                    weight = match * cand.confidence * (1.0 if position == 0 else NON_TOP_FACTOR)
                    if weight >= MIN_EVIDENCE:
                        evidence.append((weight, p, key))
    evidence.sort(key=lambda e: -e[0])
    by_label: dict[str, int] = {}
    used_panels: set[int] = set()
    for _, p, key in evidence:
        if key in by_label or p in used_panels:
            continue
        by_label[key] = p
        used_panels.add(p)
    pairs = {key: Pair(p, display[key], text[key], "ocr") for key, p in by_label.items()}

    # 2. Reading order for the rest, when the counts agree and the order stays consistent.
    free_labels = [k for k in keys if k not in by_label]
    free_panels = [p for p in range(len(candidates)) if p not in used_panels]
    if free_labels and len(free_labels) == len(free_panels):
        trial = dict(by_label)
        trial.update(zip(free_labels, free_panels))
        panels_in_label_order = [trial[k] for k in keys]
        if panels_in_label_order == sorted(panels_in_label_order):
            for key, p in zip(free_labels, free_panels):
                pairs[key] = Pair(p, display[key], text[key], "order")
    if len(pairs) < len(keys):
        return None
    return [pairs[k] for k in keys]
