"""Pictures of Grad-CAM maps: the word grid figure (matplotlib) and a small overlay thumbnail (PIL).

The figure shows the image, the whole-caption map and one panel per word in a grid that
stays readable for a 40-word caption (six columns, the word as each panel's title), a
shared colour bar for the word panels, and the caption with the ITM match probability as
the title. Panels keep the original image's aspect ratio: the maps, computed on the
model's square input, are stretched back over the original picture.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from models.gradcam import GradCam, upsample_map
from utils.atomic import atomic_open

__all__ = ["FIGURE_FORMATS", "blend", "display_copy", "draw_gradcam_figure", "overlay_thumbnail"]

FIGURE_FORMATS = ("png", "pdf", "svg", "jpg")
COLORMAP = "jet"
OVERLAY_ALPHA = 0.5


def display_copy(image: Image.Image, max_side: int) -> Image.Image:
    """A copy no larger than ``max_side`` on its long side (drawing a 6000-px figure 40 times is slow)."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _plain(text: str) -> str:
    """Text matplotlib shows as it is: ``$`` would start mathtext (``$5 and $10`` renders as maths)."""
    return text.replace("$", r"\$")


def _label(word: str, limit: int = 20) -> str:
    return _plain(word if len(word) <= limit else word[: limit - 1] + "\u2026")


def blend(pixels: np.ndarray, values: np.ndarray, vmax: float) -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 with ``values`` (H, W) drawn over it in the colour map, 0..vmax; uint8."""
    heat = colormaps[COLORMAP](np.clip(values / max(vmax, 1e-12), 0.0, 1.0))[..., :3] * 255.0
    mixed = (1 - OVERLAY_ALPHA) * pixels.astype(np.float32) + OVERLAY_ALPHA * heat
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def draw_gradcam_figure(image: Image.Image, cam: GradCam, out_path: str | Path, *, columns: int = 6,
                        panel_inches: float = 2.2, max_panel_px: int = 260, note: str = "") -> None:
    """Write the word-grid figure of ``cam`` over ``image`` (the original picture) to ``out_path``.

    The format follows the suffix (``.png``, ``.pdf``, ``.svg``, ``.jpg``); the file is
    written atomically.
    """
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"{out_path}: figure format must be one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    shown = display_copy(image, max_panel_px).convert("RGB")
    pixels = np.asarray(shown)
    height, width = pixels.shape[:2]
    word_maps = upsample_map(cam.word_maps, (height, width))
    caption_map = upsample_map(cam.caption_map, (height, width))
    vmax = float(max(cam.word_maps.max(), 1e-12))
    cmap = colormaps[COLORMAP]

    panels = 2 + len(cam.words)
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    panel_h = panel_inches * height / width
    title_lines = textwrap.wrap(cam.caption, width=int(columns * panel_inches * 9)) or [""]
    header = (len(title_lines) + 2 + (1 if note else 0)) * 0.22
    fig = Figure(figsize=(columns * panel_inches, rows * (panel_h + 0.35) + header + 1.0))
    FigureCanvasAgg(fig)
    top = 1 - header / fig.get_figheight()
    bottom = 1.0 / fig.get_figheight()
    grid = fig.add_gridspec(rows, columns, left=0.02, right=0.98, top=top, bottom=bottom, hspace=0.3, wspace=0.05)
    summary = (f"ITM match probability {cam.itm_probability:.3f}  |  fusion layer {cam.layer}  |  "
               f"{cam.grid[0]}x{cam.grid[1]} patch grid  |  {len(cam.words)} words")
    if cam.dropped_words:
        summary += f" (+{len(cam.dropped_words)} cut by max_length)"
    fig.suptitle(_plain("\n".join(title_lines + [summary] + ([note] if note else []))), fontsize=10, y=0.995, va="top")

    def panel(index: int, title: str, values: np.ndarray | None, scale: float) -> None:
        ax = fig.add_subplot(grid[index // columns, index % columns])
        ax.imshow(pixels if values is None else blend(pixels, values, scale),
                  interpolation="bilinear" if max(height, width) < 96 else "antialiased")
        ax.set_title(title, fontsize=10, pad=3)
        ax.set_axis_off()

    panel(0, "image", None, vmax)
    panel(1, "whole caption (own scale)", caption_map, float(max(cam.caption_map.max(), 1e-12)))
    for i, word in enumerate(cam.words):
        panel(2 + i, _label(word), word_maps[i], vmax)
    bar_ax = fig.add_axes((0.25, 0.55 / fig.get_figheight(), 0.5, 0.15 / fig.get_figheight()))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, vmax), cmap=cmap), cax=bar_ax, orientation="horizontal")
    bar.set_label("Grad-CAM of the word panels (attention x positive gradient, mean over heads)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    with atomic_open(out_path, "wb") as handle:
        fig.savefig(handle, format="jpeg" if fmt == "jpg" else fmt, dpi=100)


def overlay_thumbnail(image: Image.Image, grid_map: np.ndarray, max_side: int = 192) -> Image.Image:
    """A small RGB picture of ``image`` with ``grid_map`` (own scale) blended over it."""
    small = display_copy(image, max_side).convert("RGB")
    values = upsample_map(grid_map, (small.height, small.width))
    return Image.fromarray(blend(np.asarray(small), values, float(values.max())))
