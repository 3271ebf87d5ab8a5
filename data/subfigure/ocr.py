"""Panel labels by OCR: RapidOCR (ONNX models inside the wheel), tesseract as a fallback.

Labels sit in a corner of their panel, inside it or just outside (our panel
boxes already include an outside label that the cutter merged in). For each
panel we run the text detector on a small window at one corner, recognise the
few text boxes nearest to that corner, and keep those that parse as a panel
label: a letter, a one- or two-digit number, a roman numeral or a letter with
a digit ("A1"), with or without brackets, dot or colon. Corners are tried in
the order journals use them (top-left, top-right, bottom-left, bottom-right);
once half of the panels have a label in a corner, the others are not tried.

Without RapidOCR, a ``tesseract`` binary (if installed) reads the glyph
groups instead; it is clearly weaker on lone letters.

The engine is created once per process (it takes ~0.3 s and ~100 MB) and
reused; ``threads`` is fixed at creation (1 by default: parallelism comes
from worker processes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import cv2
import numpy as np

__all__ = [
    "LabelCandidate",
    "parse_label",
    "label_rank",
    "sequence_score",
    "find_glyph_groups",
    "get_reader",
    "LabelReader",
    "OCRUnavailable",
]

Box = tuple[int, int, int, int]

CORNERS = ("tl", "tr", "bl", "br")
# Corner window: this share of the figure's short side (labels scale with the
# figure, not the panel); resized to DETECT_SIDE pixels for the text detector,
# which finds a lone glyph only when it is large in its input.
WINDOW_FRACTION = 0.16
DETECT_SIDE = 288
# A window never exceeds this share of its panel's short side.
WINDOW_PANEL_FRACTION = 0.45
WINDOW_MIN = 48
# A second look at a panel whose label was not read uses windows this many times smaller.
ZOOM = 2.0
# Share of the window that lies outside the panel's corner.
OUTSIDE_FRACTION = 0.25
# Text boxes recognised per window (nearest to the corner first).
CANDIDATES_PER_WINDOW = 4
# Labels are at least this share of the figure's short side tall (tick values and units are smaller).
MIN_LABEL_HEIGHT = 0.012
# Glyph groups recognised per region when looking for labels inside merged panels.
REGION_CANDIDATES = 24
# Ink groups filling more of their box than this are blobs, not glyphs (bold "B" fills 0.82, a disc 0.79);
# above DENSE_FILL a group counts as a glyph only with a hole in it.
SOLID_FILL = 0.9
DENSE_FILL = 0.7
# The text detector sees a region looking for labels at this size.
REGION_DETECT_SIDE = 640
# Glyph groups this far apart (x their height) are also offered joined: "b" "2" -> "b2".
LOOSE_GAP = 1.0
# Corners are probed on this many panels; probing stops at a corner whose labels
# sum to this confidence per probed panel and mostly increase in reading order.
PROBE_PANELS = 3
CONVINCING = 0.45

_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv", "xvi")
_LABEL = re.compile(r"^(?:[A-Za-z]|[0-9]{1,2}|[A-Za-z][0-9]{1,2}|(?:" + "|".join(_ROMAN[::-1]) + r"))$", re.IGNORECASE)
_STRIP_OPEN = "([{\u3010"
_STRIP_CLOSE = ")]}.:,;?!\u3011\u3002\u00b7'\"`"


class OCRUnavailable(RuntimeError):
    """Neither RapidOCR nor a tesseract binary is available."""


@dataclass(frozen=True)
class LabelCandidate:
    """One reading of a panel label: text, recogniser confidence, which corner, distance to it (0..1)."""

    label: str
    confidence: float
    corner: str
    distance: float
    box: tuple[int, int, int, int] | None = None  # where the reading is, in figure pixels (when known)


def parse_label(text: str) -> str | None:
    """The panel label in an OCR reading, or ``None``: "(a)" -> "a", "B." -> "B", "iv)" -> "iv".

    Tick values ("0.5", "10"), words and units are rejected by shape; "10" and
    longer numbers are accepted only up to two digits.
    """
    # NFKC folds the recogniser's full-width forms ("Ａ", "（") into ASCII.
    t = unicodedata.normalize("NFKC", text).strip().replace(" ", "")
    while t and t[0] in _STRIP_OPEN:
        t = t[1:]
    while t and t[-1] in _STRIP_CLOSE:
        t = t[:-1]
    if not t or not _LABEL.match(t):
        return None
    return t


class LabelReader:
    """Reads panel labels in corner windows. Use :func:`get_reader` for the shared instance."""

    def __init__(self, threads: int = 1, backend: str = "auto"):
        self.backend = None
        self._engine = None
        if backend in ("auto", "rapidocr"):
            try:
                from rapidocr_onnxruntime import RapidOCR

                self._engine = RapidOCR(
                    intra_op_num_threads=threads,
                    inter_op_num_threads=threads,
                    det_limit_type="max",
                    det_limit_side_len=DETECT_SIDE,
                    det_box_thresh=0.3,
                    # Labels are 1-5 characters: a narrow recognition canvas is 2.5x
                    # faster than the default 320 and as accurate on label crops.
                    rec_img_shape=[3, 48, 120],
                )
                self.backend = "rapidocr"
            except ImportError:
                if backend == "rapidocr":
                    raise OCRUnavailable("rapidocr_onnxruntime is not installed") from None
        if self.backend is None and backend in ("auto", "tesseract"):
            if shutil.which("tesseract"):
                self.backend = "tesseract"
            else:
                raise OCRUnavailable(
                    "no OCR engine: install rapidocr-onnxruntime (pip) or tesseract (apt-get install tesseract-ocr)"
                )
        if self.backend is None:
            raise OCRUnavailable(f"unknown OCR backend {backend!r}")
        self._lock = threading.Lock()
        self._min_height = 4

    # ------------------------------------------------------------------ windows

    @staticmethod
    def _window(box: Box, corner: str, fig_w: int, fig_h: int, outside: bool = False, zoom: float = 1.0) -> Box:
        """The corner window of a panel; ``outside``: reaching beyond the panel's top-left corner;
        ``zoom``: a window this many times smaller (its glyphs this many times larger for the detector)."""
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        side = max(WINDOW_MIN, WINDOW_FRACTION * min(fig_w, fig_h)) / zoom
        side = int(min(side, WINDOW_PANEL_FRACTION * min(w, h) if min(w, h) > 2 * WINDOW_MIN else min(w, h)))
        side = max(8, side)
        out = int(OUTSIDE_FRACTION * side) if outside else 0
        left, right = (x0 - out, x0 + side) if corner in ("tl", "bl") else (x1 - side, x1)
        top, bottom = (y0 - out, y0 + side) if corner in ("tl", "tr") else (y1 - side, y1)
        return (max(0, left), max(0, top), min(fig_w, right), min(fig_h, bottom))

    def _detect(self, window: np.ndarray) -> list[Box]:
        """Text boxes in a window (window coordinates), nearest-first is up to the caller."""
        boxes, _ = self._engine.text_det(np.ascontiguousarray(window[:, :, ::-1]))
        out = []
        if boxes is None:
            return out
        for quad in boxes:
            xs, ys = quad[:, 0], quad[:, 1]
            out.append((int(xs.min()), int(ys.min()), int(np.ceil(xs.max())), int(np.ceil(ys.max()))))
        return out

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        results, _ = self._engine.text_rec([np.ascontiguousarray(c[:, :, ::-1]) for c in crops])
        return [(str(text), float(score)) for text, score, *_ in results]

    def _recognise_boxes(self, items: list[tuple], corner: str, out: list[list[LabelCandidate]]) -> None:
        """Recognise (window index, distance, crop, box in figure pixels) items; labels go to ``out[index]``."""
        results = self._recognise([item[2] for item in items])
        for (k, dist, _, where), (text, score) in zip(items, results):
            label = parse_label(text)
            if label is not None:
                out[k].append(LabelCandidate(label, score, corner, dist, where))

    def _glyph_stage(self, windows: list[np.ndarray], origins: list[tuple[int, int]], boxes: Sequence[Box],
                     corner: str, out: list[list[LabelCandidate]]) -> None:
        items = []
        for k, window in enumerate(windows):
            ox, oy = origins[k]
            groups = [g for g in find_glyph_groups(window, corner) if g[1][3] - g[1][1] >= self._min_height]
            # Nearest to the panel's corner first (the window may reach beyond it).
            groups.sort(key=lambda g: _corner_distance(_shift(g[1], ox, oy), boxes[k], corner))
            for dist, (gx0, gy0, gx1, gy1) in groups[:CANDIDATES_PER_WINDOW]:
                pad = max(2, (gy1 - gy0) // 4)
                crop = window[max(0, gy0 - pad) : gy1 + pad, max(0, gx0 - pad) : gx1 + pad]
                items.append((k, dist, crop, (ox + gx0, oy + gy0, ox + gx1, oy + gy1)))
        self._recognise_boxes(items, corner, out)

    def _detector_stage(self, windows: list[np.ndarray], origins: list[tuple[int, int]], boxes: Sequence[Box],
                        corner: str, out: list[list[LabelCandidate]]) -> None:
        items = []
        for k, window in enumerate(windows):
            ox, oy = origins[k]
            if out[k] or window.shape[0] < 4 or window.shape[1] < 4:
                continue
            scale = DETECT_SIDE / max(window.shape[:2])
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            resized = cv2.resize(window, None, fx=scale, fy=scale, interpolation=interp)
            side = float(max(resized.shape[:2]))
            ranked = []
            for bx0, by0, bx1, by1 in self._detect(resized):
                bw, bh = bx1 - bx0, by1 - by0
                if bh <= 0 or bw / bh > 4.0 or bh > 0.7 * side:  # labels are short
                    continue
                if bh / scale < self._min_height:  # tick values and units are set smaller than labels
                    continue
                where = tuple(int(round(v / scale)) + o for v, o in zip((bx0, by0, bx1, by1), (ox, oy, ox, oy)))
                ranked.append((_corner_distance(where, boxes[k], corner) * scale / side, (bx0, by0, bx1, by1)))
            ranked.sort()
            for dist, (bx0, by0, bx1, by1) in ranked[:CANDIDATES_PER_WINDOW]:
                pad = max(2, (by1 - by0) // 5)
                crop = resized[max(0, by0 - pad) : by1 + pad, max(0, bx0 - pad) : bx1 + pad]
                if crop.size:
                    where = tuple(int(round(v / scale)) + o for v, o in zip((bx0, by0, bx1, by1), (ox, oy, ox, oy)))
                    items.append((k, dist, crop, where))
        self._recognise_boxes(items, corner, out)

    def _read_corner(
        self, rgb: np.ndarray, boxes: Sequence[Box], corner: str, accept: Callable[[str], bool] | None = None,
        zoom: float = 1.0,
    ) -> list[list[LabelCandidate]]:
        """Candidates per panel at one corner: glyph finder first (cheap), text detector for the rest.

        At the top left, a panel with no acceptable reading is read again in a window reaching beyond its
        corner: a label printed in the gutter, or beside an axis title the cutter left out of the panel,
        sits just outside the box. (Beyond the other corners lie the next panels' top-left labels.)
        """
        fig_h, fig_w = rgb.shape[:2]
        self._min_height = max(4, int(MIN_LABEL_HEIGHT * min(fig_w, fig_h)))
        windows, origins = [], []
        for box in boxes:
            x0, y0, x1, y1 = self._window(box, corner, fig_w, fig_h, zoom=zoom)
            windows.append(rgb[y0:y1, x0:x1])
            origins.append((x0, y0))
        sides = [float(max(window.shape[:2]) or 1) for window in windows]
        out: list[list[LabelCandidate]] = [[] for _ in boxes]
        if self.backend == "tesseract":
            for k, window in enumerate(windows):
                out[k] = _tesseract_window(window, corner)
        else:
            self._glyph_stage(windows, origins, boxes, corner, out)
            self._detector_stage(windows, origins, boxes, corner, out)
            if corner == "tl":
                again = [k for k, found in enumerate(out) if not any(accept is None or accept(c.label) for c in found)]
                outer = [self._window(boxes[k], corner, fig_w, fig_h, outside=True, zoom=zoom) for k in again]
                again = [(k, w) for k, w in zip(again, outer) if w[:2] != origins[k]]
                if again:
                    wins = [rgb[w[1] : w[3], w[0] : w[2]] for _, w in again]
                    more: list[list[LabelCandidate]] = [[] for _ in again]
                    self._glyph_stage(wins, [w[:2] for _, w in again], [boxes[k] for k, _ in again], corner, more)
                    self._detector_stage(wins, [w[:2] for _, w in again], [boxes[k] for k, _ in again], corner, more)
                    for (k, _), found in zip(again, more):
                        out[k] = out[k] + found
            # Distances from the panel's own corner, in (inner) window sides.
            for k, box in enumerate(boxes):
                out[k] = [replace(c, distance=_corner_distance(c.box, box, corner) / sides[k]) if c.box else c
                          for c in out[k]]
        return [sorted(c, key=lambda c: (c.distance, -c.confidence)) for c in out]

    # ------------------------------------------------------------------ public

    def read(
        self, rgb: np.ndarray, boxes: Sequence[Box], accept: Callable[[str], bool] | None = None,
        corners: Sequence[str] = CORNERS,
    ) -> list[list[LabelCandidate]]:
        """Label candidates per panel box (boxes in reading order), best first.

        Corners are probed in turn on the first panels until one gives a
        convincing label sequence (labelled, one scheme, increasing in reading
        order); the best corner is then read for all panels, the other probed
        corners' readings follow as fallbacks, and readings in the figure's
        dominant scheme go first. ``accept`` (e.g. "the caption names it")
        drops other readings before the corners are compared; ``corners``
        limits the corners probed (a figure read before keeps its corner).
        """
        rgb = np.asarray(rgb)
        if not boxes:
            return []
        # Probe the corners on the first few panels, then read the rest at the winner.
        probe = list(range(min(len(boxes), PROBE_PANELS)))
        readings: dict[str, list[list[LabelCandidate]]] = {}
        scores: dict[str, float] = {}
        with self._lock:  # one onnxruntime call at a time per engine
            for corner in corners:
                readings[corner] = _keep(self._read_corner(rgb, [boxes[i] for i in probe], corner, accept), accept)
                scores[corner], ordered = sequence_score(readings[corner])
                if scores[corner] >= CONVINCING * len(probe) and ordered >= 0.75:
                    break
            best = max(readings, key=lambda c: scores[c])
            rest = list(range(len(probe), len(boxes)))
            found = readings[best] + (
                _keep(self._read_corner(rgb, [boxes[i] for i in rest], best, accept), accept) if rest else []
            )
            # A panel whose label is elsewhere (or was missed) gets the other probed corners' readings.
            for i in probe:
                for corner in sorted(readings, key=lambda c: -scores[c]):
                    if corner != best:
                        found[i] = found[i] + readings[corner][i]
        return _prefer_dominant_scheme(found)


    def read_closer(
        self, rgb: np.ndarray, boxes: Sequence[Box], corner: str, accept: Callable[[str], bool] | None = None
    ) -> list[list[LabelCandidate]]:
        """Readings at one corner in windows ZOOM times smaller: a second look at panels whose label was
        not read (a small label, or one on a busy background, is larger in the detector's input)."""
        rgb = np.asarray(rgb)
        if not boxes:
            return []
        with self._lock:
            return _keep(self._read_corner(rgb, list(boxes), corner, accept, zoom=ZOOM), accept)

    def read_region(
        self, rgb: np.ndarray, box: Box, accept: Callable[[str], bool], min_height: int, max_height: int,
        limit: int = REGION_CANDIDATES,
    ) -> list[LabelCandidate]:
        """Label-like glyph groups anywhere inside ``box`` (not only at its corners) that ``accept`` takes.

        Used to find the labels of panels that the cutter left merged, so their positions can seed cuts.
        Groups are kept by size (``min_height`` .. ``max_height`` pixels), nearest the top left first.
        """
        x0, y0, x1, y1 = box
        region = np.asarray(rgb)[y0:y1, x0:x1]
        groups = [
            (d, g) for d, g in find_glyph_groups(region, "tl", max_side=max_height)
            if min_height <= g[3] - g[1] <= max_height
        ][:limit]
        if self.backend == "rapidocr" and region.shape[0] >= 8 and region.shape[1] >= 8:
            # The text detector too (heavy or touching glyphs escape the glyph finder), on a copy of
            # at most REGION_DETECT_SIDE pixels.
            scale = min(1.0, REGION_DETECT_SIDE / max(region.shape[:2]))
            small = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else region
            with self._lock:
                found = self._detect(small)
            for bx0, by0, bx1, by1 in found:
                g = tuple(int(round(v / scale)) for v in (bx0, by0, bx1, by1))
                if min_height <= g[3] - g[1] <= max_height and g[2] - g[0] <= 3 * (g[3] - g[1]):
                    groups.append((float(np.hypot(g[0], g[1])) / max(region.shape[:2]), g))
        items = []
        for dist, (gx0, gy0, gx1, gy1) in groups:
            pad = max(2, (gy1 - gy0) // 4)
            crop = region[max(0, gy0 - pad) : gy1 + pad, max(0, gx0 - pad) : gx1 + pad]
            items.append((0, dist, crop, (x0 + gx0, y0 + gy0, x0 + gx1, y0 + gy1)))
        out: list[list[LabelCandidate]] = [[]]
        with self._lock:
            self._recognise_boxes(items, "tl", out)
        return [c for c in out[0] if accept(c.label)]


def _shift(box: Box, dx: int, dy: int) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _corner_distance(where: Box, box: Box, corner: str) -> float:
    """Pixels from the reading's nearest corner to the panel's ``corner`` (inside or outside the panel)."""
    dx = abs(where[0] - box[0]) if corner in ("tl", "bl") else abs(box[2] - where[2])
    dy = abs(where[1] - box[1]) if corner in ("tl", "tr") else abs(box[3] - where[3])
    return float(np.hypot(dx, dy))


def _keep(found: list[list[LabelCandidate]], accept: Callable[[str], bool] | None) -> list[list[LabelCandidate]]:
    return found if accept is None else [[c for c in cands if accept(c.label)] for cands in found]


def _prefer_dominant_scheme(found: list[list[LabelCandidate]]) -> list[list[LabelCandidate]]:
    """Within each panel, move readings in the figure's dominant scheme (letters, digits, roman) first.

    A tick value "2" next to a panel of letters is texture, not the label.
    """
    votes: dict[str, float] = {}
    for cands in found:
        if cands:
            rank = label_rank(cands[0].label)
            if rank is not None:
                key = _scheme_key(rank[0])
                votes[key] = votes.get(key, 0.0) + cands[0].confidence
    if not votes:
        return found
    dominant = max(votes, key=votes.get)

    def fits(c: LabelCandidate) -> bool:
        rank = label_rank(c.label)
        return rank is not None and _scheme_key(rank[0]) == dominant

    return [sorted(cands, key=lambda c: not fits(c)) for cands in found]


def _scheme_key(scheme: str) -> str:
    return "letter" if scheme in ("upper", "lower") else scheme


def label_rank(label: str) -> tuple[str, int] | None:
    """(scheme, position) of a label: ("upper", 0) for "A", ("roman", 3) for "iv", ("digit", 1) for "2"."""
    if label.isdigit():
        return ("digit", int(label) - 1)
    low = label.lower()
    if len(label) > 1 and low in _ROMAN:
        return ("roman", _ROMAN.index(low))
    if len(label) == 1 and label.isalpha():
        return ("upper" if label.isupper() else "lower", ord(low) - ord("a"))
    if len(label) >= 2 and label[0].isalpha() and label[1:].isdigit():
        return ("upper" if label[0].isupper() else "lower", ord(label[0].lower()) - ord("a"))
    return None


def sequence_score(readings: list[list[LabelCandidate]]) -> tuple[float, float]:
    """How much the top readings of panels (in reading order) look like a panel-label sequence.

    Returns (score, share of consecutive labelled panels whose labels
    increase). The score sums confidence x closeness to the corner over the
    distinct top labels in the dominant scheme, weighted up when they
    increase and when they sit where a sequence starting at A/a/1/i would put
    them. Texture or tick values read as "1", "0", "l" score low.
    """
    tops = [(i, r[0]) for i, r in enumerate(readings) if r]
    ranks = [label_rank(c.label) for _, c in tops]
    # A label is confident and close to its corner; tick values further in are not labels.
    weight = {id(c): c.confidence * max(0.0, 1.0 - c.distance) for _, c in tops}
    schemes: dict[str, float] = {}
    for (_, cand), rank in zip(tops, ranks):
        if rank is not None:
            key = _scheme_key(rank[0])
            schemes[key] = schemes.get(key, 0.0) + weight[id(cand)]
    if not schemes:
        return 0.0, 0.0
    scheme = max(schemes, key=schemes.get)
    seen: set[str] = set()
    total = 0.0
    positions = []
    in_place = 0
    for (index, cand), rank in zip(tops, ranks):
        if rank is None or _scheme_key(rank[0]) != scheme:
            continue
        positions.append(rank[1])
        in_place += rank[1] == index
        if cand.label.lower() not in seen:
            seen.add(cand.label.lower())
            total += weight[id(cand)]
    pairs = list(zip(positions, positions[1:]))
    ordered = sum(b > a for a, b in pairs) / len(pairs) if pairs else 1.0
    placed = in_place / len(readings)
    return total * (0.4 + 0.3 * ordered + 0.3 * placed), ordered


def find_glyph_groups(window: np.ndarray, corner: str, max_side: int | None = None) -> list[tuple[float, Box]]:
    """Boxes of glyph-like ink groups in a corner window, nearest to ``corner`` first.

    Panel labels are solid black, white or yellow characters on a contrasting
    background. We take connected components of each of those colours whose
    size and fill look like a character and whose surroundings are not the
    same colour (which rules out dark image background, dots and lines), then
    join neighbours of similar height into words like "(a)" or "iii".
    """
    h, w = window.shape[:2]
    if h < 8 or w < 8:
        return []
    side = float(max(h, w))
    r, g, b = (window[..., i].astype(np.int16) for i in range(3))
    lo = np.minimum(np.minimum(r, g), b)
    hi = np.maximum(np.maximum(r, g), b)
    masks = (hi < 90, lo > 170, (r > 170) & (g > 150) & (b < 110))
    groups: list[tuple[float, Box]] = []
    for mask in masks:
        mask_u8 = mask.astype(np.uint8)
        n, labelled, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)
        glyphs = []
        for index, (x, y, gw, gh, area) in enumerate(stats[1:n], start=1):
            if max_side is not None:
                if not (0.25 * max_side <= gh <= max_side) or gw > 1.6 * gh:
                    continue
            elif not (0.06 * side <= gh <= 0.75 * side) or gw > 1.6 * gh:
                continue
            fill = area / float(gw * gh)
            # Strokes leave much of a glyph's box empty; only bar-shaped glyphs (I, l, 1) are nearly solid.
            if fill < 0.08 or (fill > SOLID_FILL and gw > 0.45 * gh):
                continue
            # A dense wide group must have a hole ("B", "D", "8"); a disc or a square has none.
            if fill > DENSE_FILL and gw > 0.45 * gh and not _has_hole(labelled[y : y + gh, x : x + gw] == index):
                continue
            # Surroundings: a ring around the box must be mostly not this colour.
            m = max(2, gh // 4)
            ring = mask[max(0, y - m) : y + gh + m, max(0, x - m) : x + gw + m]
            outside = ring.sum() - area
            ring_area = ring.size - gw * gh
            if ring_area > 0 and outside / ring_area > 0.25:
                continue
            glyphs.append([x, y, x + gw, y + gh])
        # Join neighbours on a line: "(", "a", ")" or "i", "i".
        glyphs.sort()
        merged: list[list[int]] = []
        for gl in glyphs:
            if merged:
                last = merged[-1]
                height = max(last[3] - last[1], gl[3] - gl[1])
                overlap = min(last[3], gl[3]) - max(last[1], gl[1])
                if gl[0] - last[2] <= 0.5 * height and overlap >= 0.4 * min(last[3] - last[1], gl[3] - gl[1]):
                    merged[-1] = [min(last[0], gl[0]), min(last[1], gl[1]), max(last[2], gl[2]), max(last[3], gl[3])]
                    continue
            merged.append(gl)
        # A multi-character label ("b2") may be set loosely: also offer each group joined to its right neighbour.
        for a, b in zip(merged, merged[1:]):
            height = max(a[3] - a[1], b[3] - b[1])
            if b[0] - a[2] <= LOOSE_GAP * height and min(a[3], b[3]) - max(a[1], b[1]) >= 0.5 * min(a[3] - a[1], b[3] - b[1]):
                merged.append([a[0], min(a[1], b[1]), b[2], max(a[3], b[3])])
        for x0, y0, x1, y1 in merged:
            if (x1 - x0) > 4.0 * (y1 - y0):
                continue
            cx = x0 if corner in ("tl", "bl") else w - x1
            cy = y0 if corner in ("tl", "tr") else h - y1
            groups.append((float(np.hypot(cx, cy)) / side, (x0, y0, x1, y1)))
    groups.sort()
    return groups


def _has_hole(component: np.ndarray) -> bool:
    """Does a glyph's mask enclose background (the counters of "B", "o", "8")?"""
    background = np.pad(~component, 1, constant_values=True).astype(np.uint8)
    n, _ = cv2.connectedComponents(background, connectivity=4)
    return n > 2  # the outside plus at least one enclosed region


def _tesseract_window(window: np.ndarray, corner: str) -> list[LabelCandidate]:
    """Fallback: tesseract, one text line per glyph group found near the corner."""
    out = []
    for dist, (gx0, gy0, gx1, gy1) in find_glyph_groups(window, corner)[:CANDIDATES_PER_WINDOW]:
        pad = max(4, (gy1 - gy0) // 2)
        crop = window[max(0, gy0 - pad) : gy1 + pad, max(0, gx0 - pad) : gx1 + pad]
        # Tesseract wants dark text on light ground, 30+ px tall.
        gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if binary.mean() < 128:
            binary = 255 - binary
        scale = max(1.0, 48.0 / max(1, gy1 - gy0))
        binary = cv2.resize(binary, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        binary = cv2.copyMakeBorder(binary, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=255)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "label.png")
            cv2.imwrite(path, binary)
            try:
                proc = subprocess.run(
                    ["tesseract", path, "stdout", "--psm", "8", "tsv"],
                    capture_output=True, text=True, timeout=30, check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
        words = [row.split("\t") for row in proc.stdout.splitlines()[1:]]
        words = [w for w in words if len(w) >= 12 and w[11].strip()]
        if not words:
            continue
        text = "".join(w[11] for w in words)
        label = parse_label(text)
        if label is not None:
            confidence = min(max(0.0, float(w[10])) for w in words) / 100.0
            out.append(LabelCandidate(label, confidence, corner, dist))
    return out


_READER: LabelReader | None = None
_READER_LOCK = threading.Lock()


def get_reader(threads: int | None = None) -> LabelReader:
    """The process-wide :class:`LabelReader` (created on first use).

    ``threads`` defaults to ``$MEDVLP_OCR_THREADS`` or 1.
    """
    global _READER
    with _READER_LOCK:
        if _READER is None:
            if threads is None:
                threads = int(os.environ.get("MEDVLP_OCR_THREADS", "1"))
            _READER = LabelReader(threads=threads)
        return _READER
