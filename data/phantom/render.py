"""Render one axial head phantom (8-bit grayscale) and its lesion-id mask from an :class:`ImageSpec`.

Everything is computed on whole arrays (no per-pixel Python loops), in pixel
units scaled by ``image_size / 128``, so a phantom looks the same at any size.
Edges are drawn with a one-pixel linear ramp from an approximate signed
distance, which gives partial-volume blur instead of jagged cartoon edges.

Orientation (radiological convention): anterior is at the top of the image
and the patient's LEFT is on the image's RIGHT. Head coordinates used below:
``u`` grows towards the patient's left (image right when unrotated), ``v``
grows towards anterior (image up when unrotated).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from data.phantom.attributes import ImageSpec, Lesion

__all__ = [
    "MIN_IMAGE_SIZE",
    "MAX_IMAGE_SIZE",
    "SIZE_RANGES",
    "LOBE_ANCHORS",
    "LOBE_SECTORS_DEG",
    "TISSUE_VALUES",
    "PlacementError",
    "render_phantom",
]

MIN_IMAGE_SIZE = 64  # below this a "small" lesion is under 3 px wide
MAX_IMAGE_SIZE = 1024
_REFERENCE_SIZE = 128  # thicknesses below are in pixels at this image size

# Longest lesion diameter as a fraction of the image width, per size class (gaps between classes on purpose).
SIZE_RANGES = {"small": (0.055, 0.07), "medium": (0.085, 0.105), "large": (0.125, 0.145)}
OVAL_ASPECT = (1.6, 2.0)  # long / short axis

# Lesion centres per lobe in brain-normalised coordinates (|u|, v): 1.0 = brain edge.
LOBE_ANCHORS = {
    "frontal": (0.36, 0.56),
    "temporal": (0.72, 0.10),
    "parietal": (0.62, -0.38),
    "occipital": (0.26, -0.70),
}
# The same lobes as angle sectors, measured at the head centre from the anterior direction (degrees):
# a lesion's centroid in brain-normalised coordinates falls in its lobe's sector.
LOBE_SECTORS_DEG = {
    "frontal": (0.0, 57.0),
    "temporal": (57.0, 102.0),
    "parietal": (102.0, 140.0),
    "occipital": (140.0, 180.0),
}
_JITTER_PX = 3.0  # lesion centre jitter around the anchor (reference pixels)

# Layer thicknesses from the outer scalp surface inwards (reference pixels).
_SCALP_PX, _BONE_PX, _CSF_PX = 3.0, 4.5, 1.2
_HEAD_SEMI_AXES = {"lateral": (0.375, 0.395), "ap": (0.44, 0.46)}  # fractions of the image size
_HEAD_OFFSET, _HEAD_ROTATION_DEG = 0.02, 10.0

# Display values in [0, 1] (CT in a brain window: bone saturates white, air far below black).
TISSUE_VALUES = {
    "CT": dict(air=-0.3, scalp=0.47, bone=1.25, diploe=1.1, csf=0.13, gm=0.58, wm=0.47, hyper=0.88, hypo=0.22),
    "T1": dict(air=0.0, scalp=0.8, bone=0.05, diploe=0.55, csf=0.1, gm=0.42, wm=0.63, hyper=0.97, hypo=0.18),
    "T2": dict(air=0.0, scalp=0.55, bone=0.04, diploe=0.35, csf=0.93, gm=0.55, wm=0.37, hyper=0.9, hypo=0.12),
    "FLAIR": dict(air=0.0, scalp=0.5, bone=0.04, diploe=0.3, csf=0.07, gm=0.6, wm=0.45, hyper=0.93, hypo=0.15),
}
_NOISE_SIGMA = {"CT": 0.022, "T1": 0.022, "T2": 0.025, "FLAIR": 0.03}
# 3x3 smoothing kernel ((row, col) offset, weight) that gives CT noise its fine-grained texture.
_CT_KERNEL = tuple(
    ((i, j), 2.0 if (i, j) == (1, 1) else 1.0 if 1 in (i, j) else 0.5) for i in range(3) for j in range(3)
)
_FAR = 1e3  # "no structure near here" distance, px


class PlacementError(RuntimeError):
    """A lesion could not be placed inside the brain without touching another structure (a geometry bug)."""


@dataclass(frozen=True)
class _Head:
    cx: float
    cy: float
    a: float  # lateral semi-axis of the scalp outline, px
    b: float  # antero-posterior semi-axis, px
    rotation_deg: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase) of the outline's wobble
    scale: float  # image_size / reference size

    @property
    def brain_inset(self) -> float:
        return (_SCALP_PX + _BONE_PX + _CSF_PX) * self.scale

    def to_image(self, u_px: np.ndarray | float, v_px: np.ndarray | float) -> tuple:
        phi = math.radians(self.rotation_deg)
        x = self.cx + u_px * math.cos(phi) + v_px * math.sin(phi)
        return x, self.cy + u_px * math.sin(phi) - v_px * math.cos(phi)

    def to_head(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        phi = math.radians(self.rotation_deg)
        dx, dy = x - self.cx, y - self.cy
        return dx * math.cos(phi) + dy * math.sin(phi), dx * math.sin(phi) - dy * math.cos(phi)

    def brain_point(self, u: float, v: float) -> tuple[float, float]:
        """Image (x, y) of a point given in brain-normalised coordinates."""
        return self.to_image(u * (self.a - self.brain_inset), v * (self.b - self.brain_inset))

    def to_json(self) -> dict:
        return {
            "center_xy": [round(self.cx, 3), round(self.cy, 3)],
            "semi_axes_px": [round(self.a, 3), round(self.b, 3)],
            "brain_semi_axes_px": [round(self.a - self.brain_inset, 3), round(self.b - self.brain_inset, 3)],
            "rotation_deg": round(self.rotation_deg, 3),
            "outline_wobble_max": round(sum(amp for _, amp, _ in self.harmonics), 4),
        }


@dataclass(frozen=True)
class _LesionShape:
    x: float
    y: float
    angle: float  # radians, orientation of the long axis / lobulation pattern
    kind: str  # round | oval | irregular
    radius: float  # round: radius; oval: long semi-axis; irregular: base radius
    aspect: float  # oval only
    lobes: tuple[tuple[int, float, float], ...]  # irregular only: (k, amplitude, phase)

    def signed_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance in px along the ray from the centre (negative inside)."""
        dx, dy = x - self.x, y - self.y
        p1 = dx * math.cos(self.angle) + dy * math.sin(self.angle)
        p2 = -dx * math.sin(self.angle) + dy * math.cos(self.angle)
        rho = _norm(p1, p2)
        if self.kind == "round":
            return rho - self.radius
        if self.kind == "oval":
            q = _norm(p1 / self.radius, p2 * self.aspect / self.radius)
            return rho * (1.0 - 1.0 / np.maximum(q, 1e-6))
        direction = (p1 + 1j * p2) / np.maximum(rho, 1e-6)
        return rho - _lobulated_radius(self.radius, self.lobes, direction)


