"""Choosing each panel's label from the OCR readings with what we know about labels.

The recogniser reads many things near a panel's corner: the label, but also
tick values, units, letters that mark structures in a micrograph, legend
entries. Real panel labels obey three rules that such text does not:

* **caption**: the label is one the caption names (a top-level label or a
  sub-label such as "b2"); a reading that matches none is not a label;
* **position**: it sits close to the panel's corner (readings further in
  count less);
* **sequence**: labels run in reading order (A, B, C ... row by row, or
  column by column in some layouts); among the readings, the chosen ones
  must increase along the panels.

:func:`infer_missing_labels` uses the sequence once more: a panel left
unread between (or before, after) read labels gets the caption's label that
the sequence leaves for it, when the count of such panels equals the count of
labels missing there.

:func:`choose_labels` picks, per panel, at most one reading so that the chosen
labels increase along the panels (row-major or column-major order, whichever
explains more) and the summed evidence (recogniser confidence x closeness x
caption match) is largest. Each chosen label keeps that evidence as its
confidence; panels without convincing evidence get none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from data.subfigure.align import labels_equivalent
from data.subfigure.ocr import LabelCandidate, label_rank
from data.subfigure.panels import reading_order

__all__ = ["choose_labels", "caption_units", "caption_accepts", "infer_missing_labels", "panel_units",
           "MIN_LABEL_EVIDENCE"]

Box = tuple[int, int, int, int]

# Evidence below this (confidence x closeness x match) does not make a label.
MIN_LABEL_EVIDENCE = 0.2
# A sub-label the caption does not list ("C2" under "(C) ...") is often the letter joined to a tick
# value beside it: it counts less than the letter read alone at the same place.
UNLISTED_SUB_LABEL_MATCH = 0.8


def caption_units(subcaptions: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Labels a figure may print, in order: each caption label, then its sub-labels ("b", "b1", "b2")."""
    units: list[str] = []
    for label, subs in subcaptions:
        units.append(label)
        units.extend(subs)
    return units


def _unit_match(read: str, units: Sequence[str]) -> tuple[int, float, str] | None:
    """(unit index, match, label as the figure prints it) of the caption unit a reading names.

    A sub-label the caption does not list ("b2" under a caption "(b) ...") belongs to its letter.
    """
    best = max(((i, labels_equivalent(read, u)) for i, u in enumerate(units)), key=lambda t: t[1], default=(0, 0.0))
    if best[1] > 0.0:
        return best[0], best[1], units[best[0]]
    if len(read) > 1 and read[0].isalpha() and read[1:].isdigit():
        for i, u in enumerate(units):
            if len(u) == 1 and labels_equivalent(read[0], u) == 1.0:
                return i, UNLISTED_SUB_LABEL_MATCH, u + read[1:]
    return None


def caption_accepts(units: Sequence[str]) -> Callable[[str], bool]:
    """A reading filter: does the caption name this label (or its letter, for a sub-label)?"""
    return lambda read: _unit_match(read, units) is not None


def _order_key(label: str) -> tuple[int, int] | None:
    rank = label_rank(label)
    if rank is None:
        return None
    sub = int(label[1:]) if len(label) > 1 and label[0].isalpha() and label[1:].isdigit() else 0
    return (rank[1], sub)


def _options(readings: Sequence[Sequence[LabelCandidate]], units: Sequence[str] | None):
    """Per panel: [(order key, evidence, candidate as the caption spells it)] of the believable readings."""
    out = []
    for cands in readings:
        opts = {}
        for cand in cands:
            closeness = max(0.0, 1.0 - cand.distance)
            if units is None:
                key = _order_key(cand.label)
                if key is None:
                    continue
                evidence = cand.confidence * closeness
                spelled = cand
            else:
                found = _unit_match(cand.label, units)
                if found is None:
                    continue
                index, match, printed = found
                key = (index, int(printed[1:]) if printed[1:].isdigit() and len(printed) > 1 else 0)
                evidence = cand.confidence * closeness * match
                spelled = replace(cand, label=printed)
            if evidence >= MIN_LABEL_EVIDENCE and (key not in opts or opts[key][0] < evidence):
                opts[key] = (evidence, spelled)
        out.append(sorted((key, ev, c) for key, (ev, c) in opts.items()))
    return out


def _best_increasing(options: list) -> tuple[float, list]:
    """Max-evidence choice of at most one option per panel with strictly increasing keys (panels in order)."""
    # states: key -> (total, choices) for chains ending with that key; O(panels x options x states)
    states: dict = {}
    best_total, best_choice = 0.0, [None] * len(options)
    for p, opts in enumerate(options):
        new_states = dict(states)
        for key, evidence, cand in opts:
            prior_total, prior = 0.0, ()
            for skey, (total, choice) in states.items():
                if skey < key and total > prior_total:
                    prior_total, prior = total, choice
            total = prior_total + evidence
            if key not in new_states or new_states[key][0] < total:
                new_states[key] = (total, prior + ((p, cand, evidence),))
        states = new_states
    for total, choice in states.values():
        if total > best_total:
            best_total = total
            best_choice = [None] * len(options)
            for p, cand, evidence in choice:
                best_choice[p] = replace(cand, confidence=round(evidence, 4))
    return best_total, best_choice


