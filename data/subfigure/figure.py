"""One figure image -> panels with OCR'd labels (the image half of the splitter)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from data.image_io import open_image
from data.subfigure.labels import caption_accepts, choose_labels, infer_missing_labels, panel_units
from data.subfigure.ocr import CORNERS, LabelCandidate, get_reader
from data.subfigure.panels import Box, detect_panels, reading_order
from data.subfigure.seeds import split_at_labels

__all__ = ["Panel", "split_figure"]


@dataclass(frozen=True)
class Panel:
    """One panel of a compound figure.

    ``box`` is (x0, y0, x1, y1) in image pixels (x1/y1 exclusive); ``label`` is
    the OCR'd panel label ("A", "b", "3", "iv") or ``None``; ``confidence`` is
    the evidence for it (recogniser confidence x closeness to the corner x
    caption match; 0.0 without a label). ``candidates`` holds the chosen
    reading, for matching against a caption. ``inferred``: the label was not
    read but follows from the caption's sequence and the labels read around
    it (:func:`data.subfigure.labels.infer_missing_labels`); its confidence is
    half the weakest read label's, and ``candidates`` stays empty.
    """

    box: Box
    label: str | None
    confidence: float
    candidates: tuple[LabelCandidate, ...] = field(default=(), repr=False, compare=False)
    inferred: bool = False


def split_figure(
    image: Image.Image | str | Path, *, ocr: bool = True, labels: Sequence[str] | None = None
) -> list[Panel]:
    """Panels of a figure in reading order; a figure without visible panels gives one whole-image panel.

    ``image`` is a PIL image or a path (opened with :func:`data.image_io.open_image`,
    so a missing, truncated, non-image or oversized file raises
    :class:`data.image_io.ImageError`). ``ocr=False`` skips label reading.
    ``labels`` are the labels the caption names (with sub-labels, see
    :func:`data.subfigure.labels.caption_units`): only those are accepted as
    panel labels. Without them any label-shaped reading may be chosen. Either
    way the chosen labels increase along the panels and sit near a corner.
    """
    if not isinstance(image, Image.Image):
        image = open_image(image)
    rgb = np.asarray(image.convert("RGB"))
    expected = _expected_panels(labels) if labels else 0
    boxes = detect_panels(rgb, expected or None)
    if not ocr or (len(boxes) < 2 and expected < 2):
        return [Panel(box, None, 0.0) for box in boxes]
    reader = get_reader()
    accept = caption_accepts(labels) if labels else None
    readings = reader.read(rgb, boxes, accept)
    chosen = choose_labels(readings, boxes, labels)
    seeds_for = list(labels) if labels else _implied_labels(chosen)
    if seeds_for and len(boxes) < _expected_panels(seeds_for):
        # Fewer panels than the caption names (or than the labels found imply, A, B, D -> C is
        # missing): the labels found inside the boxes seed cuts.
        seeded = split_at_labels(rgb, boxes, chosen, seeds_for, reader, accept or caption_accepts(seeds_for))
        if len(seeded) > len(boxes):
            boxes = [seeded[i] for i in reading_order(seeded)]
            corners = Counter(c.corner for c in chosen if c is not None).most_common(1)
            readings = reader.read(rgb, boxes, accept, corners=[corners[0][0]] if corners else CORNERS)
            chosen = choose_labels(readings, boxes, seeds_for if not labels else labels)
    if len(boxes) < 2:
        return [Panel(box, None, 0.0) for box in boxes]
    if labels:
        chosen = _second_look(rgb, boxes, readings, chosen, labels, reader, accept)
    implied = infer_missing_labels(chosen, boxes, labels) if labels else [None] * len(boxes)
    weakest = min((c.confidence for c in chosen if c is not None), default=0.0)
    return [
        Panel(box, pick.label, pick.confidence, (pick,)) if pick else
        Panel(box, label, round(weakest / 2, 4), inferred=True) if label else Panel(box, None, 0.0)
        for box, pick, label in zip(boxes, chosen, implied)
    ]


def _second_look(
    rgb: np.ndarray, boxes: Sequence[Box], readings: list[list[LabelCandidate]],
    chosen: list[LabelCandidate | None], labels: Sequence[str], reader, accept,
) -> list[LabelCandidate | None]:
    """Panels left without a label while the caption names labels not yet found are read again, closer,
    at the corner where the other labels were found (top left when none was)."""
    found = {c.label.lower() for c in chosen if c is not None}
    if all(c is not None for c in chosen) or not any(u.lower() not in found for u in labels):
        return chosen
    missing = [i for i, c in enumerate(chosen) if c is None]
    corners = Counter(c.corner for c in chosen if c is not None).most_common(1)
    closer = reader.read_closer(rgb, [boxes[i] for i in missing], corners[0][0] if corners else "tl", accept)
    if not any(closer):
        return chosen
    readings = list(readings)
    for i, more in zip(missing, closer):
        readings[i] = readings[i] + more
    return choose_labels(readings, boxes, labels)


def _expected_panels(units: Sequence[str]) -> int:
    """Panels the caption names: its labels, a label with sub-labels counting once per sub-label."""
    return len(panel_units(units))


def _implied_labels(chosen: Sequence[LabelCandidate | None]) -> list[str]:
    """Without a caption: the letters from "a" to the last label read, when two or more were read
    ("A", "B", "D" imply a panel C)."""
    letters = [c.label for c in chosen if c is not None and len(c.label) == 1 and c.label.isalpha()]
    if len(letters) < 2 or len({x.isupper() for x in letters}) > 1:
        return []
    first = "A" if letters[0].isupper() else "a"
    last = max(letters, key=lambda x: x.lower())
    return [chr(c) for c in range(ord(first), ord(last) + 1)]