def _norm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(a * a + b * b)  # np.hypot is ~10x slower on float32


def _harmonic_sum(harmonics, direction: np.ndarray) -> np.ndarray:
    """Sum of amp * cos(k * theta + phase) for unit complex ``direction`` = exp(i theta), with no trig per pixel."""
    out = np.zeros(direction.shape, dtype=np.float32)
    power, power_k = np.ones_like(direction), 0
    for k, amp, phase in sorted(harmonics):
        while power_k < k:
            power, power_k = power * direction, power_k + 1
        out += amp * (power * complex(math.cos(phase), math.sin(phase))).real
    return out


def _lobulated_radius(base: float, lobes, direction: np.ndarray) -> np.ndarray:
    return base * (1.0 + _harmonic_sum(lobes, direction))


def _coverage(distance_inside: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Soft 0..1 membership from a distance that is positive inside: a ``width``-px linear ramp at 0."""
    return np.clip(distance_inside / width + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=32)
def _bspline_taps(n_out: int, n_in: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Cubic B-spline upsampling from ``n_in`` knots to ``n_out`` samples as four (knot index, weight) taps."""
    t = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    i0 = np.floor(t).astype(int)
    f = t - i0
    weights = ((1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6)
    offsets = (-1, 0, 1, 2)
    return tuple((np.clip(i0 + offset, 0, n_in - 1), w.astype(np.float32)) for offset, w in zip(offsets, weights))


def _smooth_noise(rng: np.random.Generator, n: int, coarse: int) -> np.ndarray:
    """Band-limited 2D noise with zero mean and unit standard deviation (``coarse`` knots per side).

    Upsampled with explicit taps rather than a matrix product, so the result
    does not depend on the BLAS library or its thread count (byte-identical output).
    """
    knots = rng.standard_normal((coarse, coarse), dtype=np.float32)
    taps = _bspline_taps(n, coarse)
    rows = sum(w[:, None] * knots[index] for index, w in taps)  # (n, coarse)
    field = sum(w[None, :] * rows[:, index] for index, w in taps)  # (n, n)
    field -= field.mean()
    return field / (field.std() + 1e-12)


def _periodic_noise(rng: np.random.Generator, theta: np.ndarray, max_k: int) -> np.ndarray:
    """Smooth 2*pi-periodic random function (a short random Fourier series) of ``theta``, unit-ish amplitude.

    Evaluated on a table and linearly interpolated: trig (or np.interp) on every pixel is slow.
    """
    size = 1024  # a power of two, so "& (size - 1)" is the modulo
    k = np.arange(1, max_k + 1)[:, None]
    table_theta = np.arange(size) * (2 * math.pi / size)
    coefficients = rng.standard_normal((2, max_k, 1))
    table = (coefficients[0] * np.cos(k * table_theta) + coefficients[1] * np.sin(k * table_theta)).sum(0)
    table = (table / math.sqrt(max_k)).astype(np.float32)
    position = theta * (size / (2 * math.pi))
    below = np.floor(position)
    frac = position - below
    index = below.astype(np.int64) & (size - 1)
    return table[index] * (1.0 - frac) + table[(index + 1) & (size - 1)] * frac


@functools.lru_cache(maxsize=4)
def _pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def _sample_head(rng: np.random.Generator, n: int) -> _Head:
    harmonics = tuple((k, float(rng.uniform(0.0, 0.012)), float(rng.uniform(0, 2 * math.pi))) for k in (2, 3, 4))
    return _Head(
        cx=n / 2 + float(rng.uniform(-_HEAD_OFFSET, _HEAD_OFFSET)) * n,
        cy=n / 2 + float(rng.uniform(-_HEAD_OFFSET, _HEAD_OFFSET)) * n,
        a=float(rng.uniform(*_HEAD_SEMI_AXES["lateral"])) * n,
        b=float(rng.uniform(*_HEAD_SEMI_AXES["ap"])) * n,
        rotation_deg=float(rng.uniform(-_HEAD_ROTATION_DEG, _HEAD_ROTATION_DEG)),
        harmonics=harmonics,
        scale=n / _REFERENCE_SIZE,
    )


def _sample_lesion_shape(rng: np.random.Generator, lesion: Lesion, head: _Head, n: int, jitter: bool) -> _LesionShape:
    diameter = float(rng.uniform(*SIZE_RANGES[lesion.size])) * n
    angle = float(rng.uniform(0, math.pi))
    aspect, lobes = 1.0, ()
    radius = diameter / 2
    if lesion.shape == "oval":
        aspect = float(rng.uniform(*OVAL_ASPECT))
    elif lesion.shape == "irregular":
        amps = rng.uniform(0.6, 1.0, size=3)
        amps = amps / amps.sum() * float(rng.uniform(0.26, 0.34))
        lobes = tuple((k, float(amp), float(rng.uniform(0, 2 * math.pi))) for k, amp in zip((3, 4, 5), amps))
        radius = diameter / _lobulated_span(lobes)  # so that the longest diameter is ``diameter``
    sign = 1.0 if lesion.hemisphere == "left" else -1.0  # patient's left = +u = image right
    au, av = LOBE_ANCHORS[lesion.lobe]
    x, y = head.brain_point(sign * au, av)
    if jitter:
        r, t = _JITTER_PX * head.scale * math.sqrt(float(rng.uniform())), float(rng.uniform(0, 2 * math.pi))
        x, y = x + r * math.cos(t), y + r * math.sin(t)
    return _LesionShape(x, y, angle, lesion.shape, radius, aspect, lobes)


class _Anatomy:
    """Distance fields of one head on the pixel grid, shared by placement checks and painting."""

    def __init__(self, head: _Head, n: int, rng: np.random.Generator):
        s = head.scale
        ys, xs = _pixel_grid(n)
        self.x, self.y = xs, ys
        u_px, v_px = head.to_head(xs, ys)
        un, vn = u_px / head.a, v_px / head.b
        r = np.maximum(_norm(un, vn), 1e-6)
        direction = (un + 1j * vn) / r
        theta = np.arctan2(vn, un)
        outline = 1.0 + _harmonic_sum(head.harmonics, direction)
        rho = _norm(u_px, v_px)
        self.depth = rho * (outline / r - 1.0)  # px from the scalp surface, inwards positive
        self.bone_px = _BONE_PX * s * (1.0 + 0.15 * (direction * direction).real)  # cos(2 theta): thicker front/back
        self.bone_start = _SCALP_PX * s
        self.csf_start = self.bone_start + self.bone_px
        self.brain_start = self.csf_start + _CSF_PX * s
        self.brain_depth = self.depth - self.brain_start
        brain_a, brain_b = head.a - head.brain_inset, head.b - head.brain_inset
        self.bv = v_px / brain_b  # brain-normalised antero-posterior coordinate

        # Sulci: clefts running roughly radially inwards but meandering, each with its own depth.
        n_sulci = 14  # zero lines of cos(psi): two sulci per unit of psi / pi
        psi = n_sulci * theta + 2.0 * _periodic_noise(rng, theta, 6) + 1.1 * _smooth_noise(rng, n, 9)
        turns = psi / math.pi
        phase_gap = np.abs(turns - np.floor(turns) - 0.5) * math.pi  # 0 on a sulcus
        # Distance to the nearest zero line ~ phase gap / |grad psi|; the branch cut of arctan2 makes psi jump
        # by 2 pi n_sulci across one line, which central differences see as +-pi n_sulci: remove it.
        jump = math.pi * n_sulci
        grad_rows, grad_cols = np.gradient(psi)
        grad_rows -= np.round(grad_rows / jump) * jump
        grad_cols -= np.round(grad_cols / jump) * jump
        self.sulcus_dist = phase_gap / np.maximum(_norm(grad_rows, grad_cols), 1e-3)
        per_sulcus = rng.uniform(0.45, 1.5, size=2 * n_sulci + 8)
        sulcus_index = np.floor(turns).astype(int) % per_sulcus.size  # constant across a sulcus, flips between
        self.sulcus_depth = 7.0 * s * per_sulcus[sulcus_index]
        # Interhemispheric fissure: midline cleft at the anterior and posterior ends.
        midline_wobble = 0.6 * s * _periodic_noise(rng, self.bv * math.pi, 3)
        self.fissure_dist = np.abs(u_px - midline_wobble)
        self.fissure_on = np.clip((np.abs(self.bv) - 0.5) / 0.08, 0.0, 1.0)

        # Lateral ventricles: frontal horns near the midline, bodies diverging to wider atria posteriorly.
        size = float(rng.uniform(0.85, 1.2))
        # Both lie within 0.65 brain radii of the centre: compute them on that window only (speed).
        reach = 0.65 * max(brain_a, brain_b)
        rows = slice(max(0, int(head.cy - reach)), min(n, int(head.cy + reach) + 2))
        cols = slice(max(0, int(head.cx - reach)), min(n, int(head.cx + reach) + 2))
        u_brain, v_brain = u_px[rows, cols], v_px[rows, cols]
        self.ventricle_dist = np.full((n, n), _FAR, dtype=np.float32)
        self.caudate_dist = np.full((n, n), _FAR, dtype=np.float32)
        self.ventricle_dist[rows, cols] = np.minimum(
            *(self._ventricle(u_brain, v_brain, side, size, brain_a, brain_b) for side in (-1.0, 1.0))
        )
        self.caudate_dist[rows, cols] = np.minimum(
            *(self._caudate(u_brain, v_brain, side, size, brain_a, brain_b) for side in (-1.0, 1.0))
        )

    @staticmethod
    def _ventricle(u, v, side, size, brain_a, brain_b) -> np.ndarray:
        top, bottom = 0.34 * brain_b * size, -0.36 * brain_b * size
        t = np.clip((top - v) / (top - bottom), 0.0, 1.0)  # 0 at the frontal horn tip, 1 at the atrium
        centre = side * brain_a * (0.105 + 0.3 * (t - 0.4) ** 2) * size  # ")(" : flaring at both ends
        width = brain_a * size * (0.08 - 0.03 * np.sin(math.pi * t) + 0.04 * t**3)
        envelope = np.sqrt(np.clip(1.0 - (2.0 * (v - (top + bottom) / 2) / (top - bottom)) ** 2, 0.0, 1.0))
        return np.abs(u - centre) - width * envelope + np.where(envelope > 0, 0.0, np.abs(v - (top + bottom) / 2))

    @staticmethod
    def _caudate(u, v, side, size, brain_a, brain_b) -> np.ndarray:
        # Caudate head: grey matter hugging the lateral wall of the frontal horn.
        du, dv = u - side * (0.2 * size + 0.05) * brain_a, v - 0.2 * brain_b * size
        half_wid, half_len = 0.07 * brain_a, 0.13 * brain_b
        rho = _norm(du, dv)
        return rho * (1.0 - 1.0 / np.maximum(_norm(du / half_wid, dv / half_len), 1e-6))


def _placement_ok(dist: np.ndarray, anatomy: _Anatomy, others: list[np.ndarray], scale: float) -> bool:
    inside = dist < 0.5 * scale  # lesion plus a half-pixel rim
    if not inside.any():
        return False
    if anatomy.brain_depth[inside].min() < 1.5 * scale:
        return False
    if anatomy.ventricle_dist[inside].min() < 1.5 * scale:
        return False
    return all(other[inside].min() >= 2.0 * scale for other in others)


def _place_lesions(spec: ImageSpec, head: _Head, anatomy: _Anatomy, rng: np.random.Generator, n: int):
    shapes, dists = [], []
    for lesion in spec.lesions:
        for attempt in range(41):
            # The last attempt puts the lesion on its lobe anchor, which the geometry guarantees to fit.
            shape = _sample_lesion_shape(rng, lesion, head, n, jitter=attempt < 40)
            dist = shape.signed_distance(anatomy.x, anatomy.y)
            if _placement_ok(dist, anatomy, dists, head.scale):
                break
        else:
            raise PlacementError(f"cannot place {lesion} in image of size {n} (head {head.to_json()})")
        shapes.append(shape)
        dists.append(dist)
    return shapes, dists


def render_phantom(spec: ImageSpec, image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render ``spec``; returns (uint8 image, uint8 mask with lesion ids 1..k, metadata dict).

    Lesion ``i`` (in ``spec.lesions`` order) has id ``i + 1`` in the mask and
    entry ``i`` in ``metadata["lesions"]``; boxes are ``[x0, y0, x1, y1]`` with
    exclusive ``x1``/``y1`` (pixel-index convention, like numpy slices).
    """
    n = image_size
    values = dict(TISSUE_VALUES[spec.modality])
    gain = float(rng.uniform(0.94, 1.06))
    for key in ("scalp", "csf", "gm", "wm", "hyper", "hypo", "diploe"):
        values[key] *= gain
    head = _sample_head(rng, n)
    anatomy = _Anatomy(head, n, rng)
    s = head.scale

    # Brain tissue: white matter, grey matter within ~3 px of any CSF surface, CSF in sulci/fissure/ventricles.
    in_sulcus_band = anatomy.brain_depth < anatomy.sulcus_depth
    surface = np.minimum(anatomy.brain_depth, np.where(in_sulcus_band, anatomy.sulcus_dist, np.inf))
    surface = np.minimum(surface, np.where(anatomy.fissure_on > 0, anatomy.fissure_dist, np.inf))
    cortex_px = 2.8 * s * (1.0 + 0.25 * _smooth_noise(rng, n, 20))
    tissue = values["wm"] + (values["gm"] - values["wm"]) * _coverage(cortex_px - surface)
    cortex = _coverage(cortex_px - surface)
    tissue += (values["gm"] - values["wm"]) * _coverage(-anatomy.caudate_dist, 1.5 * s) * (1 - cortex)
    if spec.modality == "FLAIR":  # periventricular caps: faint bright rim typical of FLAIR
        tissue += 0.1 * _coverage(2.0 * s - anatomy.ventricle_dist, 2.0 * s)
    sulcus_half_width = s * (0.35 + 0.6 * np.clip(1.0 - anatomy.brain_depth / anatomy.sulcus_depth, 0.0, 1.0))
    sulcus_fade = _coverage(anatomy.sulcus_depth - anatomy.brain_depth, 2.0 * s)  # sulci end softly inside
    sulcus_csf = _coverage(sulcus_half_width - anatomy.sulcus_dist) * sulcus_fade
    fissure_csf = _coverage(0.6 * s - anatomy.fissure_dist) * anatomy.fissure_on
    csf = np.maximum(np.maximum(sulcus_csf, fissure_csf), _coverage(-anatomy.ventricle_dist))
    tissue = tissue + (values["csf"] - tissue) * csf
    tissue *= 1.0 + 0.035 * _smooth_noise(rng, n, 40)

    # Head layers from outside in.
    depth = anatomy.depth
    img = np.full((n, n), values["air"], dtype=np.float32)
    img += (values["scalp"] * (1.0 + 0.05 * _smooth_noise(rng, n, 24)) - img) * _coverage(depth)
    img += (values["bone"] - img) * _coverage(depth - anatomy.bone_start)
    diploe_start, diploe_end = anatomy.bone_start + 0.3 * anatomy.bone_px, anatomy.bone_start + 0.7 * anatomy.bone_px
    diploe = _coverage(depth - diploe_start) * _coverage(diploe_end - depth)
    img += (values["diploe"] - img) * diploe
    img += (values["csf"] - img) * _coverage(depth - anatomy.csf_start)
    img += (tissue - img) * _coverage(anatomy.brain_depth)

    shapes, dists = _place_lesions(spec, head, anatomy, rng, n)
    mask = np.zeros((n, n), dtype=np.uint8)
    lesions_meta = []
    for index, (lesion, shape, dist) in enumerate(zip(spec.lesions, shapes, dists), start=1):
        heterogeneity = 0.1 if lesion.shape == "irregular" else 0.05
        target = values[lesion.intensity] * (1.0 + heterogeneity * _smooth_noise(rng, n, 30))
        ramp = 1.4 * s if (spec.modality == "CT" and lesion.intensity == "hypo") else 1.0  # softer, oedema-like
        cover = _coverage(-dist, ramp)
        halo = np.clip(1.0 - dist / (2.5 * s), 0.0, 1.0) * (dist > 0)
        if lesion.intensity == "hyper" and spec.modality in ("T2", "FLAIR"):
            img += 0.08 * halo * _coverage(anatomy.brain_depth)  # perilesional oedema, bright on T2/FLAIR
        elif lesion.intensity == "hyper" and spec.modality == "CT" and lesion.size != "small":
            img -= 0.06 * halo * _coverage(anatomy.brain_depth)  # oedema rim around a dense lesion
        img += (target - img) * cover
        mask[dist < 0] = index
        lesions_meta.append(_lesion_metadata(index, lesion, shape, mask == index))

    img = _blur(img)  # scanner point-spread: no razor-sharp cartoon edges
    img = _add_scanner_noise(img, spec.modality, rng, n)
    image = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return image, mask, {"head": head.to_json(), "lesions": lesions_meta}


def _lesion_metadata(index: int, lesion: Lesion, shape: _LesionShape, region: np.ndarray) -> dict:
    ys, xs = np.nonzero(region)
    return {
        "id": index,
        "hemisphere": lesion.hemisphere,
        "lobe": lesion.lobe,
        "size": lesion.size,
        "shape": lesion.shape,
        "intensity": lesion.intensity,
        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
        "area_px": int(region.sum()),
        "centroid_xy": [round(float(xs.mean()), 3), round(float(ys.mean()), 3)],
        "center_xy": [round(shape.x, 3), round(shape.y, 3)],
        "max_diameter_px": round(_max_diameter(shape), 3),
    }


def _max_diameter(shape: _LesionShape) -> float:
    if shape.kind == "irregular":
        return shape.radius * _lobulated_span(shape.lobes)
    return 2.0 * shape.radius


def _lobulated_span(lobes) -> float:
    """Longest diameter of a lobulated outline of base radius 1: max over directions of r(t) + r(t + pi)."""
    direction = np.exp(1j * np.linspace(0, math.pi, 181))
    return float((_lobulated_radius(1.0, lobes, direction) + _lobulated_radius(1.0, lobes, -direction)).max())


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication."""
    padded = np.pad(img, 1, mode="edge")
    rows = (padded[:-2] + 2.0 * padded[1:-1] + padded[2:]) / 4.0
    return (rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]) / 4.0


def _add_scanner_noise(img: np.ndarray, modality: str, rng: np.random.Generator, n: int) -> np.ndarray:
    sigma = _NOISE_SIGMA[modality]
    if modality == "CT":
        # CT noise is spatially correlated (reconstruction kernel): blur white noise, restore its sigma.
        white = rng.standard_normal((n + 2, n + 2), dtype=np.float32)
        blurred = sum(white[i : i + n, j : j + n] * w for (i, j), w in _CT_KERNEL)
        return img + sigma * blurred / math.sqrt(sum(w * w for _, w in _CT_KERNEL))
    # MR magnitude images: smooth coil shading, then Rician noise (Rayleigh in the background).
    img = img * (1.0 + 0.08 * _smooth_noise(rng, n, 4))
    real = img + sigma * rng.standard_normal((n, n), dtype=np.float32)
    imag = sigma * rng.standard_normal((n, n), dtype=np.float32)
    return _norm(real, imag)

