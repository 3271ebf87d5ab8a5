"""Synthetic compound figures with known panel boxes and labels, for evaluating the splitter.

Real PubMed figures with hand-drawn ground truth cannot ship with the repo, so the
benchmark composes figures that look like them from material that is installed
locally (no download): images shipped inside scikit-image and matplotlib
(camera, immunohistochemistry, retina, an MRI slice, ...), phantom/CT/MR/
ultrasound/fluorescence/histology/blot-like images drawn with numpy, and
matplotlib plots. Layouts are random slicing trees (nested grids, unequal
sizes), with white, black or grey backgrounds, thin frames, gaps from 0 (framed
panels that touch) to 30 px, text strips, arrows, labels of varied fonts,
sizes, colours and positions (inside or outside the panel, any corner), and
JPEG compression. Everything is a pure function of the seed.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SyntheticFigure", "make_figure", "make_figures", "PANEL_KINDS"]

Box = tuple[int, int, int, int]


@dataclass
class SyntheticFigure:
    """A figure and its ground truth: boxes and drawn labels in reading order."""

    image: Image.Image
    boxes: list[Box]
    labels: list[str | None]  # the label's identity ("A", "b", "3", "iv"), None where none is drawn
    label_boxes: list[Box | None]  # where each drawn label's text is
    caption_labels: list[str]  # the label the caption gives each panel (also where none is drawn)
    kinds: list[str]  # panel content kind, used to write the caption
    caption: str
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- assets

def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


_FONT_FILES = [
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneral.ttf",
]


@functools.lru_cache(maxsize=256)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(os.path.join(_font_dir(), name), size)


@functools.lru_cache(maxsize=None)
def _photo_assets() -> tuple[tuple[str, np.ndarray], ...]:
    """Images shipped in the skimage/matplotlib wheels (read from disk, never fetched)."""
    import matplotlib
    import skimage.data

    out = []
    skdir = os.path.dirname(skimage.data.__file__)
    for name in (
        "camera.png", "astronaut.png", "coffee.png", "chelsea.png", "coins.png", "cell.png", "moon.png",
        "ihc.png", "retina.jpg", "hubble_deep_field.jpg", "brick.png", "gravel.png", "rocket.jpg",
        "microaneurysms.png", "phantom.png", "motorcycle_left.png",
    ):
        path = os.path.join(skdir, name)
        if os.path.exists(path):
            with Image.open(path) as im:
                out.append((name, np.asarray(im.convert("RGB"))))
    sample = os.path.join(matplotlib.get_data_path(), "sample_data")
    hopper = os.path.join(sample, "grace_hopper.jpg")
    if os.path.exists(hopper):
        with Image.open(hopper) as im:
            out.append(("grace_hopper.jpg", np.asarray(im.convert("RGB"))))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _mri_slice() -> np.ndarray | None:
    """The 256x256 16-bit MR slice matplotlib ships (s1045.ima.gz), as 8-bit gray."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "s1045.ima.gz")
    if not os.path.exists(path):
        return None
    with gzip.open(path) as fh:
        arr = np.frombuffer(fh.read(), np.uint16).reshape(256, 256).astype(np.float64)
    arr = arr / arr.max() * 255.0
    return np.clip(arr, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- panel content

def _resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))