def choose_labels(
    readings: Sequence[Sequence[LabelCandidate]], boxes: Sequence[Box], units: Sequence[str] | None = None
) -> list[LabelCandidate | None]:
    """The label of each panel (boxes in reading order), or None.

    ``units`` are the labels the caption names (:func:`caption_units`); without
    them any label-shaped reading may be chosen, still in increasing order.
    """
    options = _options(readings, list(units) if units else None)
    row_total, row_choice = _best_increasing(options)
    columns = reading_order(list(boxes), by_columns=True)
    col_total, col_choice = _best_increasing([options[i] for i in columns])
    chosen: list[LabelCandidate | None] = row_choice
    if col_total > row_total + 1e-9:
        chosen = [None] * len(boxes)
        for position, i in enumerate(columns):
            chosen[i] = col_choice[position]
    return _lone_sub_labels_to_letters(chosen, units)


def _lone_sub_labels_to_letters(
    chosen: list[LabelCandidate | None], units: Sequence[str] | None
) -> list[LabelCandidate | None]:
    """A sub-label that the caption does not list and that no other panel shares the letter of ("A4"
    beside "B", "C") is the panel's letter joined to a tick value or number printed next to it: keep the
    letter. Sub-labels in a series (b1, b2 under a caption naming only "b") stay."""
    listed = {u.lower() for u in units or ()}

    def letter(c: LabelCandidate | None) -> str | None:
        if c is None or len(c.label) < 2 or not c.label[0].isalpha() or not c.label[1:].isdigit():
            return None
        return c.label[0].lower()

    counts: dict[str, int] = {}
    for c in chosen:
        if letter(c) is not None:
            counts[letter(c)] = counts.get(letter(c), 0) + 1
    return [
        replace(c, label=c.label[0]) if letter(c) is not None and counts[letter(c)] == 1
        and c.label.lower() not in listed else c
        for c in chosen
    ]


def panel_units(units: Sequence[str]) -> list[str]:
    """The caption's labels one per panel: a label with sub-labels stands for its sub-labels (b -> b1, b2)."""
    lowered = [u.lower() for u in units]
    parents = {u for u in lowered if any(v != u and v.startswith(u) and v[len(u):].isdigit() for v in lowered)}
    return [u for u in units if u.lower() not in parents]


def infer_missing_labels(
    chosen: Sequence[LabelCandidate | None], boxes: Sequence[Box], units: Sequence[str]
) -> list[str | None]:
    """Labels for panels the reader left without one, from the sequence of those it read.

    In the reading order (row-major, else column-major) in which the read labels run through the caption's
    labels in order, a stretch of k unread panels between two read labels (or before the first, after the
    last) whose caption labels leave exactly k labels missing there gets those labels, in order. A read
    label that is not one the caption lists per panel ("f" where it lists f1-f4) anchors nothing and its
    stretch gets nothing. Nothing is inferred when no order explains the read labels, when the counts
    differ (a legend or a colour bar kept as a panel breaks the count), or when more labels would be
    inferred than were read.
    """
    spelled = panel_units(units)
    lowered = [u.lower() for u in spelled]
    read = [c.label.lower() if c is not None else None for c in chosen]
    # A read label that is not a per-panel caption label ("f" where the caption lists f1-f4) anchors
    # nothing, and the stretch it sits in is left alone.
    stray = [r is not None and r not in lowered for r in read]
    if all(r is None or s for r, s in zip(read, stray)):
        return [None] * len(chosen)
    fills = []
    for order in (list(range(len(boxes))), reading_order(list(boxes), by_columns=True)):
        anchors = [(position, lowered.index(read[i])) for position, i in enumerate(order)
                   if read[i] is not None and not stray[i]]
        if any(a[1] >= b[1] for a, b in zip(anchors, anchors[1:])):
            continue  # the read labels do not run in this order
        inferred: list[str | None] = [None] * len(chosen)
        bounds = [(-1, -1)] + anchors + [(len(order), len(lowered))]
        for (p0, u0), (p1, u1) in zip(bounds, bounds[1:]):
            between = [order[p] for p in range(p0 + 1, p1)]
            if between and p1 - p0 == u1 - u0 and not any(stray[i] for i in between):
                for step, i in enumerate(between, start=1):
                    inferred[i] = spelled[u0 + step]
        fills.append(inferred)
    # Both orders explain the read labels (one row, or too few read): the one that accounts for more
    # panels wins; two that infer as many but differ leave the question open.
    fills.sort(key=lambda f: -sum(x is not None for x in f))
    if not fills or (len(fills) == 2 and fills[0] != fills[1]
                     and sum(x is not None for x in fills[0]) == sum(x is not None for x in fills[1])):
        return [None] * len(chosen)
    # More inferred than read: one stray reading (a letter in a figure that prints no labels) would label
    # every panel.
    if sum(x is not None for x in fills[0]) > sum(r is not None and not s for r, s in zip(read, stray)):
        return [None] * len(chosen)
    return fills[0]
