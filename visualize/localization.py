"""Localisation scores of a saliency map against a ground-truth mask, and their chance levels.

* **Pointing game** (Zhang et al., ECCV 2016, without their 15-px tolerance): a hit when the
  map's maximum, at the image's own resolution, falls inside the mask. A map that is zero
  everywhere has no maximum and counts as a miss. Chance: a uniformly random point hits
  with probability ``mask area / image area``.
* **Cell pointing**: a hit when the maximal *patch cell* of the grid map overlaps the mask.
  On a coarse grid a small finding covers part of one cell, and the upsampled maximum sits
  at a cell centre that may miss it; this variant asks only whether the model picked the
  right cell. Chance: the fraction of cells that overlap the mask.
* **Energy fraction**: ``sum(map inside mask) / sum(map)`` (Score-CAM's "energy-based
  pointing game"). Chance (a uniform map): the mask's area fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LocalizationScore", "ScoreTable", "cell_coverage", "score_map"]


@dataclass(frozen=True)
class LocalizationScore:
    pointing: bool
    cell_pointing: bool
    energy: float
    chance_pointing: float     # = chance energy (mask area fraction)
    chance_cell: float


def cell_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(grid_h, grid_w) bool: which cells of a grid laid over the whole image contain a mask pixel.

    Cell ``(r, c)`` spans rows ``floor(r * H / gh) .. ceil((r + 1) * H / gh)`` (and likewise
    for columns), so a pixel on a shared boundary counts for both cells.
    """
    height, width = mask.shape
    rows, cols = grid
    covered = np.zeros(grid, dtype=bool)
    for r in range(rows):
        y0, y1 = (r * height) // rows, -((-(r + 1) * height) // rows)
        for c in range(cols):
            x0, x1 = (c * width) // cols, -((-(c + 1) * width) // cols)
            covered[r, c] = mask[y0:y1, x0:x1].any()
    return covered


def score_map(image_map: np.ndarray, grid_map: np.ndarray, mask: np.ndarray) -> LocalizationScore:
    """Scores of one map: ``image_map`` at the mask's size, ``grid_map`` the same map on its patch grid."""
    if image_map.shape != mask.shape:
        raise ValueError(f"map {image_map.shape} and mask {mask.shape} differ in size")
    mask = mask.astype(bool)
    area = float(mask.mean())
    covered = cell_coverage(mask, grid_map.shape)
    total = float(image_map.sum())
    has_peak = float(grid_map.max()) > 0 and total > 0
    if has_peak:
        peak = np.unravel_index(int(np.argmax(image_map)), image_map.shape)
        cell = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
        pointing, cell_pointing = bool(mask[peak]), bool(covered[cell])
        energy = float(image_map[mask].sum()) / total
    else:
        pointing = cell_pointing = False
        energy = 0.0
    return LocalizationScore(pointing, cell_pointing, energy, area, float(covered.mean()))


@dataclass
class ScoreTable:
    """Running means of scores per group (e.g. ``all``, ``small``, ``large``)."""

    groups: dict[str, list[LocalizationScore]] = field(default_factory=dict)

    def add(self, score: LocalizationScore, *groups: str) -> None:
        for group in ("all", *[g for g in groups if g]):
            self.groups.setdefault(group, []).append(score)

    def summary(self) -> dict[str, dict[str, float]]:
        """Means per group: ``all`` first, then phantom sizes small/medium/large, then other labels by name."""
        order = {"all": 0, "small": 1, "medium": 2, "large": 3}
        out = {}
        for group in sorted(self.groups, key=lambda g: (order.get(g, 4), g)):
            scores = self.groups[group]
            out[group] = {
                "n": len(scores),
                "pointing": float(np.mean([s.pointing for s in scores])),
                "cell_pointing": float(np.mean([s.cell_pointing for s in scores])),
                "energy": float(np.mean([s.energy for s in scores])),
                "chance_pointing": float(np.mean([s.chance_pointing for s in scores])),
                "chance_cell": float(np.mean([s.chance_cell for s in scores])),
            }
        return out