def _gray3(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr


def _crop_to_aspect(rng: np.random.Generator, arr: np.ndarray, w: int, h: int) -> np.ndarray:
    ah, aw = arr.shape[:2]
    target = w / h
    if aw / ah > target:
        cw, ch = int(ah * target), ah
    else:
        cw, ch = aw, int(aw / target)
    cw, ch = max(1, min(cw, aw)), max(1, min(ch, ah))
    # Random zoom: crop 60-100 % of the largest window of the right aspect.
    zoom = rng.uniform(0.6, 1.0)
    cw, ch = max(1, int(cw * zoom)), max(1, int(ch * zoom))
    x = int(rng.integers(0, aw - cw + 1))
    y = int(rng.integers(0, ah - ch + 1))
    return arr[y : y + ch, x : x + cw]


def _photo(rng, w, h):
    assets = _photo_assets()
    name, arr = assets[int(rng.integers(len(assets)))]
    arr = _crop_to_aspect(rng, arr, w, h)
    if rng.random() < 0.3:
        arr = arr[:, ::-1]
    return _resize(np.ascontiguousarray(arr), w, h)


def _ellipse_mask(yy, xx, cy, cx, ry, rx, angle=0.0):
    ca, sa = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * ca + dy * sa) / max(rx, 1e-6)
    v = (-dx * sa + dy * ca) / max(ry, 1e-6)
    return u * u + v * v <= 1.0


