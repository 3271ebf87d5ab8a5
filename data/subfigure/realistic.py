"""Development figures that look like real PubMed compound figures (issue 11).

``synthetic.py`` draws tidy figures: every panel framed by a clean gutter, one
label per panel. Real PMC figures break those rules, and the splitter scored
much lower on them. This generator composes figures the way journals print them:

* content: real images shipped inside installed packages (scikit-image's data,
  pydicom's CT/MR/ultrasound test files when pydicom is installed, matplotlib's
  MR slice and photo) and matplotlib charts with tick labels, legends, p-value
  stars, annotations and letters on the axes (about half of the panels);
  micrographs carry their own text: scale bars with "50 um", magnifications,
  structure letters ("T", "N"), numbers, arrows;
* layouts: regular grids, large irregular grids (12-18 cells, some spanning two
  cells), panels that touch with no gutter, thin black/white separator lines,
  frames, only a colour change between panels;
* labels: upper or lower case, bare / "(a)" / "a." forms, inside the panel on
  the image or on a contrasting patch, above the panel in the page margin, or
  not printed at all (many real figures have none); multi-character labels
  b1-b4 for a group of sub-panels (the caption then names b1-b4 as sub-labels of b);
* captions in the caption forms of the issue (bare, "a,", "(a.)", "1.", ...);
* JPEG compression and rescaling.

Everything is a pure function of the seed. Seeds 0-199 are the development
set used while tuning; seeds 5000-5099 are the BLIND part, scored once
(docs/benchmarks/subfigure.md).
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from data.subfigure.synthetic import (
    _crop_to_aspect,
    _draw_arrow,
    _font,
    _mri_slice,
    _photo_assets,
    _reading_order,
    _resize,
)

__all__ = ["RealisticFigure", "make_realistic_figure", "DEV_SEEDS", "BLIND_SEEDS", "BLIND3_SEEDS", "BLIND4_SEEDS"]

Box = tuple[int, int, int, int]
DEV_SEEDS = range(0, 200)
BLIND_SEEDS = range(5000, 5100)
# Fixed before the third round of tuning (2026-12-02), after BLIND_SEEDS had been scored twice.
BLIND3_SEEDS = range(8000, 8100)
# Fixed before the fourth round (2026-12-02), after BLIND3_SEEDS had been scored once.
BLIND4_SEEDS = range(10000, 10100)


@dataclass
class RealisticFigure:
    """A composed figure and its ground truth, panels in reading order."""

    image: Image.Image
    boxes: list[Box]
    labels: list[str | None]  # printed label per panel ("A", "b2"), None where none is printed
    label_boxes: list[Box | None]
    caption_labels: list[str]  # the caption's top-level label for each panel ("b" for panel "b2")
    caption: str
    expected_caption_labels: list[str]  # the caption's top-level label set, in order
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- real images from packages

@functools.lru_cache(maxsize=None)
def _medical_assets() -> tuple[tuple[str, np.ndarray], ...]:
    """CT / MR / ultrasound frames from pydicom's shipped test files (if installed) + matplotlib's MR slice."""
    out = []
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        pydicom = None
    if pydicom is not None:
        for name in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_ybr_color.dcm"):
            try:
                path = get_testdata_file(name, download=False)
                if not path:
                    continue
                ds = pydicom.dcmread(path)
                arr = ds.pixel_array
                if arr.ndim == 4:
                    arr = arr[len(arr) // 2]
                if arr.ndim == 3 and ds.get("PhotometricInterpretation", "").startswith("YBR"):
                    from pydicom.pixels import convert_color_space

                    arr = convert_color_space(arr, ds.PhotometricInterpretation, "RGB")
                arr = arr.astype(np.float64)
                lo, hi = np.percentile(arr, 1), np.percentile(arr, 99.5)
                arr = np.clip((arr - lo) / max(1e-6, hi - lo) * 255, 0, 255).astype(np.uint8)
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                out.append((name, arr))
            except Exception:  # a test file this pydicom cannot decode is simply not used
                continue
    mr = _mri_slice()
    if mr is not None:
        out.append(("s1045", np.repeat(mr[..., None], 3, axis=2)))
    return tuple(out)


_MICRO = ("ihc.png", "cell.png", "microaneurysms.png", "retina.jpg", "coins.png", "hubble_deep_field.jpg")


def _asset(rng, group: str) -> np.ndarray:
    photos = dict(_photo_assets())
    if group == "medical":
        med = _medical_assets()
        if med:
            return med[int(rng.integers(len(med)))][1]
        group = "micro"
    names = [n for n in (_MICRO if group == "micro" else tuple(photos)) if n in photos]
    return photos[names[int(rng.integers(len(names)))]]


# --------------------------------------------------------------------------- panel content

_GENES = ["TP53", "KRAS", "EGFR", "MYC", "CDK4", "IL6", "TNF", "VEGFA", "BRCA1", "PTEN", "GAPDH", "ACTB"]
_GROUPS = ["Ctrl", "Sham", "LPS", "KO", "WT", "Vehicle", "Drug", "siNC", "siRNA", "A", "B", "C", "D"]


def _chart(rng, w: int, h: int) -> np.ndarray:
    """A matplotlib chart at exactly w x h, with the text real charts carry."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(max(w, 40) / dpi, max(h, 40) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    draw_chart(rng, fig, ax, float(np.clip(min(w, h) / 28, 5, 10)))
    try:
        fig.tight_layout(pad=0.3)
    except Exception:
        pass
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return _resize(np.ascontiguousarray(arr), w, h)


