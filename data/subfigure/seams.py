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
# Pieces must be at least this share of the region's side (and MIN_PIECE pixels).
MIN_PIECE_FRACTION = 0.2
MIN_PIECE = 40
MAX_DEPTH = 6


def separator_lines(gray: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0) of ``gray``: 1.0 where a thin uniform line with content on
    both sides runs the whole length, else 0.0."""
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
        while j < n and is_uniform[j]:
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
            if content or contrast:
                out[i:j] = 1.0
        i = j
    return out


def seam_strength(rgb: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0) c: share of the lines across the boundary before c that
    show a colour step there, the strongest within +-SEAM_WINDOW positions."""
    arr = rgb if axis == 1 else rgb.transpose(1, 0, 2)
    arr = arr[:: max(1, arr.shape[0] // 300)].astype(np.int16)
    n = arr.shape[1]
    out = np.zeros(n)
    if n < 2 * SEAM_WINDOW + 4:
        return out
    # Step over two pixels, tolerant of a blurred or resampled boundary: step[:, k] spans k..k+2.
    step = np.abs(arr[:, 2:] - arr[:, :-2]).max(axis=2).astype(np.float32)
    pad = np.pad(step, ((0, 0), (SEAM_WINDOW, SEAM_WINDOW)), constant_values=0)
    local_max = np.max(np.stack([pad[:, d : d + step.shape[1]] for d in range(2 * SEAM_WINDOW + 1)]), axis=0)
    # The two sides must differ a few pixels away too: a thin line (a plot's axis) is a ridge, not a step.
    wide = np.zeros_like(step)
    wide[:, 4:-4] = np.abs(arr[:, 9:-1] - arr[:, 1:-9]).max(axis=2)[:, : wide.shape[1] - 8] if n > 12 else 0
    hit = (step >= SEAM_STEP) & (step >= local_max) & (wide >= SEAM_STEP // 2)
    # A boundary before column c shows in step[:, c-2] or step[:, c-1]; the local maximum keeps one.
    either = hit[:, :-1] | hit[:, 1:]
    out[2 : 2 + either.shape[1]] = either.mean(axis=0)
    # Colour blocks (heat-map cells, bars): both sides of the step are constant along it.
    full = rgb if axis == 1 else rgb.transpose(1, 0, 2)
    smooth = (np.abs(np.diff(full.astype(np.int16), axis=0)).max(axis=2) <= BLOCK_STEP).mean(axis=0)
    blocky = np.zeros(n, bool)
    blocky[3 : n - 2] = (smooth[: n - 5] >= BLOCK_SHARE) & (smooth[5:] >= BLOCK_SHARE)
    out[blocky] = 0.0
    return out


def ridge_strength(gray: np.ndarray, axis: int) -> np.ndarray:
    """Per column (axis=1) or row (axis=0): share of the lines across it where it is brighter (or darker)
    than both positions two away by RIDGE_STEP -- a 1-2 px separator line blurred by resampling/JPEG."""
    arr = gray if axis == 1 else gray.T
    arr = arr[:: max(1, arr.shape[0] // 300)].astype(np.int16)
    n = arr.shape[1]
    out = np.zeros(n)
    if n < 5:
        return out
    mid, left, right = arr[:, 2:-2], arr[:, :-4], arr[:, 4:]
    bright = (mid - np.maximum(left, right)) >= RIDGE_STEP
    dark = (np.minimum(left, right) - mid) >= RIDGE_STEP
    out[2:-2] = np.maximum(bright.mean(axis=0), dark.mean(axis=0))
    return out


def _best_cut(rgb: np.ndarray, gray: np.ndarray, box: Box, background: np.ndarray | None) -> tuple[int, int] | None:
    """(axis, position) of the strongest acceptable cut inside ``box``, or None."""
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
        region_rgb = rgb[y0:y1, x0:x1]
        lines = separator_lines(region_gray, axis)
        if not look_for_seams and lines.any():
            # In a chart, a thin white run is the space between two bars, not a separator.
            across = region_gray[:: max(1, h // 200)] if axis == 1 else region_gray[:, :: max(1, w // 200)].T
            lines[np.median(across, axis=0) >= 255 - BACKGROUND_TOLERANCE] = 0.0
        seams = seam_strength(region_rgb, axis) if look_for_seams else np.zeros(length)
        if look_for_seams:
            ridges = ridge_strength(region_gray, axis)
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
        if best is None or score[k] > best[0]:
            best = (float(max(score[k], 0.01)), axis, k)
    if best is None:
        return None
    return best[1], best[2]


def split_touching(rgb: np.ndarray, boxes: list[Box], background: np.ndarray | None = None) -> list[Box]:
    """Split each box along separator lines and seams (recursively); ``rgb``/``boxes`` share coordinates.

    ``background`` is the page colour; regions with much of it (charts) are cut at separator lines only.
    """
    gray = rgb.mean(axis=2).astype(np.uint8) if rgb.ndim == 3 else rgb
    out: list[Box] = []
    stack = [(box, 0) for box in boxes]
    while stack:
        box, level = stack.pop()
        cut = _best_cut(rgb, gray, box, background) if level < MAX_DEPTH else None
        if cut is None:
            out.append(box)
            continue
        axis, k = cut
        x0, y0, x1, y1 = box
        if axis == 1:
            pieces = [(x0, y0, x0 + k, y1), (x0 + k, y0, x1, y1)]
        else:
            pieces = [(x0, y0, x1, y0 + k), (x0, y0 + k, x1, y1)]
        stack.extend((piece, level + 1) for piece in pieces)
    return out
