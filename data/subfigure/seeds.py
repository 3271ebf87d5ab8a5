"""Panels from label positions: when the caption names more panels than the cutter found.

Panels that touch with no visible boundary stay merged. Their printed labels
still show where they start: a label sits at each panel's top-left corner.
When the caption names n panels but fewer boxes came out, we look for the
missing labels inside the boxes (label-sized glyph groups that read as a
caption label not yet found) and cut each box at them: a label well right of
the box's left edge starts a new column, one well below its top starts a new
row. A cut snaps to the strongest separator line or seam near the label, and
otherwise lies just before the label.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from data.subfigure.ocr import LabelCandidate, LabelReader
from data.subfigure.seams import ridge_strength, seam_strength, separator_lines

__all__ = ["split_at_labels"]

Box = tuple[int, int, int, int]

# A label this far (share of the box side) from the box's left/top edge starts a new column/row.
MIN_OFFSET_FRACTION = 0.15
# Cuts snap to a boundary within this many label heights before the label.
SNAP_HEIGHTS = 2.0
MIN_READING_CONFIDENCE = 0.6


def _snap(rgb: np.ndarray, box: Box, axis: int, position: int, reach: int) -> int:
    """The strongest line/seam/ridge within ``reach`` pixels before ``position`` (box coordinates), or
    ``position`` itself."""
    x0, y0, x1, y1 = box
    region = rgb[y0:y1, x0:x1]
    gray = region.mean(axis=2).astype(np.uint8)
    score = np.maximum.reduce([
        separator_lines(gray, axis), seam_strength(region, axis), ridge_strength(gray, axis)
    ])
    lo = max(1, position - reach)
    window = score[lo : position + 1]
    if window.size and window.max() >= 0.5:
        return lo + int(np.argmax(window))
    return position


def _cuts(values: list[int], start: int, length: int, reach: int) -> list[int]:
    """Distinct cut positions (box coordinates) from label positions, far enough from the edge and each other."""
    out: list[int] = []
    for v in sorted(values):
        offset = v - start
        if offset < MIN_OFFSET_FRACTION * length or offset > (1 - MIN_OFFSET_FRACTION) * length:
            continue
        if out and offset - out[-1] < MIN_OFFSET_FRACTION * length:
            continue
        out.append(offset)
    return out


def split_at_labels(
    rgb: np.ndarray, boxes: Sequence[Box], chosen: Sequence[LabelCandidate | None], units: Sequence[str],
    reader: LabelReader, accept: Callable[[str], bool],
) -> list[Box]:
    """Boxes cut at the positions of caption labels found inside them (see module doc)."""
    found = {c.label.lower() for c in chosen if c is not None}
    missing = {u.lower() for u in units} - found
    if not missing:
        return list(boxes)
    fig_h, fig_w = rgb.shape[:2]
    short = min(fig_w, fig_h)
    heights = [c.box[3] - c.box[1] for c in chosen if c is not None and c.box is not None]
    if heights:
        ref = float(np.median(heights))
        lo, hi = int(0.6 * ref), int(1.6 * ref) + 1
    else:
        lo, hi = int(0.012 * short), int(0.1 * short) + 1
    lo = max(lo, 6)
    out: list[Box] = []
    for box in boxes:
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        seeds = [
            c for c in reader.read_region(rgb, box, lambda t: t.lower() in missing and accept(t), lo, hi)
            if c.confidence >= MIN_READING_CONFIDENCE and c.box is not None
        ]
        if not seeds:
            out.append(box)
            continue
        reach = int(SNAP_HEIGHTS * hi)
        pad = max(2, hi // 3)  # a label sits a little inside its panel
        xs = _cuts([c.box[0] - pad for c in seeds], x0, w, reach)
        ys = _cuts([c.box[1] - pad for c in seeds], y0, h, reach)
        xs = [_snap(rgb, box, 1, x, reach) for x in xs]
        ys = [_snap(rgb, box, 0, y, reach) for y in ys]
        columns = [0] + xs + [w]
        rows = [0] + ys + [h]
        for r0, r1 in zip(rows, rows[1:]):
            for c0, c1 in zip(columns, columns[1:]):
                if c1 - c0 > 1 and r1 - r0 > 1:
                    out.append((x0 + c0, y0 + r0, x0 + c1, y0 + r1))
    return out