def draw_chart(rng, fig, ax, fs: float) -> None:
    """One random chart of the kinds PMC figures carry (bars with stars, lines with a legend, scatter, survival,
    heat map, box plot, ROC, histogram) drawn on ``ax`` with font size ``fs``; a colour bar goes on ``fig``."""
    kind = int(rng.integers(8))
    if kind == 0:  # bars with error bars and stars
        n = int(rng.integers(2, 6))
        names = list(rng.choice(_GROUPS, n, replace=False))
        vals = rng.uniform(1, 10, n)
        ax.bar(range(n), vals, yerr=rng.uniform(0.2, 1.5, n), capsize=3,
               color=[("#333", "#888", "#c33", "#36c")[int(rng.integers(4))] for _ in range(n)])
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, fontsize=fs)
        for i in range(1, n):
            if rng.random() < 0.5:
                ax.text(i, vals[i] + 1.7, ["*", "**", "***", "n.s."][int(rng.integers(4))], ha="center", fontsize=fs)
        ax.set_ylim(0, vals.max() + 3)
    elif kind == 1:  # lines with legend
        x = np.arange(0, int(rng.integers(5, 15)))
        for label in ["Control", "Treated", "Sham"][: int(rng.integers(1, 4))]:
            ax.plot(x, np.cumsum(rng.normal(0.5, 1, x.size)), marker="o", ms=3, label=label)
        ax.legend(fontsize=fs * 0.8, frameon=rng.random() < 0.5)
    elif kind == 2:  # scatter with regression and r
        xs = rng.normal(0, 1, 60)
        ys = xs * rng.uniform(0.3, 1) + rng.normal(0, 0.5, 60)
        ax.scatter(xs, ys, s=6)
        ax.plot([-2, 2], [-2 * 0.6, 2 * 0.6], "k--", lw=1)
        ax.text(0.05, 0.9, f"r = {rng.uniform(0.3, 0.9):.2f}\np < 0.001", transform=ax.transAxes, fontsize=fs)
    elif kind == 3:  # Kaplan-Meier with p-value and numbers at risk
        for _ in range(2):
            t = np.sort(rng.exponential(20, 40))
            ax.step(t, np.linspace(1, 0, t.size), where="post")
        ax.text(0.6, 0.85, f"p = 0.0{int(rng.integers(1, 5))}", transform=ax.transAxes, fontsize=fs)
        ax.set_ylim(0, 1.05)
    elif kind == 4:  # heatmap with gene names and colour bar
        genes = list(rng.choice(_GENES, int(rng.integers(4, 9)), replace=False))
        im = ax.imshow(rng.normal(0, 1, (len(genes), int(rng.integers(4, 9)))), cmap=["RdBu_r", "viridis", "coolwarm"][int(rng.integers(3))], aspect="auto")
        ax.set_yticks(range(len(genes)))
        ax.set_yticklabels(genes, fontsize=fs * 0.8)
        fig.colorbar(im, ax=ax)
    elif kind == 5:  # box plot with letter groups on the axis
        n = int(rng.integers(2, 5))
        ax.boxplot([rng.normal(m, 1, 30) for m in rng.uniform(0, 3, n)])
        ax.set_xticks(range(1, n + 1))
        ax.set_xticklabels([chr(ord("A") + i) for i in range(n)] if rng.random() < 0.5 else [f"G{i + 1}" for i in range(n)], fontsize=fs)
    elif kind == 6:  # ROC
        fpr = np.sort(rng.uniform(0, 1, 30))
        ax.plot(np.r_[0, fpr, 1], np.r_[0, np.sqrt(fpr), 1])
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.text(0.5, 0.2, f"AUC = 0.{int(rng.integers(70, 95))}", fontsize=fs)
    else:  # histogram
        ax.hist(rng.normal(0, 1, 300), bins=int(rng.integers(10, 30)), color="#69c")
    ax.set_xlabel(["Time (days)", "Weeks", "Dose (mg/kg)", "Age (years)", "Group", ""][int(rng.integers(6))], fontsize=fs)
    ax.set_ylabel(["Relative expression", "Survival", "Volume (mm3)", "Count", "Score", "%"][int(rng.integers(6))], fontsize=fs)
    ax.tick_params(labelsize=fs)
    if rng.random() < 0.3:
        ax.set_title(["Baseline", "Day 7", "Cohort 2", "HepG2", "In vivo"][int(rng.integers(5))], fontsize=fs)


