"""Cuts between panels that touch: thin separator lines and straight seams.

Many real figures have no background gutter: panels touch, or are parted by
a 1-3 px white or black line, or only by a change of colour or texture. The
XY-cut in ``panels.py`` sees none of these. A boundary between two images is
still visible as a straight line across the whole region:

* a **separator line**: a thin run of columns (rows) that are uniform along
  their whole length, with image content on both sides;
* a **seam**: a column (row) where most rows (columns) show a colour step
  that is the strongest in its neighbourhood -- two unrelated images meet.

Inside one image such a line is rare: a plot's axis stops where its tick
labels start, a texture's edges do not line up over the full length. A cut is
accepted only when both pieces are panel-sized, and the pieces are split again
recursively (grids of touching panels).
"""

from __future__ import annotations

import heapq

import cv2
import numpy as np

__all__ = ["split_touching", "separator_lines", "seam_strength"]

Box = tuple[int, int, int, int]

# A column is uniform when this share of its pixels lies within UNIFORM_TOLERANCE of its median.
UNIFORM_SHARE = 0.9
UNIFORM_TOLERANCE = 22
# Content beside a line: the columns just outside it are uniform for at most this share.
CONTENT_SHARE = 0.7
MAX_LINE_WIDTH = 6
LINE_CONTRAST = 30
# A uniform line this dark, with white page on one side and no more of its colour on the other, that runs the region's whole length is a rule.
RULE_MAX_GRAY = 110
# Seam: a step of at least SEAM_STEP grey levels, the strongest within +-SEAM_WINDOW columns,
# on at least SEAM_SHARE of the rows.
SEAM_STEP = 24
SEAM_WINDOW = 3
SEAM_SHARE = 0.72
# Step seams are looked for only in regions with less page background than this (photographs,
# scans, micrographs that touch); a chart's axes and heat-map cells would read as seams.
MAX_BACKGROUND_FOR_SEAMS = 0.25
BACKGROUND_TOLERANCE = 30
# A side of a step is a colour block when this share of its pixels equals (within BLOCK_STEP) the next.
BLOCK_STEP = 4
BLOCK_SHARE = 0.9
# Ridge: a line brighter/darker than the pixels two away by RIDGE_STEP on RIDGE_SHARE of its length.
RIDGE_STEP = 20
RIDGE_SHARE = 0.75
# Evidence maps keep at most this many lines (rows for vertical cuts, columns for horizontal ones).
MAP_LINES = 400
# Pieces must be at least this share of the region's side (and MIN_PIECE pixels).
MIN_PIECE_FRACTION = 0.2
MIN_PIECE = 40
MAX_DEPTH = 6


