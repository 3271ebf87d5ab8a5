"""Eight compound figures laid out by hand from real images shipped in packages: a small extra check.

The random generators (``realistic.py``, ``realistic2.py``) draw many figures
from distributions their author chose. These figures are written out one by
one instead, each copying a kind of PubMed figure: every panel box, every
label position and colour is a number in this file, the content is real
(scikit-image's photographs and micrographs, pydicom's CT, MR and ultrasound
test files, matplotlib charts with ticks, legends and axis titles). They
were written before the splitter was tuned on the second family and are
scored by the benchmark only. Eight figures are too few to be a verdict;
they guard against the generators' shared habits.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data.subfigure.realistic import RealisticFigure, draw_chart
from data.subfigure.realistic2 import _dicom_rgb
from data.subfigure.synthetic import _draw_arrow, _font, _resize

__all__ = ["handmade_figures", "HANDMADE_NAMES"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Panel:
    box: Box
    content: str  # "sk:<file>" (scikit-image data), "dcm:<file>" (pydicom test file), "chart:<seed>"
    label: str | None = None
    at: tuple[int, int] | None = None  # top-left of the label's ink, figure pixels
    colour: tuple[int, int, int] = (0, 0, 0)


@functools.lru_cache(maxsize=None)
def _skimage(name: str) -> np.ndarray:
    import skimage.data

    with Image.open(os.path.join(os.path.dirname(skimage.data.__file__), name)) as im:
        return np.asarray(im.convert("RGB"))


def _centre_crop(arr: np.ndarray, w: int, h: int, zoom: float = 1.0) -> np.ndarray:
    """The largest centred window of aspect w:h (shrunk by ``zoom``), resized to w x h."""
    ah, aw = arr.shape[:2]
    cw, ch = (int(ah * w / h), ah) if aw / ah > w / h else (aw, int(aw * h / w))
    cw, ch = max(1, int(cw * zoom)), max(1, int(ch * zoom))
    x, y = (aw - cw) // 2, (ah - ch) // 2
    return _resize(np.ascontiguousarray(arr[y : y + ch, x : x + cw]), w, h)


def _letterbox(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """The whole image scaled into w x h on black (scans and screenshots are shown whole)."""
    ah, aw = arr.shape[:2]
    scale = min(w / aw, h / ah)
    sw, sh = max(1, int(aw * scale)), max(1, int(ah * scale))
    out = np.zeros((h, w, 3), np.uint8)
    out[(h - sh) // 2 : (h - sh) // 2 + sh, (w - sw) // 2 : (w - sw) // 2 + sw] = _resize(np.ascontiguousarray(arr), sw, sh)
    return out


def _chart_pixels(seed: int, w: int, h: int) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    FigureCanvasAgg(fig)
    draw_chart(np.random.default_rng(seed), fig, fig.add_subplot(111), float(np.clip(min(w, h) / 28, 6, 10)))
    fig.tight_layout(pad=0.3)
    fig.canvas.draw()
    return _resize(np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]), w, h)


def _content(spec: str, w: int, h: int) -> np.ndarray:
    kind, _, name = spec.partition(":")
    if kind == "chart":
        return _chart_pixels(int(name), w, h)
    if kind == "dcm":
        arr = _dicom_rgb(name)
        if arr is None:  # pydicom missing: a scikit-image stand-in keeps the figure's layout
            arr = _skimage("camera.png")
        return _letterbox(arr, w, h)
    zoom = 1.0
    if "@" in name:
        name, z = name.split("@")
        zoom = float(z)
    return _centre_crop(_skimage(name), w, h, zoom)


def _compose(size: tuple[int, int], page: tuple[int, int, int], panels: list[_Panel], label_size: int,
             font: str = "DejaVuSans-Bold.ttf", extra=None) -> tuple[Image.Image, list[Box | None]]:
    canvas = Image.new("RGB", size, page)
    for p in panels:
        x0, y0, x1, y1 = p.box
        canvas.paste(Image.fromarray(_content(p.content, x1 - x0, y1 - y0)), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    if extra is not None:
        extra(draw)
    face = _font(font, label_size)
    label_boxes: list[Box | None] = []
    for p in panels:
        if p.label is None or p.at is None:
            label_boxes.append(None)
            continue
        bx0, by0, bx1, by1 = draw.textbbox((0, 0), p.label, font=face)
        draw.text((p.at[0] - bx0, p.at[1] - by0), p.label, font=face, fill=p.colour)
        label_boxes.append((p.at[0], p.at[1], p.at[0] + bx1 - bx0, p.at[1] + by1 - by0))
    return canvas, label_boxes


W = (255, 255, 255)
K = (0, 0, 0)
Y = (255, 230, 0)


def _figures() -> list[tuple[str, tuple, list[_Panel], int, str, object, str]]:
    """(name, size, page colour, panels, label size, font, extra drawing, caption) of each figure."""
    small = _font("DejaVuSans.ttf", 14)

    def headers(draw):  # column headers over a micrograph grid
        for x, text in ((150, "DAPI"), (545, "CD31"), (935, "Merge")):
            draw.text((x, 4), text, font=small, fill=K)

    def separators(draw):  # uneven rows parted by thin black lines, no gutter
        draw.line([(0, 360), (1100, 360)], fill=K, width=2)
        draw.line([(550, 0), (550, 360)], fill=K, width=2)
        draw.line([(366, 362), (366, 700)], fill=K, width=2)
        draw.line([(733, 362), (733, 700)], fill=K, width=2)

    def arrows(draw):
        _draw_arrow(draw, (300, 120), (250, 170), Y, 3)
        _draw_arrow(draw, (700, 150), (650, 200), W, 3)
        draw.text((14, 380), "R", font=small, fill=W)
        draw.text((1180, 380), "L", font=small, fill=W)

    def white_lines(draw):
        draw.line([(700, 0), (700, 760)], fill=W, width=2)
        draw.line([(702, 379), (1100, 379)], fill=W, width=2)

    def scale_bars(draw):
        for x, y in ((330, 300), (770, 300), (330, 640), (770, 640)):
            draw.rectangle([x, y, x + 80, y + 5], fill=K)
            draw.text((x + 10, y - 18), "50 \u00b5m", font=small, fill=K)

    return [
        ("radiology row on black, touching", (1200, 420), K, [
            _Panel((0, 0, 398, 420), "dcm:examples_overlay.dcm", "A", (10, 10), W),
            _Panel((401, 0, 799, 420), "dcm:693_J2KI.dcm", "B", (411, 10), W),
            _Panel((802, 0, 1200, 420), "dcm:CT_small.dcm", "C", (812, 10), W),
        ], 30, "DejaVuSans-Bold.ttf", arrows,
         "Abdominal and head imaging. (A) Axial T1-weighted MR image. (B) Axial CT of the head. (C) Axial CT at a "
         "lower level. Arrows mark the lesions."),
        ("histology 2x2, white gutters, scale bars", (900, 700), W, [
            _Panel((0, 0, 445, 345), "sk:ihc.png", "a", (8, 8)),
            _Panel((455, 0, 900, 345), "sk:ihc.png@0.5", "b", (463, 8)),
            _Panel((0, 355, 445, 700), "sk:cell.png", "c", (8, 363)),
            _Panel((455, 355, 900, 700), "sk:microaneurysms.png", "d", (463, 363)),
        ], 26, "DejaVuSerif-Bold.ttf", scale_bars,
         "Staining of the resected tissue. a, low power view; b, detail of the glands; c, cultured cells; "
         "d, retinal microaneurysms. Scale bars, 50 \u00b5m."),
        ("big micrograph beside two charts", (1000, 520), W, [
            _Panel((0, 0, 480, 520), "sk:ihc.png@0.7", "A", (8, 8), W),
            _Panel((500, 28, 1000, 250), "chart:11", "B", (500, 2)),
            _Panel((500, 298, 1000, 520), "chart:12", "C", (500, 272)),
        ], 24, "DejaVuSans-Bold.ttf", None,
         "Ki-67 staining and its quantification. (A) Immunohistochemistry. (B) Ki-67 index by group. (C) Survival."),
        ("two ultrasound screenshots touching", (1000, 380), W, [
            _Panel((0, 0, 500, 380), "dcm:examples_jpeg2k.dcm", "A", (6, 6), Y),
            _Panel((500, 0, 1000, 380), "dcm:examples_palette.dcm", "B", (506, 6), Y),
        ], 26, "DejaVuSans-Bold.ttf", None,
         "Sonography of the neck. A Power Doppler of the lymph node. B Transabdominal image with caliper."),
        ("micrograph grid 2x3 with column headers, no gutter", (1180, 590), W, [
            _Panel((0, 24, 393, 307), "sk:cell.png", "a", (6, 30), W),
            _Panel((393, 24, 786, 307), "sk:retina.jpg", "b", (399, 30), W),
            _Panel((786, 24, 1180, 307), "sk:microaneurysms.png", "c", (792, 30), W),
            _Panel((0, 307, 393, 590), "sk:coins.png", "d", (6, 313), W),
            _Panel((393, 307, 786, 590), "sk:retina.jpg@0.5", "e", (399, 313), W),
            _Panel((786, 307, 1180, 590), "sk:cell.png@0.6", "f", (792, 313), W),
        ], 24, "DejaVuSans-Bold.ttf", headers,
         "Immunofluorescence of the two groups (a-c) control, (d-f) treated; columns show nuclei, vessels and the merge."),
        ("uneven rows parted by lines, photos over charts", (1100, 700), W, [
            _Panel((0, 0, 549, 359), "sk:retina.jpg", "A", (8, 8), W),
            _Panel((552, 0, 1100, 359), "sk:astronaut.png", "B", (560, 8), W),
            _Panel((0, 363, 365, 700), "chart:21", "C", (4, 366)),
            _Panel((368, 363, 732, 700), "chart:22", "D", (372, 366)),
            _Panel((735, 363, 1100, 700), "chart:23", "E", (739, 366)),
        ], 24, "DejaVuSans-Bold.ttf", separators,
         "Fundus findings and measurements. A, fundus photograph; B, the patient; C-E, measurements over time."),
        ("big scan beside two zooms, white lines, labels top right", (1100, 760), K, [
            _Panel((0, 0, 699, 760), "dcm:examples_overlay.dcm", "a", (660, 10), W),
            _Panel((703, 0, 1100, 378), "sk:moon.png", "b", (1070, 10), W),
            _Panel((703, 381, 1100, 760), "sk:moon.png@0.5", "c", (1070, 391), W),
        ], 26, "DejaVuSans-Bold.ttf", white_lines,
         "MR image and details. (a) Axial image. (b, c) Magnified views of the boxed areas."),
        ("photo row without printed labels", (1200, 330), W, [
            _Panel((0, 0, 395, 330), "sk:chelsea.png"),
            _Panel((402, 0, 797, 330), "sk:coffee.png"),
            _Panel((804, 0, 1200, 330), "sk:rocket.jpg"),
        ], 24, "DejaVuSans-Bold.ttf", None,
         "Photographs taken at the visits: (A) baseline, (B) one month, (C) one year."),
    ]


HANDMADE_NAMES = tuple(f[0] for f in _figures())


def handmade_figures() -> list[RealisticFigure]:
    """The eight hand-placed figures with their ground truth (panels in reading order)."""
    out = []
    for name, size, page, panels, label_size, font, extra, caption in _figures():
        image, label_boxes = _compose(size, page, panels, label_size, font, extra)
        boxes = [p.box for p in panels]
        top = [p.label or chr(ord("A") + i) for i, p in enumerate(panels)]
        labels = [p.label for p in panels]
        meta = {"name": name, "panels": len(panels), "label_place": "none" if all(x is None for x in labels) else "printed"}
        out.append(RealisticFigure(image, boxes, labels, label_boxes, top, caption, top, meta))
    return out