def _image_panel(rng, w: int, h: int, group: str) -> np.ndarray:
    arr = _crop_to_aspect(rng, _asset(rng, group), w, h)
    if rng.random() < 0.3:
        arr = arr[:, ::-1]
    return _resize(np.ascontiguousarray(arr), w, h)


def _annotate_image(rng, im: Image.Image, box: Box, fs: int) -> None:
    """In-image text of micrographs and scans: scale bar + unit, magnification, structure letters, numbers, arrows."""
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    colour = (255, 255, 255) if rng.random() < 0.7 else (0, 0, 0)
    font = _font("DejaVuSans.ttf", max(8, int(fs * rng.uniform(0.6, 1.0))))
    if rng.random() < 0.55:  # scale bar bottom right
        bar = int(w * rng.uniform(0.15, 0.3))
        by = y1 - int(h * 0.08)
        draw.rectangle([x1 - bar - 8, by, x1 - 8, by + max(2, h // 80)], fill=colour)
        if rng.random() < 0.6:
            draw.text((x1 - bar - 8, by - font.size - 3), f"{[10, 20, 50, 100, 200][int(rng.integers(5))]} \u00b5m", fill=colour, font=font)
    for _ in range(int(rng.integers(0, 3))):  # structure letters / numbers inside the image
        text = str(rng.choice(["T", "N", "L", "S", "*", "1", "2", "3", "M", "E", "#", "V"]))
        tx = x0 + int(w * rng.uniform(0.25, 0.75))
        ty = y0 + int(h * rng.uniform(0.25, 0.75))
        draw.text((tx, ty), text, fill=colour, font=font)
    if rng.random() < 0.2:  # magnification or stain at a corner
        text = str(rng.choice(["x400", "\u00d7200", "H&E", "40x", "T2W", "DWI"]))
        tx = x1 - int(font.getlength(text)) - 6 if rng.random() < 0.5 else x0 + 6
        draw.text((tx, y1 - font.size - 6), text, fill=colour, font=font)
    if rng.random() < 0.4:
        ex, ey = x0 + int(w * rng.uniform(0.3, 0.7)), y0 + int(h * rng.uniform(0.3, 0.7))
        _draw_arrow(draw, (ex + w // 8, ey - h // 8), (ex, ey), (255, 255, 0) if rng.random() < 0.5 else colour, 2)


# --------------------------------------------------------------------------- layouts

def _grid(rng, n_rows: int, n_cols: int, span: bool) -> list[tuple[int, int, int, int]]:
    """Cells (row, col, row_span, col_span) of a grid, some spanning two cells when ``span``."""
    taken = np.zeros((n_rows, n_cols), bool)
    cells = []
    for r in range(n_rows):
        for c in range(n_cols):
            if taken[r, c]:
                continue
            rs = cs = 1
            if span and rng.random() < 0.18:
                if c + 1 < n_cols and not taken[r, c + 1] and rng.random() < 0.5:
                    cs = 2
                elif r + 1 < n_rows:
                    rs = 2
            taken[r : r + rs, c : c + cs] = True
            cells.append((r, c, rs, cs))
    return cells


def _grid_shape(rng) -> tuple[int, int, bool, str]:
    """Rows, columns, whether cells may span two, and the layout's name."""
    roll = rng.random()
    if roll < 0.3:
        n_rows, n_cols, span, kind = 1, int(rng.integers(2, 5)), False, "row"
    elif roll < 0.6:
        n_rows, n_cols, span, kind = int(rng.integers(2, 4)), int(rng.integers(2, 4)), rng.random() < 0.4, "grid"
    elif roll < 0.8:
        n_rows, n_cols, span, kind = int(rng.integers(3, 5)), int(rng.integers(4, 6)), True, "large grid"
    else:
        n_rows, n_cols, span, kind = 2, 2, False, "grid"
    return n_rows, n_cols, span, kind


def _layout(rng, shape: tuple[int, int, bool, str], width: int, height: int, gap: int, margin: int,
            top_room: int) -> list[Box]:
    n_rows, n_cols, span, _ = shape
    cells = _grid(rng, n_rows, n_cols, span)
    col_w = rng.uniform(0.7, 1.3, n_cols) if rng.random() < 0.4 else np.ones(n_cols)
    row_h = rng.uniform(0.8, 1.2, n_rows) if rng.random() < 0.3 else np.ones(n_rows)
    avail_w = width - 2 * margin - gap * (n_cols - 1)
    avail_h = height - 2 * margin - (gap + top_room) * (n_rows - 1) - top_room
    xs = np.concatenate([[0], np.cumsum(col_w / col_w.sum() * avail_w)]).astype(int)
    ys = np.concatenate([[0], np.cumsum(row_h / row_h.sum() * avail_h)]).astype(int)
    boxes = []
    for r, c, rs, cs in cells:
        x0 = margin + xs[c] + gap * c
        x1 = margin + xs[c + cs] + gap * (c + cs - 1)
        y0 = margin + top_room + ys[r] + (gap + top_room) * r
        y1 = margin + top_room + ys[r + rs] + (gap + top_room) * (r + rs - 1)
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    return boxes


# --------------------------------------------------------------------------- captions

_PHRASES = [
    "axial CT image at the level of the lesion", "T2-weighted MR image", "haematoxylin and eosin staining",
    "immunohistochemistry for Ki-67", "quantification of the staining", "Western blot of the lysates",
    "survival of the two groups", "dose-response curves", "relative mRNA expression", "receiver operating characteristic curve",
    "gross specimen after resection", "confocal image of the cells", "fundus photograph of the right eye",
    "colony counts on day 7", "correlation between the two scores", "heat map of the top regulated genes",
    "dermoscopic image of the lesion", "ultrasound image of the nodule", "electron micrograph of the mitochondria",
]


def _caption(rng, top_labels: list[str], subs: dict[str, list[str]]) -> str:
    """A caption naming the top-level labels in one of the issue's forms; sub-labels in a parenthesised range."""
    lead = str(rng.choice(["Representative findings in the cohort.", "Treatment reduces tumour growth.",
                           "Imaging and histology of the case.", ""]))
    form = str(rng.choice(["paren", "paren", "dot", "comma", "bare", "close", "bold"]))
    phrases = [str(p) for p in rng.choice(_PHRASES, len(top_labels), replace=len(top_labels) > len(_PHRASES))]
    parts = []
    for label, phrase in zip(top_labels, phrases):
        text = phrase[0].upper() + phrase[1:]
        if label in subs:
            text += f" ({subs[label][0]}\u2013{subs[label][-1]}: consecutive sections)"
        marker = {"paren": f"({label})", "dot": f"{label}.", "comma": f"{label},", "bare": label,
                  "close": f"{label})", "bold": f"<b>{label}</b>"}[form]
        parts.append(f"{marker} {text}" + ("." if form != "comma" else ";"))
    body = " ".join(parts).rstrip(";") + ("." if form == "comma" else "")
    tail = str(rng.choice(["", " Scale bars, 50 \u00b5m.", " Data are mean \u00b1 SD; *P < 0.05."]))
    return (lead + " " + body).strip() + tail


# --------------------------------------------------------------------------- figure

def make_realistic_figure(seed: int) -> RealisticFigure:
    """One composed figure (pure function of ``seed``)."""
    rng = np.random.default_rng(seed + 7_919_000)
    width = int(rng.integers(700, 1800))
    shape = _grid_shape(rng)
    # Panels of real figures are roughly square to 3:2, whatever the grid.
    height = int(width * shape[0] / shape[1] * rng.uniform(0.65, 1.1))
    sep = str(rng.choice(["gutter", "gutter", "none", "line", "line", "frame", "colour"]))
    label_place = str(rng.choice(["inside", "inside", "inside", "outside", "patch", "none", "none"]))
    if sep in ("none", "line", "colour") and label_place == "outside":
        label_place = "inside"
    gap = int(rng.integers(4, 22)) if sep == "gutter" else (int(rng.integers(0, 6)) if sep == "frame" else 0)
    margin = int(rng.integers(0, 15))
    label_size = int(np.clip(width * rng.uniform(0.016, 0.032), 11, 44))
    top_room = label_size + 6 if label_place == "outside" else 0
    layout = shape[3]
    boxes = _layout(rng, shape, width, height, gap, margin, top_room)
    boxes = [boxes[i] for i in _reading_order(boxes)]
    boxes = [b for b in boxes if b[2] - b[0] >= 40 and b[3] - b[1] >= 40]
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    chart_share = float(rng.choice([0.0, 0.3, 0.5, 0.8, 1.0]))
    image_group = str(rng.choice(["micro", "medical", "photo"]))
    kinds = []
    for box in boxes:
        w, h = box[2] - box[0], box[3] - box[1]
        if rng.random() < chart_share:
            arr = _chart(rng, w, h)
            kinds.append("chart")
        else:
            group = image_group if rng.random() < 0.8 else str(rng.choice(["micro", "medical", "photo"]))
            arr = _image_panel(rng, w, h, group)
            kinds.append("image")
        if sep == "colour" and kinds[-1] == "image":
            tint = rng.uniform(0.75, 1.15, 3)
            arr = np.clip(arr.astype(np.float32) * tint, 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(arr), box[:2])
    for box, kind in zip(boxes, kinds):
        if kind == "image":
            _annotate_image(rng, canvas, box, label_size)
    draw = ImageDraw.Draw(canvas)
    if sep == "line":
        colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
        lw = int(rng.integers(1, 4))
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=lw)
    elif sep == "frame":
        lw = int(rng.integers(1, 3))
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 0, 0), width=lw)

    # Labels: top-level a, b, c...; a group of sub-panels b1..b4 in some large figures.
    n = len(boxes)
    upper = rng.random() < 0.6
    first = "A" if upper else "a"
    sub_group = n >= 6 and rng.random() < 0.25
    panel_labels: list[str] = []
    caption_labels: list[str] = []
    subs: dict[str, list[str]] = {}
    if sub_group:
        start = int(rng.integers(1, max(2, n - 4)))
        size = int(rng.integers(2, min(4, n - start) + 1))
        top = 0
        for i in range(n):
            if start <= i < start + size:
                letter = chr(ord(first) + top)
                panel_labels.append(f"{letter}{i - start + 1}")
                caption_labels.append(letter)
                subs.setdefault(letter, []).append(panel_labels[-1])
                if i == start + size - 1:
                    top += 1
            else:
                letter = chr(ord(first) + top)
                panel_labels.append(letter)
                caption_labels.append(letter)
                top += 1
    else:
        panel_labels = [chr(ord(first) + i) for i in range(n)]
        caption_labels = list(panel_labels)
    style = str(rng.choice(["bare", "bare", "bare", "paren", "dot"]))
    font = _font(str(rng.choice(["DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf"])), label_size)
    labels: list[str | None] = []
    label_boxes: list[Box | None] = []
    gray = np.asarray(canvas.convert("L"))
    for box, label in zip(boxes, panel_labels):
        if label_place == "none":
            labels.append(None)
            label_boxes.append(None)
            continue
        text = {"bare": "{}", "paren": "({})", "dot": "{}."}[style].format(label)
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        x0, y0, x1, y1 = box
        pad = max(3, label_size // 4)
        if label_place == "outside":
            pos = (x0 + 1, y0 - top_room + 2)
        else:
            pos = (x0 + pad, y0 + pad)
        region = (pos[0], pos[1], pos[0] + tw, pos[1] + th)
        if tw > (x1 - x0) // 2 or th > (y1 - y0) // 2:
            labels.append(None)
            label_boxes.append(None)
            continue
        if label_place == "patch":
            draw.rectangle([region[0] - 3, region[1] - 3, region[2] + 3, region[3] + 3], fill=(255, 255, 255))
            colour = (0, 0, 0)
        elif label_place == "outside":
            colour = (0, 0, 0)
        else:
            patch = gray[max(0, region[1]) : region[3], max(0, region[0]) : region[2]]
            dark = patch.size and patch.mean() < 120
            colour = ((255, 255, 255) if rng.random() < 0.8 else (255, 230, 0)) if dark else (0, 0, 0)
        draw.text((pos[0] - tx0, pos[1] - ty0), text, font=font, fill=colour)
        labels.append(label)
        label_boxes.append(tuple(int(v) for v in region))

    top_labels = list(dict.fromkeys(caption_labels))
    caption = _caption(rng, top_labels, subs)
    scale = float(rng.choice([1.0, 1.0, 0.8, 0.6]))
    if scale != 1.0:
        canvas = canvas.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.BILINEAR)
        boxes = [tuple(int(round(v * scale)) for v in b) for b in boxes]
        label_boxes = [tuple(int(round(v * scale)) for v in b) if b else None for b in label_boxes]
    quality = int(rng.integers(55, 95)) if rng.random() < 0.75 else None
    if quality:
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        canvas = Image.open(buf).convert("RGB")
    meta = dict(separator=sep, label_place=label_place, layout=layout, panels=n, sub_labels=bool(subs),
                charts=sum(k == "chart" for k in kinds), jpeg_quality=quality, scale=scale)
    return RealisticFigure(canvas, boxes, labels, label_boxes, caption_labels, caption, top_labels, meta)