def separator_lines(gray: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0) of ``gray``: where a thin uniform line with content on both
    sides runs the (nearly) whole length, the share of the length it covers (>= UNIFORM_SHARE), else 0.0."""
    lines = gray if axis == 1 else gray.T  # lines along rows of `lines.T`
    sample = lines[:: max(1, lines.shape[0] // 400)].astype(np.int16)
    median = np.median(sample, axis=0)
    uniform = (np.abs(sample - median[None, :]) <= UNIFORM_TOLERANCE).mean(axis=0)
    out = np.zeros(sample.shape[1], np.float64)
    is_uniform = uniform >= UNIFORM_SHARE
    n = is_uniform.size
    i = 0
    while i < n:
        if not is_uniform[i]:
            i += 1
            continue
        j = i
        # A run is one colour: white page beside a black rule is not part of the rule.
        while j < n and is_uniform[j] and abs(float(median[j]) - float(median[i])) <= LINE_CONTRAST:
            j += 1
        left, right = i - 2, j + 1
        if j - i <= MAX_LINE_WIDTH and left >= 0 and right < n:
            content = uniform[left] <= CONTENT_SHARE and uniform[right] <= CONTENT_SHARE
            # Or flat image areas on both sides that contrast with the line and are not page white
            # (a white line between two dark scans); a plot's axis has white page on its sides.
            value = float(median[i:j].mean())
            contrast = all(
                (np.abs(sample[:, side] - value) > LINE_CONTRAST).mean() >= 0.5 and (sample[:, side] >= 225).mean() <= 0.5
                for side in (left, right)
            )
            # Or a dark rule on white page from edge to edge (charts parted by a black line): a plot's axis
            # stops short of the region's edge, where its tick labels and title sit.
            darkest = float(median[i:j].min())  # a 1 px rule with a soft, page-coloured edge beside it
            rule = darkest <= RULE_MAX_GRAY and all(
                (np.abs(sample[:, side] - darkest) > LINE_CONTRAST).mean() >= 0.5 for side in (left, right)
            ) and any((sample[:, side] >= 255 - 2 * UNIFORM_TOLERANCE).mean() >= 0.5 for side in (left, right))
            if content or contrast or rule:
                # Its strength is how much of the length it covers: a rule from edge to edge beats a
                # plot's axis line that stops short of the region's edge.
                out[i:j] = float(uniform[i:j].max())
        i = j
    return out


class _Maps:
    """Per-pixel seam and ridge evidence of one image, both directions, computed once.

    For a cut across columns (axis 1) the evidence of each row sits in a map
    whose cumulative sums over rows give any region's share in O(width); the
    same on the transposed image serves cuts across rows (axis 0). Rows are
    subsampled to at most MAP_LINES.
    """

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb
        self.axes: dict[int, dict] = {}  # built on first use: charts never need them

    @staticmethod
    def _maps(arr: np.ndarray) -> dict:
        stride = max(1, arr.shape[0] // MAP_LINES)
        arr = np.ascontiguousarray(arr[::stride], dtype=np.uint8)
        rows, n = arr.shape[:2]
        seam = np.zeros((rows, n), np.uint8)
        bright = np.zeros((rows, n), np.uint8)
        dark = np.zeros((rows, n), np.uint8)
        smooth = np.zeros((rows, n), np.uint8)

        def step(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # largest channel difference
            d = cv2.absdiff(np.ascontiguousarray(a), np.ascontiguousarray(b))
            return cv2.max(cv2.max(d[..., 0], d[..., 1]), d[..., 2])

        if n >= 2 * SEAM_WINDOW + 12:
            # Step over two pixels, tolerant of a blurred boundary: near[:, k] spans k..k+2. The local
            # maximum keeps one position per boundary; the sides must differ a few pixels away too
            # (a thin line -- a plot's axis -- is a ridge, not a step).
            near = step(arr[:, 2:], arr[:, :-2])
            local_max = cv2.dilate(near, np.ones((1, 2 * SEAM_WINDOW + 1), np.uint8))
            wide = np.zeros_like(near)
            wide[:, 4 : 4 + n - 10] = step(arr[:, 9:-1], arr[:, 1:-9])
            hit = (near >= SEAM_STEP) & (near >= local_max) & (wide >= SEAM_STEP // 2)
            # A boundary before column c shows in near[:, c-2] or near[:, c-1].
            seam[:, 2 : 1 + hit.shape[1]] = hit[:, :-1] | hit[:, 1:]
        if n >= 5:
            gray = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY).astype(np.int16)
            mid, left, right = gray[:, 2:-2], gray[:, :-4], gray[:, 4:]
            bright[:, 2:-2] = (mid - np.maximum(left, right)) >= RIDGE_STEP
            dark[:, 2:-2] = (np.minimum(left, right) - mid) >= RIDGE_STEP
        if rows >= 2:
            smooth[1:] = step(arr[1:], arr[:-1]) <= BLOCK_STEP

        def cum(m: np.ndarray) -> np.ndarray:
            out = np.zeros((rows + 1, n), np.int32)
            np.cumsum(m, axis=0, dtype=np.int32, out=out[1:])
            return out

        return {"stride": stride, "seam": cum(seam), "bright": cum(bright), "dark": cum(dark), "smooth": cum(smooth)}

    def shares(self, box: Box, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(seam share, ridge share) per position across ``axis`` inside ``box``."""
        x0, y0, x1, y1 = box
        if axis not in self.axes:
            self.axes[axis] = self._maps(self.rgb if axis == 1 else self.rgb.transpose(1, 0, 2))
        m = self.axes[axis]
        a0, a1, b0, b1 = (y0, y1, x0, x1) if axis == 1 else (x0, x1, y0, y1)
        s0 = a0 // m["stride"]
        s1 = max(s0 + 1, -(-a1 // m["stride"]))

        def share(key: str) -> np.ndarray:
            return (m[key][s1, b0:b1] - m[key][s0, b0:b1]) / float(s1 - s0)

        seam = share("seam")
        smooth = share("smooth")
        n = seam.size
        # Colour blocks (heat-map cells, bars): both sides of the step are constant along it.
        blocky = np.zeros(n, bool)
        if n > 5:
            blocky[3 : n - 2] = (smooth[: n - 5] >= BLOCK_SHARE) & (smooth[5:] >= BLOCK_SHARE)
        seam[blocky] = 0.0
        seam[:2] = 0.0
        ridge = np.maximum(share("bright"), share("dark"))
        ridge[:2] = 0.0
        ridge[-2:] = 0.0
        return seam, ridge


def seam_strength(rgb: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0) c: share of the lines across the boundary before c that
    show a colour step there, the strongest within +-SEAM_WINDOW positions."""
    h, w = rgb.shape[:2]
    return _Maps(rgb).shares((0, 0, w, h), axis)[0]


def ridge_strength(gray: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0): share of the lines across it where it is brighter (or darker)
    than both positions two away by RIDGE_STEP -- a 1-2 px separator line blurred by resampling/JPEG."""
    h, w = gray.shape[:2]
    return _Maps(np.repeat(gray[..., None], 3, axis=2)).shares((0, 0, w, h), axis)[1]


def _best_cut(
    rgb: np.ndarray, gray: np.ndarray, maps: _Maps, box: Box, background: np.ndarray | None
) -> tuple[int, int, float] | None:
    """(axis, position, strength) of the strongest acceptable cut inside ``box``, or None."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    best = None
    sample = rgb[y0:y1:2, x0:x1:2].astype(np.int16)
    page = sample.min(axis=2) >= 255 - BACKGROUND_TOLERANCE  # white: charts are drawn on white
    if background is not None:
        page |= np.abs(sample - background.astype(np.int16)).max(axis=2) <= BACKGROUND_TOLERANCE
    look_for_seams = page.mean() < MAX_BACKGROUND_FOR_SEAMS
    for axis in (1, 0):  # 1: vertical line (cut columns), 0: horizontal line (cut rows)
        length = w if axis == 1 else h
        margin = max(MIN_PIECE, int(MIN_PIECE_FRACTION * length))
        if length < 2 * margin:
            continue
        region_gray = gray[y0:y1, x0:x1]
        lines = separator_lines(region_gray, axis)
        if not look_for_seams and lines.any():
            # In a chart, a thin white run is the space between two bars, not a separator.
            across = region_gray[:: max(1, h // 200)] if axis == 1 else region_gray[:, :: max(1, w // 200)].T
            lines[np.median(across, axis=0) >= 255 - BACKGROUND_TOLERANCE] = 0.0
        seams = np.zeros(length)
        if look_for_seams:
            seams, ridges = maps.shares(box, axis)
            lines = np.maximum(lines, (ridges >= RIDGE_SHARE).astype(np.float64))
        score = np.zeros(length)
        score[: lines.size] = np.maximum(score[: lines.size], lines)
        score = np.maximum(score, np.where(seams >= SEAM_SHARE, seams, 0.0))
        score[:margin] = 0
        score[length - margin :] = 0
        k = int(np.argmax(score))
        if score[k] <= 0:
            continue
        if lines[k] if k < lines.size else False:
            # Cut through the middle of the line run.
            a = k
            while a + 1 < lines.size and lines[a + 1]:
                a += 1
            k = (k + a + 1) // 2
        # Equal evidence: prefer the cut nearer the middle (panels in a row or column are alike in size).
        strength = float(score[k]) - 0.05 * abs(k / length - 0.5)
        if best is None or strength > best[0]:
            best = (strength, axis, k)
    if best is None:
        return None
    return best[1], best[2], best[0]


def split_touching(
    rgb: np.ndarray, boxes: list[Box], background: np.ndarray | None = None, limit: int | None = None
) -> list[Box]:
    """Split boxes along separator lines and seams, strongest cut first; ``rgb``/``boxes`` share coordinates.

    ``background`` is the page colour; regions with much of it (charts) are cut at separator lines only.
    ``limit`` caps the number of boxes (the caption's panel count): the weakest cuts are not made.
    """
    gray = rgb.mean(axis=2).astype(np.uint8) if rgb.ndim == 3 else rgb
    maps = _Maps(rgb)
    done: list[Box] = []
    queue: list[tuple[float, int, Box, tuple[int, int], int]] = []  # (-strength, tie, box, cut, level)
    counter = 0

    def push(box: Box, level: int) -> None:
        nonlocal counter
        cut = _best_cut(rgb, gray, maps, box, background) if level < MAX_DEPTH else None
        if cut is None:
            done.append(box)
            return
        counter += 1
        heapq.heappush(queue, (-cut[2], counter, box, cut[:2], level))

    for box in boxes:
        push(box, 0)
    while queue:
        if limit is not None and len(done) + len(queue) >= limit:
            break
        _, _, box, (axis, k), level = heapq.heappop(queue)
        x0, y0, x1, y1 = box
        if axis == 1:
            pieces = [(x0, y0, x0 + k, y1), (x0 + k, y0, x1, y1)]
        else:
            pieces = [(x0, y0, x1, y0 + k), (x0, y0 + k, x1, y1)]
        for piece in pieces:
            push(piece, level + 1)
    done.extend(item[2] for item in queue)
    return done
