"""Panel detection: recursive XY-cut on background-coloured gaps.

Journal figures separate their panels with background-coloured gaps (white,
sometimes black or grey) or with thin separator lines / touching frames. We cut
a region along every full-length gap in one direction, recurse into the pieces
(both directions, so nested grids come out), and then clean up what a pure cut
over-produces: text strips, labels printed outside the panel, colour bars, frame
lines and arrow heads become small leaves, which are merged into the panel they
belong to (or dropped when they span several panels). Boxes come back in
reading order (rows top to bottom, left to right within a row).

Everything runs on a copy downscaled to at most ``WORK_MAX_SIDE`` pixels, with
numpy projections only, so a figure takes a few milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from data.subfigure.seams import split_touching

__all__ = ["Box", "detect_panels", "reading_order", "estimate_background"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive), original pixels

# Detection runs at this size; gaps of 2 px survive the downscale of most figures.
WORK_MAX_SIDE = 1200
# A pixel differs from the background when a channel differs by more than this
# (JPEG ringing in flat white areas stays below it at quality >= 40).
BACKGROUND_TOLERANCE = 40
# A row is a gap when at most this share of its pixels is foreground
# (thin arrows or a frame line crossing the gap do not break it).
GAP_NOISE_FRACTION = 0.012
GAP_NOISE_PIXELS = 4
# A uniform run of a non-background colour this thin (work pixels) is a
# separator line or the frames of touching panels.
MAX_LINE_WIDTH = 7
# An outer frame line lies within this many work pixels of the image border.
OUTER_FRAME_MARGIN = 12
# Standard deviation (gray levels) below which a row/column counts as uniform.
LINE_STD = 12
LINE_CONTRAST = 50
MAX_CROSSING_THICKNESS = 4
# A line crossing a gap band is judged on at least this many lines beyond the band (fewer when the band
# reaches the region edge: a wide empty band inside a plot frame leaves little room on either side).
MIN_SIDE_EVIDENCE = 8
# A row (column) with faint foreground along this share of its length holds a line, not a gap.
FAINT_LINE_SHARE = 0.6
# Leaves thinner than this share of the figure's short side, or smaller than
# this share of its area, are fragments (labels, text lines, colour bars), not panels.
FRAGMENT_SIDE_FRACTION = 0.06
FRAGMENT_AREA_FRACTION = 0.012
MIN_PANEL_SIDE = 16
# Fragments smaller than this share of the short side (both ways) may be panel labels.
LABEL_FRAGMENT_FRACTION = 0.06
MAX_DEPTH = 8


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The figure's background colour: the colour of its full-length uniform rows/columns.

    Gap rows and columns that cross the whole figure are the most reliable
    sample of the background; the outer border ring is used when there are
    none (single-panel images, or panels touching every edge).
    """
    samples = []
    for axis in (0, 1):
        lines = rgb if axis == 0 else rgb.transpose(1, 0, 2)
        med = lines.mean(axis=1)  # (n, 3); uniform lines have mean == median
        dev = np.abs(lines.astype(np.int16) - med[:, None, :].astype(np.int16)).max(axis=2)
        uniform = (dev > BACKGROUND_TOLERANCE // 2).mean(axis=1) <= GAP_NOISE_FRACTION
        # Thin runs are separator lines or frames, not background: keep runs >= 3.
        for start, stop in _runs(uniform):
            if stop - start >= 3 or start == 0 or stop == len(uniform):
                samples.extend(med[start:stop])
    if samples:
        colours = np.asarray(samples, dtype=np.float64)
        # The most frequent colour cluster (quantised to 32 levels per channel).
        keys = (colours // 32).astype(int)
        uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        best = int(np.argmax(counts))
        return np.median(colours[inverse.ravel() == best], axis=0)
    h, w = rgb.shape[:2]
    ring = max(1, min(h, w) // 50)
    border = np.concatenate(
        [rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3), rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3)]
    )
    return np.median(border, axis=0)


def _tolerance(background: np.ndarray) -> float:
    """Colour distance that separates content from background.

    Pure white or black backgrounds allow a wide margin for JPEG noise; a light
    grey page needs a narrower one, or white panels on it would count as page.
    """
    level = float(np.mean(background))
    headroom = min(level, 255.0 - level)
    if headroom < 5:
        return float(BACKGROUND_TOLERANCE)
    return float(np.clip(0.6 * headroom, 10, BACKGROUND_TOLERANCE))


def _crossed_by_thin_line(fg: np.ndarray, start: int, stop: int) -> bool:
    """Does a thin line cross lines ``start:stop`` of ``fg`` (lines x positions) from side to side?

    That is a plot's axis, a box outline or a table rule inside one panel, so
    the band is not a panel gap. An arrow or connector that crosses a gap and
    ends inside the images on both sides does not count: beyond the gap it is
    buried in image content on both sides, whereas an axis line runs on
    through empty space on at least one side.
    """
    crossing = fg[start:stop].all(axis=0)
    if not crossing.any():
        return False
    reach = max(16, 3 * (stop - start))
    before = fg[max(0, start - reach) : start][::-1]  # nearest line first
    after = fg[stop : stop + reach]
    positions = fg.shape[1]
    for a, b in _runs(crossing):
        if b - a > MAX_CROSSING_THICKNESS:
            continue
        flanks = [p for p in (a - 2, b + 1) if 0 <= p < positions]
        continues = []
        buried = []
        for side in (before, after):
            if len(side) < min(reach // 2, MIN_SIDE_EVIDENCE):
                continues.append(False)
                buried.append(False)
                continue
            continues.append(side[:, max(0, a - 1) : b + 1].any(axis=1).mean() >= 0.8)
            buried.append(bool(flanks) and all(side[:, p].mean() > 0.5 for p in flanks))
        # A speck of noise does not continue; an arrow into two images is buried on both sides.
        if any(continues) and not all(buried):
            return True
    return False


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True values."""
    if mask.size == 0:
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


class _Cutter:
    """XY-cut over one (downscaled) figure, with integral images so each region costs O(h + w).

    ``fg_any`` marks work pixels holding any foreground pixel of the original
    (a hairline plot axis survives the downscale); it decides whether a line
    crosses an empty band. ``fg_major`` marks work pixels that are mostly
    foreground (a 2-pixel gap survives the downscale); it decides which rows
    and columns are empty. ``rgb`` (area-averaged) finds uniform separator lines.
    """

    def __init__(self, fg_any: np.ndarray, fg_major: np.ndarray, rgb: np.ndarray, background: np.ndarray):
        self.fg_any = fg_any
        self.background = background.astype(np.float64)
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        self.major = cv2.integral(fg_major.astype(np.uint8))
        self.any = cv2.integral(fg_any.astype(np.uint8))
        self.gray, self.gray_sq = cv2.integral2(gray, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
        self.colour = cv2.integral(np.ascontiguousarray(rgb))

    @staticmethod
    def _line_sums(integral: np.ndarray, x0: int, y0: int, x1: int, y1: int, axis: int) -> np.ndarray:
        """Sum over each row (axis 0) / column (axis 1) of the region, from an integral image."""
        if axis == 0:
            full = integral[y0 : y1 + 1, x1] - integral[y0 : y1 + 1, x0]
        else:
            full = integral[y1, x0 : x1 + 1] - integral[y0, x0 : x1 + 1]
        return np.diff(full, axis=0).astype(np.float64)

    def _gap_lines(self, x0: int, y0: int, x1: int, y1: int, axis: int, edge_lines: bool = False) -> np.ndarray:
        """Boolean per row (axis=0) or column (axis=1): is it a gap inside the region?

        A gap is a band of background-coloured lines (a little noise allowed)
        that no thin line crosses from side to side: the axis of a plot
        crosses the white space between its bars, an outer panel gap is
        crossed by nothing. Thin uniform bands of another colour between
        two panels' content are separator lines or the frames of touching
        panels and count as gaps too.
        """
        length = (x1 - x0) if axis == 0 else (y1 - y0)
        count = self._line_sums(self.major, x0, y0, x1, y1, axis)
        gap = count <= max(GAP_NOISE_PIXELS, GAP_NOISE_FRACTION * length)
        # A faint line across most of the region (a plot frame's top edge, thinned by the downscale) is not
        # empty: counted as gap, it would join the margin above a frame to the space inside it, and the
        # frame's sides would no longer cross the band from side to side.
        # (The soft edge of a thick line, next to its solid rows, stays a gap: it is that line's margin.)
        faint = gap & (self._line_sums(self.any, x0, y0, x1, y1, axis) >= FAINT_LINE_SHARE * length)
        if faint.any():
            solid = ~gap
            for shift in (1, 2):
                solid[shift:] |= ~gap[:-shift]
                solid[:-shift] |= ~gap[shift:]
            gap &= ~(faint & ~solid)
        if gap.any():
            fg = self.fg_any[y0:y1, x0:x1]
            if axis == 1:
                fg = fg.T
            for start, stop in _runs(gap):
                if _crossed_by_thin_line(fg, start, stop):
                    gap[start:stop] = False
        # Separator lines: uniform (low variance), far from the background colour.
        n = float(length)
        s1 = self._line_sums(self.gray, x0, y0, x1, y1, axis) / n
        s2 = self._line_sums(self.gray_sq, x0, y0, x1, y1, axis) / n
        std = np.sqrt(np.maximum(s2 - s1 * s1, 0.0))
        colour = self._line_sums(self.colour, x0, y0, x1, y1, axis) / n  # (lines, 3)
        far = np.abs(colour - self.background).max(axis=1) > BACKGROUND_TOLERANCE
        line = (std <= LINE_STD) & far
        if line.any():
            fg_share = self._line_sums(self.any, x0, y0, x1, y1, axis) / n
            for start, stop in _runs(line):
                keep = stop - start <= MAX_LINE_WIDTH
                if start == 0 or stop == len(line):
                    # Only the figure's own outer frame -- a line at the image border -- is
                    # peeled off (edge_lines, at the top level); a frame around a panel
                    # holds the panel together.
                    offset = y0 if axis == 0 else x0
                    near_border = (
                        offset + start <= OUTER_FRAME_MARGIN
                        or offset + stop >= self.fg_any.shape[axis] - OUTER_FRAME_MARGIN
                    )
                    keep = keep and edge_lines and near_border
                elif keep:
                    # Between two panels' content, contrasting with at least one;
                    # a plot's axis line has empty space on one side.
                    c = colour[start:stop].mean(axis=0)
                    nbs = (start - 1, stop)
                    keep = all(fg_share[nb] >= 0.5 for nb in nbs) and any(
                        np.abs(colour[nb] - c).max() >= LINE_CONTRAST for nb in nbs
                    )
                if not keep:
                    line[start:stop] = False
        return gap | line

    def _trim(self, x0: int, y0: int, x1: int, y1: int, edge_lines: bool = False) -> Box | None:
        """Shrink a region to its content, peeling gaps and frame lines off the edges.

        Repeated because an outer frame hides the margin inside it: its side
        lines cross the top margin until they are peeled off themselves.
        """
        for _ in range(4):
            rows = ~self._gap_lines(x0, y0, x1, y1, 0, edge_lines)
            cols = ~self._gap_lines(x0, y0, x1, y1, 1, edge_lines)
            if not rows.any() or not cols.any():
                return None
            r = np.flatnonzero(rows)
            c = np.flatnonzero(cols)
            new = (x0 + int(c[0]), y0 + int(r[0]), x0 + int(c[-1]) + 1, y0 + int(r[-1]) + 1)
            if new == (x0, y0, x1, y1):
                break
            x0, y0, x1, y1 = new
        return (x0, y0, x1, y1)

    def cut(self, box: Box, depth: int = 0) -> list[Box]:
        trimmed = self._trim(*box, edge_lines=depth == 0)
        if trimmed is None:
            return []
        x0, y0, x1, y1 = trimmed
        if depth >= MAX_DEPTH or (x1 - x0) < 2 or (y1 - y0) < 2:
            return [trimmed]
        best_axis, best_width, best_runs = None, 0, []
        for axis in (0, 1):
            runs = _runs(self._gap_lines(x0, y0, x1, y1, axis))
            if runs:
                width = max(stop - start for start, stop in runs)
                if width > best_width:
                    best_axis, best_width, best_runs = axis, width, runs
        if best_axis is None:
            return [trimmed]
        pieces: list[Box] = []
        pos = 0
        extent = (y1 - y0) if best_axis == 0 else (x1 - x0)
        for start, stop in best_runs + [(extent, extent)]:
            if start > pos:
                if best_axis == 0:
                    pieces.append((x0, y0 + pos, x1, y0 + start))
                else:
                    pieces.append((x0 + pos, y0, x0 + start, y1))
            pos = stop
        out: list[Box] = []
        for piece in pieces:
            out.extend(self.cut(piece, depth + 1))
        return out


def _area(b: Box) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _intersection(a: Box, b: Box) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def _distance(a: Box, b: Box) -> float:
    dx = max(0, a[0] - b[2], b[0] - a[2])
    dy = max(0, a[1] - b[3], b[1] - a[3])
    return float(np.hypot(dx, dy))


def _merge_fragments(leaves: list[Box], width: int, height: int) -> list[Box]:
    """Fold small leaves (labels, text strips, colour bars, frame slivers) into their panel.

    A leaf is a panel when it is not thin and not tiny compared to the figure
    (absolute shares, so a figure of one large and several small panels keeps
    the small ones). A fragment joins the nearest panel whose enlarged box
    would not overlap another panel; a fragment with no such panel (a strip
    spanning several panels) is dropped.
    """
    min_side = max(MIN_PANEL_SIDE, FRAGMENT_SIDE_FRACTION * min(width, height))
    min_area = FRAGMENT_AREA_FRACTION * width * height
    panels, fragments = [], []
    for b in leaves:
        if min(b[2] - b[0], b[3] - b[1]) >= min_side and _area(b) >= min_area:
            panels.append(b)
        else:
            fragments.append(b)
    fragments.sort(key=_area, reverse=True)
    label_side = LABEL_FRAGMENT_FRACTION * min(width, height)
    for frag in fragments:
        fw, fh = frag[2] - frag[0], frag[3] - frag[1]
        label_like = fw <= label_side and fh <= label_side and fw <= 3 * fh

        def cost(i: int) -> float:
            # A label-sized fragment belongs to the panel whose top-left corner it sits at (labels are
            # printed at the top left, often in a chart's white margin nearer the previous panel).
            p = panels[i]
            at_top_left = frag[0] <= p[0] + 0.25 * (p[2] - p[0]) and frag[1] <= p[1] + 0.25 * (p[3] - p[1])
            return _distance(frag, p) + (0.0 if not label_like or at_top_left else label_side)

        ranked = sorted(range(len(panels)), key=cost)
        for i in ranked:
            merged = _union(frag, panels[i])
            if all(_intersection(merged, panels[j]) == 0 for j in range(len(panels)) if j != i):
                panels[i] = merged
                break
    return panels


def reading_order(boxes: list[Box], by_columns: bool = False) -> list[int]:
    """Indices of ``boxes`` in reading order: rows top to bottom, left to right in a row
    (``by_columns``: columns left to right, top to bottom in a column).

    A row is the top-most remaining box and every box that starts in its upper
    half, so a tall panel beside two stacked ones reads (tall, top, bottom).
    """
    a, b = (0, 1) if by_columns else (1, 0)  # the axis that makes lines, the axis along them
    remaining = list(range(len(boxes)))
    order: list[int] = []
    while remaining:
        top = min(remaining, key=lambda i: (boxes[i][a], boxes[i][b]))
        limit = boxes[top][a] + 0.5 * (boxes[top][a + 2] - boxes[top][a])
        row = sorted((i for i in remaining if boxes[i][a] < limit), key=lambda i: boxes[i][b])
        order.extend(row)
        remaining = [i for i in remaining if i not in row]
    return order


def _panels_for_background(
    rgb: np.ndarray, background: np.ndarray, scale: float, work_size: tuple[int, int], expected: int | None = None
) -> list[Box]:
    """XY-cut + fragment merging with one assumed background colour (work coordinates)."""
    channels = cv2.split(cv2.absdiff(np.ascontiguousarray(rgb), tuple(float(v) for v in background) + (0.0,)))
    diff = cv2.max(cv2.max(channels[0], channels[1]), channels[2])
    fg_full = ((diff > _tolerance(background)) * 255).astype(np.uint8)
    if scale < 1.0:
        coverage = cv2.resize(fg_full, work_size, interpolation=cv2.INTER_AREA)
        fg_any, fg_major = coverage > 0, coverage >= 128
        work_rgb = cv2.resize(np.ascontiguousarray(rgb), work_size, interpolation=cv2.INTER_AREA)
    else:
        fg_any = fg_major = fg_full > 0
        work_rgb = rgb
    cutter = _Cutter(fg_any, fg_major, work_rgb, background)
    leaves = cutter.cut((0, 0, work_size[0], work_size[1]))
    panels = _merge_fragments(leaves, work_size[0], work_size[1])
    # Panels that touch (no gutter): separator lines and seams inside the XY-cut's panels.
    # With the caption's panel count, only the strongest cuts up to that count are made.
    split = split_touching(np.ascontiguousarray(work_rgb), panels, background, limit=expected)
    return _attach_outside_labels(fg_any, split)


def _attach_outside_labels(fg: np.ndarray, panels: list[Box]) -> list[Box]:
    """Extend a panel to the small glyph just above or left of its top-left corner (a label printed in
    the gutter, too small to stop the cutter's gap test)."""
    if len(panels) < 2:
        return panels
    height, width = fg.shape
    inside = np.zeros_like(fg, dtype=bool)
    for x0, y0, x1, y1 in panels:
        inside[y0:y1, x0:x1] = True
    outside = (fg & ~inside).astype(np.uint8)
    if not outside.any():
        return panels
    short = min(width, height)
    n, _, stats, _ = cv2.connectedComponentsWithStats(outside, connectivity=8)
    out = list(panels)
    for x, y, w, h, _ in stats[1:n]:
        if not (0.006 * short <= h <= LABEL_FRAGMENT_FRACTION * short) or w > 3 * h:
            continue
        for i, (x0, y0, x1, y1) in enumerate(out):
            above = y + h <= y0 and y0 - (y + h) <= 1.5 * h and x0 - h <= x <= x0 + 0.25 * (x1 - x0)
            left = x + w <= x0 and x0 - (x + w) <= 1.5 * h and y0 - h <= y <= y0 + 0.25 * (y1 - y0)
            if above or left:
                grown = (min(x0, x), min(y0, y), max(x1, x + w), max(y1, y + h))
                if all(_intersection(grown, other) == 0 for j, other in enumerate(out) if j != i):
                    out[i] = grown
                break
    return out


def detect_panels(image: Image.Image | np.ndarray, expected: int | None = None) -> list[Box]:
    """Panel boxes of a figure (original pixel coordinates) in reading order.

    A figure without visible gaps comes back as one box: the whole image.
    ``expected`` is the number of panels the caption names, if known: cuts at
    separator lines and seams stop at that count (strongest first).
    """
    rgb = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    height, width = rgb.shape[:2]
    whole = [(0, 0, width, height)]
    if min(height, width) < 2 * MIN_PANEL_SIDE:
        return whole
    scale = min(1.0, WORK_MAX_SIDE / max(height, width))
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    step = max(1, max(height, width) // 400)
    background = estimate_background(rgb[::step, ::step])
    panels = _panels_for_background(rgb, background, scale, work_size, expected)
    if float(np.mean(background)) < 64:
        # Dark "background" may be the black surround of MR/CT/ultrasound panels
        # on a white page whose gaps are narrow: try white and keep the finer split.
        white = _panels_for_background(rgb, np.array([255.0, 255.0, 255.0]), scale, work_size, expected)
        if len(white) > len(panels):
            panels = white
    if len(panels) <= 1:
        return whole
    inv = 1.0 / scale
    boxes = [
        (
            max(0, int(np.floor(x0 * inv))),
            max(0, int(np.floor(y0 * inv))),
            min(width, int(np.ceil(x1 * inv))),
            min(height, int(np.ceil(y1 * inv))),
        )
        for x0, y0, x1, y1 in panels
    ]
    return [boxes[i] for i in reading_order(boxes)]