def _ct(rng, w, h):
    """Axial CT/MR-like slice: body ellipse, organs, noise, on black."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    cy, cx = h / 2 + rng.uniform(-0.05, 0.05) * h, w / 2 + rng.uniform(-0.05, 0.05) * w
    ry, rx = h * rng.uniform(0.3, 0.45), w * rng.uniform(0.35, 0.46)
    img[_ellipse_mask(yy, xx, cy, cx, ry, rx)] = rng.uniform(90, 140)
    img[_ellipse_mask(yy, xx, cy, cx, ry * 0.92, rx * 0.94)] = rng.uniform(60, 110)
    for _ in range(int(rng.integers(3, 8))):
        oy = cy + rng.uniform(-0.6, 0.6) * ry
        ox = cx + rng.uniform(-0.6, 0.6) * rx
        img[_ellipse_mask(yy, xx, oy, ox, ry * rng.uniform(0.08, 0.3), rx * rng.uniform(0.08, 0.3), rng.uniform(0, np.pi))] = rng.uniform(20, 250)
    img += rng.normal(0, rng.uniform(3, 12), img.shape)
    img[~_ellipse_mask(yy, xx, cy, cx, ry, rx)] = rng.uniform(0, 8)
    return _gray3(np.clip(img, 0, 255).astype(np.uint8))


def _mri(rng, w, h):
    sl = _mri_slice()
    if sl is None:
        return _ct(rng, w, h)
    arr = sl.astype(np.float32) * rng.uniform(0.8, 1.3)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    arr = _resize(np.clip(arr, 0, 255).astype(np.uint8), max(w, h), max(w, h))
    canvas = np.zeros((h, w), np.uint8)  # letterbox on black, as MR panels are
    y0, x0 = (h - arr.shape[0]) // 2, (w - arr.shape[1]) // 2
    ys, xs = max(0, y0), max(0, x0)
    canvas[ys : ys + min(h, arr.shape[0]), xs : xs + min(w, arr.shape[1])] = arr[
        ys - y0 : ys - y0 + min(h, arr.shape[0]), xs - x0 : xs - x0 + min(w, arr.shape[1])
    ]
    return _gray3(canvas)


def _ultrasound(rng, w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    apex_y, apex_x = -0.1 * h, w / 2
    ang = np.arctan2(xx - apex_x, yy - apex_y)
    rad = np.hypot(xx - apex_x, yy - apex_y)
    half = rng.uniform(0.5, 0.8)
    inside = (np.abs(ang) < half) & (rad > 0.2 * h) & (rad < 1.05 * h)
    speckle = rng.gamma(2.0, 40.0, (h, w)).astype(np.float32)
    img = np.where(inside, speckle, 0.0)
    return _gray3(np.clip(img, 0, 255).astype(np.uint8))


def _fluorescence(rng, w, h):
    img = np.zeros((h, w, 3), np.float32)
    colour = np.array([[0, 1, 0], [1, 0, 0], [0, 0.4, 1], [1, 0, 1]][int(rng.integers(4))], np.float32)
    for _ in range(int(rng.integers(15, 60))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, max(3, min(w, h) * 0.05))
        # Evaluate the Gaussian only where it is visible (3 sigma).
        y0, y1 = max(0, int(cy - 3 * r)), min(h, int(cy + 3 * r) + 1)
        x0, x1 = max(0, int(cx - 3 * r)), min(w, int(cx + 3 * r) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) * rng.uniform(80, 255)
        img[y0:y1, x0:x1] += blob[..., None] * colour
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _histology(rng, w, h):
    base = np.array([rng.uniform(220, 245), rng.uniform(170, 200), rng.uniform(200, 225)], np.float32)
    img = np.ones((h, w, 3), np.float32) * base
    img += rng.normal(0, 8, (h, w, 1))
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    nucleus = (int(rng.uniform(60, 110)), int(rng.uniform(40, 80)), int(rng.uniform(110, 160)))
    for _ in range(int(rng.integers(30, 120))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, 6) * max(1.0, min(w, h) / 200)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=nucleus)
    return np.asarray(canvas)


def _blot(rng, w, h):
    """Western-blot-like bands on a light grey background."""
    img = np.full((h, w), rng.uniform(200, 235), np.float32)
    lanes = int(rng.integers(4, 10))
    rows = int(rng.integers(1, 4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for r in range(rows):
        by = (r + 0.5) * h / rows
        for lane in range(lanes):
            bx = (lane + 0.5) * w / lanes
            strength = rng.uniform(0, 170)
            band = np.exp(-((yy - by) ** 2) / (2 * (h / rows * 0.08) ** 2) - ((xx - bx) ** 2) / (2 * (w / lanes * 0.3) ** 2))
            img -= band * strength
    img += rng.normal(0, 3, img.shape)
    return _gray3(np.clip(img, 0, 255).astype(np.uint8))


_PLOT_WORDS = ["Time (days)", "Dose (mg/kg)", "Age (years)", "Survival", "Expression", "Volume (mL)", "Signal", "Frequency", "Score", "Weeks"]


def _plot(rng, w, h):
    """A matplotlib chart rendered at exactly w x h (white background, axes, labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    kind = int(rng.integers(6))
    x = np.linspace(0, 10, 50)
    if kind == 0:
        for _ in range(int(rng.integers(1, 4))):
            ax.plot(x, np.cumsum(rng.normal(0, 1, x.size)), lw=rng.uniform(1, 2.5))
        if rng.random() < 0.5:
            ax.legend(["control", "treated", "sham"][: len(ax.lines)], fontsize=7, loc="best")
    elif kind == 1:
        n = int(rng.integers(2, 7))
        ax.bar(np.arange(n), rng.uniform(1, 10, n), yerr=rng.uniform(0.2, 1.5, n), color=["#444", "#999", "#c33"][int(rng.integers(3))])
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([f"G{i + 1}" for i in range(n)], fontsize=7)
    elif kind == 2:
        pts = rng.normal(0, 1, (int(rng.integers(20, 120)), 2))
        ax.scatter(pts[:, 0], pts[:, 0] * rng.uniform(-1, 1) + pts[:, 1] * 0.5, s=8)
    elif kind == 3:
        ax.boxplot([rng.normal(m, 1, 40) for m in rng.uniform(0, 3, int(rng.integers(2, 5)))])
    elif kind == 4:
        t = np.sort(rng.exponential(5, 40))
        ax.step(t, np.linspace(1, 0, t.size), where="post")
        ax.set_ylim(0, 1.05)
    else:
        im = ax.imshow(rng.normal(0, 1, (8, 10)), cmap=["viridis", "RdBu_r", "magma"][int(rng.integers(3))], aspect="auto")
        fig.colorbar(im, ax=ax)
    ax.set_xlabel(_PLOT_WORDS[int(rng.integers(len(_PLOT_WORDS)))], fontsize=8)
    ax.set_ylabel(_PLOT_WORDS[int(rng.integers(len(_PLOT_WORDS)))], fontsize=8)
    ax.tick_params(labelsize=7)
    if rng.random() < 0.4:
        ax.set_title(["Cohort 1", "Baseline", "Follow-up", "ROC"][int(rng.integers(4))], fontsize=9)
    fig.tight_layout(pad=0.4)
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return _resize(np.ascontiguousarray(arr), w, h)


def _diagram(rng, w, h):
    """A flow-chart-like panel: boxes, text and arrows on white (many internal white gaps)."""
    im = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(im)
    n = int(rng.integers(2, 4))
    font = _font("DejaVuSans.ttf", max(8, int(min(w, h) * 0.06)))
    bh = h / (2 * n)
    for i in range(n):
        y0 = int((2 * i + 0.5) * bh)
        x0, x1 = int(w * 0.15), int(w * 0.85)
        draw.rectangle([x0, y0, x1, int(y0 + bh)], outline="black", width=2)
        draw.text((x0 + 6, y0 + 4), ["Screened", "Enrolled", "Randomised", "Analysed"][i % 4], fill="black", font=font)
        if i < n - 1:
            ax = w // 2
            draw.line([ax, int(y0 + bh), ax, int(y0 + 2 * bh)], fill="black", width=2)
    return np.asarray(im)


PANEL_KINDS = {
    "photo": _photo,
    "ct": _ct,
    "mri": _mri,
    "ultrasound": _ultrasound,
    "fluorescence": _fluorescence,
    "histology": _histology,
    "blot": _blot,
    "plot": _plot,
    "diagram": _diagram,
}
_KIND_WEIGHTS = {
    "photo": 0.22, "ct": 0.14, "mri": 0.12, "ultrasound": 0.06, "fluorescence": 0.08,
    "histology": 0.1, "blot": 0.05, "plot": 0.18, "diagram": 0.02,
}
_KIND_WORDS = {
    "photo": "clinical photograph showing the lesion",
    "ct": "axial contrast-enhanced CT image showing a hypodense mass",
    "mri": "T2-weighted MR image of the brain",
    "ultrasound": "ultrasound image showing a hypoechoic nodule",
    "fluorescence": "immunofluorescence staining of the tissue",
    "histology": "hematoxylin and eosin staining (original magnification x200)",
    "blot": "Western blot of the lysates",
    "plot": "quantification of the measurements (mean and SD)",
    "diagram": "flow chart of the study",
}


# --------------------------------------------------------------------------- layout

def _split_sizes(rng, total: int, n: int, gap: int, unequal: bool) -> list[int]:
    avail = total - gap * (n - 1)
    weights = rng.uniform(0.6, 1.6, n) if unequal else np.ones(n)
    sizes = np.floor(avail * weights / weights.sum()).astype(int)
    sizes[-1] += avail - sizes.sum()
    return [int(s) for s in sizes]


def _layout(rng, box: Box, depth: int, gap: int, max_panels: int) -> list[Box]:
    """A random slicing tree: rows of cells, some cells split again (nested grids)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if depth == 0 or max_panels <= 1 or min(w, h) < 140:
        return [box]
    horizontal = rng.random() < (0.5 if abs(w - h) < 0.2 * max(w, h) else (0.8 if h > w else 0.2))
    n = int(rng.integers(2, 4 if depth > 1 else 3))
    n = min(n, max_panels)
    total = h if horizontal else w
    if total - gap * (n - 1) < 70 * n:
        return [box]
    # Keep panels within 1:3.5 (long thin strips are rare in journals).
    child_short = (total - gap * (n - 1)) / n
    other = w if horizontal else h
    if other / child_short > 3.5:
        return [box]
    sizes = _split_sizes(rng, total, n, gap, unequal=rng.random() < 0.5)
    out: list[Box] = []
    pos = y0 if horizontal else x0
    budget = max_panels
    for i, size in enumerate(sizes):
        child = (x0, pos, x1, pos + size) if horizontal else (pos, y0, pos + size, y1)
        pos += size + gap
        recurse = rng.random() < 0.75
        inner_gap = gap if rng.random() < 0.7 else max(1, gap // 2)
        kids = _layout(rng, child, depth - 1 if recurse else 0, inner_gap, max(1, budget - (n - i - 1)))
        budget -= len(kids)
        out.extend(kids)
    return out


def _reading_order(boxes: list[Box]) -> list[int]:
    """Row-major order: group by overlapping vertical extent, then left to right."""
    idx = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0]))
    order: list[int] = []
    remaining = idx
    while remaining:
        top = min(remaining, key=lambda i: boxes[i][1])
        ty0, ty1 = boxes[top][1], boxes[top][3]
        row = [i for i in remaining if boxes[i][1] < ty0 + 0.5 * (ty1 - ty0)]
        row.sort(key=lambda i: boxes[i][0])
        order.extend(row)
        remaining = [i for i in remaining if i not in row]
    return order


# --------------------------------------------------------------------------- labels

_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv", "xvi"]


def _label_sequence(rng, n: int) -> tuple[list[str], str]:
    r = rng.random()
    if r < 0.55:
        return [chr(ord("A") + i) for i in range(n)], "upper"
    if r < 0.9:
        return [chr(ord("a") + i) for i in range(n)], "lower"
    if r < 0.97:
        return [str(i + 1) for i in range(n)], "digit"
    return _ROMAN[:n], "roman"


def _label_text(label: str, style: str) -> str:
    return {"bare": "{}", "paren": "({})", "dot": "{}.", "close": "{})"}[style].format(label)


def _mean_brightness(arr: np.ndarray, box: Box) -> float:
    x0, y0, x1, y1 = box
    h, w = arr.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return 255.0
    return float(arr[y0:y1, x0:x1].mean())


def _draw_arrow(draw: ImageDraw.ImageDraw, start, end, colour, width: int) -> None:
    draw.line([start, end], fill=colour, width=width)
    (sx, sy), (ex, ey) = start, end
    ang = np.arctan2(ey - sy, ex - sx)
    size = 4 + 2 * width
    left = (ex - size * np.cos(ang - 0.45), ey - size * np.sin(ang - 0.45))
    right = (ex - size * np.cos(ang + 0.45), ey - size * np.sin(ang + 0.45))
    draw.polygon([end, left, right], fill=colour)


# --------------------------------------------------------------------------- figure

def make_figure(seed: int) -> SyntheticFigure:
    """One random compound figure (pure function of ``seed``)."""
    rng = np.random.default_rng(seed)
    meta: dict = {}
    width = int(rng.integers(600, 1700))
    aspect = rng.uniform(0.45, 1.1)
    height = int(width * aspect)
    bg_roll = rng.random()
    if bg_roll < 0.72:
        bg, fg = (255, 255, 255), (0, 0, 0)
        meta["background"] = "white"
    elif bg_roll < 0.9:
        bg, fg = (0, 0, 0), (255, 255, 255)
        meta["background"] = "black"
    else:
        g = int(rng.integers(225, 245))
        bg, fg = (g, g, g), (0, 0, 0)
        meta["background"] = "grey"

    frames = rng.random() < 0.22
    touching = frames and rng.random() < 0.35
    gap = 0 if touching else int(rng.choice([2, 3, 4, 6, 8, 10, 12, 16, 20, 30]))
    meta.update(frames=frames, touching=touching, gap=gap)

    label_pos_roll = rng.random()
    label_pos = (
        "inside_tl" if label_pos_roll < 0.5 else
        "outside_tl" if label_pos_roll < 0.72 else
        "inside_tr" if label_pos_roll < 0.82 else
        "inside_bl" if label_pos_roll < 0.9 else
        "inside_br" if label_pos_roll < 0.95 else
        "none"
    )
    meta["label_position"] = label_pos
    label_size = int(np.clip(width * rng.uniform(0.018, 0.04), 12, 56))
    outside_room = label_size + 6 if label_pos == "outside_tl" else 0

    header = rng.random() < 0.15
    footer = rng.random() < 0.12
    margin = int(rng.integers(0, 25))
    top_extra = (label_size + 8) if header else 0
    bottom_extra = (label_size + 8) if footer else 0
    meta.update(header=header, footer=footer)

    content = (margin, margin + top_extra, width - margin, height - margin - bottom_extra)
    max_panels = int(rng.choice([2, 2, 3, 4, 4, 6, 6, 8, 9, 12]))
    depth = 1 if max_panels <= 3 else (2 if max_panels <= 6 else 3)
    cells = _layout(rng, content, depth, gap + outside_room, max_panels)
    if len(cells) < 2:
        cells = _layout(rng, content, 1, gap + outside_room, 2)
    cells = [cells[i] for i in _reading_order(cells)]
    # Room for an outside label above each panel: the panel starts below it.
    boxes = [(x0, y0 + outside_room, x1, y1) for x0, y0, x1, y1 in cells]
    boxes = [b for b in boxes if b[2] - b[0] >= 40 and b[3] - b[1] >= 40]
    meta["layout_cells"] = len(boxes)

    canvas = Image.new("RGB", (width, height), bg)
    kinds_list = list(_KIND_WEIGHTS)
    probs = np.array([_KIND_WEIGHTS[k] for k in kinds_list])
    # Many figures are all one modality (e.g. a row of MR images).
    uniform_kind = kinds_list[int(rng.choice(len(kinds_list), p=probs / probs.sum()))] if rng.random() < 0.45 else None
    if uniform_kind == "diagram":  # a grid of flow charts is not a thing
        uniform_kind = None
    kinds: list[str] = []
    for box in boxes:
        kind = uniform_kind or kinds_list[int(rng.choice(len(kinds_list), p=probs / probs.sum()))]
        kinds.append(kind)
        w, h = box[2] - box[0], box[3] - box[1]
        arr = PANEL_KINDS[kind](rng, w, h)
        canvas.paste(Image.fromarray(arr), box[:2])
    draw = ImageDraw.Draw(canvas)
    if frames:
        fw = int(rng.integers(1, 4))
        frame_colour = fg if rng.random() < 0.8 else (128, 128, 128)
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=frame_colour, width=fw)
    if rng.random() < 0.08:
        draw.rectangle([0, 0, width - 1, height - 1], outline=fg, width=int(rng.integers(1, 4)))
        meta["outer_frame"] = True

    arr_now = np.asarray(canvas.convert("L"))
    # Arrows on images (radiology) and arrows crossing gaps between panels (sequences).
    if rng.random() < 0.3:
        for x0, y0, x1, y1 in boxes:
            if rng.random() < 0.5:
                ex, ey = int(rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))), int(rng.uniform(y0 + 0.3 * (y1 - y0), y1 - 0.3 * (y1 - y0)))
                _draw_arrow(draw, (ex + 25, ey - 25), (ex, ey), (255, 255, 0) if rng.random() < 0.5 else (255, 255, 255), 2)
        meta["image_arrows"] = True
    if gap >= 10 and rng.random() < 0.2:
        for a, b in zip(boxes, boxes[1:]):
            if abs(a[1] - b[1]) < 5 and 0 < b[0] - a[2] <= gap + outside_room + 2:
                cy = (max(a[1], b[1]) + min(a[3], b[3])) // 2
                _draw_arrow(draw, (a[2] - 12, cy), (b[0] + 12, cy), fg, 2)
                meta["gap_arrows"] = True

    seq, scheme = _label_sequence(rng, len(boxes))
    text_style = str(rng.choice(["bare", "bare", "bare", "paren", "dot", "close"]))
    font_name = _FONT_FILES[int(rng.integers(len(_FONT_FILES)))]
    font = _font(font_name, label_size)
    boxed = rng.random() < 0.15
    meta.update(label_scheme=scheme, label_style=text_style, label_font=font_name, label_size=label_size, boxed=boxed)
    labels: list[str | None] = []
    label_boxes: list[Box | None] = []
    for box, label in zip(boxes, seq):
        if label_pos == "none":
            labels.append(None)
            label_boxes.append(None)
            continue
        text = _label_text(label, text_style)
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        x0, y0, x1, y1 = box
        pad = int(max(3, label_size * 0.3))
        if label_pos == "inside_tl":
            pos = (x0 + pad, y0 + pad)
        elif label_pos == "inside_tr":
            pos = (x1 - pad - tw, y0 + pad)
        elif label_pos == "inside_bl":
            pos = (x0 + pad, y1 - pad - th)
        elif label_pos == "inside_br":
            pos = (x1 - pad - tw, y1 - pad - th)
        else:  # outside_tl: in the room reserved above the panel
            pos = (x0, y0 - outside_room + 2)
        region = (pos[0], pos[1], pos[0] + tw, pos[1] + th)
        if tw >= (x1 - x0) - 2 * pad or th >= (y1 - y0) - 2 * pad:
            labels.append(None)
            label_boxes.append(None)
            continue
        if boxed and label_pos != "outside_tl":
            draw.rectangle([region[0] - 3, region[1] - 3, region[2] + 3, region[3] + 3], fill=(255, 255, 255))
            colour = (0, 0, 0)
        elif label_pos == "outside_tl":
            colour = fg
        else:
            dark = _mean_brightness(arr_now, region) < 128
            colour = ((255, 255, 255) if rng.random() < 0.75 else (255, 230, 0)) if dark else (0, 0, 0)
        draw.text((pos[0] - tx0, pos[1] - ty0), text, font=font, fill=colour)
        labels.append(label)
        label_boxes.append(tuple(int(v) for v in region))

    strip_font = _font("DejaVuSans.ttf", max(10, int(label_size * 0.8)))
    if header:
        top_row = [b for b in boxes if b[1] - outside_room <= content[1] + 2]
        for i, b in enumerate(top_row):
            draw.text((b[0] + 4, content[1] - top_extra + 2), ["Baseline", "Follow-up", "Control", "Treated"][i % 4], font=strip_font, fill=fg)
    if footer:
        text = "Arrows indicate the lesion; scale bars, 100 um."
        draw.text((margin + 4, height - margin - bottom_extra + 4), text, font=strip_font, fill=fg)

    jpeg_quality = int(rng.integers(45, 96)) if rng.random() < 0.7 else None
    meta["jpeg_quality"] = jpeg_quality
    if jpeg_quality:
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=jpeg_quality)
        buf.seek(0)
        canvas = Image.open(buf).convert("RGB")

    caption = _caption(rng, labels, seq, kinds)
    return SyntheticFigure(
        image=canvas, boxes=boxes, labels=labels, label_boxes=label_boxes, caption_labels=list(seq), kinds=kinds,
        caption=caption, meta=meta,
    )


def _caption(rng, labels: list[str | None], seq: list[str], kinds: list[str]) -> str:
    """A PubMed-style caption naming every panel with the figure's label scheme."""
    lead = ["Imaging findings in a 54-year-old man.", "Representative images of the cohort.", "Overview of the case.", ""][int(rng.integers(4))]
    style = str(rng.choice(["({})", "{}.", "{})", "({})"]))
    parts = [lead] if lead else []
    for label, kind in zip(seq, kinds):
        parts.append(f"{style.format(label)} {_KIND_WORDS[kind][0].upper()}{_KIND_WORDS[kind][1:]}.")
    return " ".join(parts)


def make_figures(n: int, seed: int = 0) -> list[SyntheticFigure]:
    """``n`` figures with seeds ``seed``, ``seed + 1``, ..."""
    return [make_figure(seed + i) for i in range(n)]
