"""What a phantom image shows: modality and 0-2 lesions, each with location, size, shape and intensity.

An :class:`ImageSpec` is the full attribute tuple of one image; every caption
names all of it, so two images with different specs never share a correct
caption. Train specs are drawn i.i.d. (repeats allowed); val/test specs are
drawn WITHOUT repeats from the finite set of all specs, which is what makes
each val/test caption identify exactly one image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MODALITIES",
    "HEMISPHERES",
    "LOBES",
    "LOCATIONS",
    "SIZES",
    "SHAPES",
    "INTENSITIES",
    "LESION_COUNT_PROBS",
    "MAX_LESIONS",
    "Lesion",
    "ImageSpec",
    "num_unique_specs",
    "sample_train_spec",
    "sample_unique_specs",
]

MODALITIES = ("CT", "T1", "T2", "FLAIR")
# Patient's left/right (radiological convention: the patient's left is on the image's right).
HEMISPHERES = ("left", "right")
LOBES = ("frontal", "parietal", "temporal", "occipital")
LOCATIONS = tuple(itertools.product(HEMISPHERES, LOBES))  # 8 (hemisphere, lobe) pairs
SIZES = ("small", "medium", "large")
SHAPES = ("round", "oval", "irregular")
INTENSITIES = ("hyper", "hypo")  # relative to the surrounding brain tissue
LESION_COUNT_PROBS = (0.2, 0.45, 0.35)  # P(0), P(1), P(2) lesions
MAX_LESIONS = len(LESION_COUNT_PROBS) - 1

# A lesion's appearance (size, shape, intensity) as one index in [0, 18).
_APPEARANCES = tuple(itertools.product(SIZES, SHAPES, INTENSITIES))
_LOCATION_PAIRS = tuple(itertools.combinations(range(len(LOCATIONS)), 2))  # 28 unordered pairs


@dataclass(frozen=True, order=True)
class Lesion:
    hemisphere: str
    lobe: str
    size: str
    shape: str
    intensity: str

    @property
    def location(self) -> str:
        return f"{self.hemisphere} {self.lobe}"


@dataclass(frozen=True)
class ImageSpec:
    """Attribute tuple of one image. Lesions are kept in canonical (sorted) order; no two share a location."""

    modality: str
    lesions: tuple[Lesion, ...]

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if len(self.lesions) > MAX_LESIONS:
            raise ValueError(f"at most {MAX_LESIONS} lesions, got {len(self.lesions)}")
        locations = [(lesion.hemisphere, lesion.lobe) for lesion in self.lesions]
        if len(set(locations)) != len(locations):
            raise ValueError(f"two lesions share a location: {locations}")
        object.__setattr__(self, "lesions", tuple(sorted(self.lesions)))

    def to_json(self) -> dict:
        return {
            "modality": self.modality,
            "lesions": [
                {"hemisphere": l.hemisphere, "lobe": l.lobe, "size": l.size, "shape": l.shape, "intensity": l.intensity}
                for l in self.lesions
            ],
        }


def _lesion(location_index: int, appearance_index: int) -> Lesion:
    hemisphere, lobe = LOCATIONS[location_index]
    size, shape, intensity = _APPEARANCES[appearance_index]
    return Lesion(hemisphere, lobe, size, shape, intensity)


def _class_size(num_lesions: int) -> int:
    """Number of distinct lesion sets with ``num_lesions`` lesions (per modality)."""
    if num_lesions == 0:
        return 1
    if num_lesions == 1:
        return len(LOCATIONS) * len(_APPEARANCES)
    return len(_LOCATION_PAIRS) * len(_APPEARANCES) ** 2


def _decode(modality: str, num_lesions: int, index: int) -> ImageSpec:
    """The ``index``-th spec of class (modality, num_lesions); a bijection onto that class."""
    n_app = len(_APPEARANCES)
    if num_lesions == 0:
        lesions: tuple[Lesion, ...] = ()
    elif num_lesions == 1:
        lesions = (_lesion(index // n_app, index % n_app),)
    else:
        pair, apps = divmod(index, n_app * n_app)
        first, second = _LOCATION_PAIRS[pair]
        lesions = (_lesion(first, apps // n_app), _lesion(second, apps % n_app))
    return ImageSpec(modality, lesions)


def num_unique_specs() -> int:
    """How many distinct attribute tuples exist (the upper bound for num_val / num_test)."""
    return len(MODALITIES) * sum(_class_size(n) for n in range(MAX_LESIONS + 1))


def sample_train_spec(rng: np.random.Generator) -> ImageSpec:
    """One i.i.d. spec: uniform modality, lesion count by LESION_COUNT_PROBS, distinct uniform locations."""
    modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
    count = int(rng.choice(len(LESION_COUNT_PROBS), p=LESION_COUNT_PROBS))
    locations = rng.choice(len(LOCATIONS), size=count, replace=False)
    lesions = tuple(_lesion(int(loc), int(rng.integers(len(_APPEARANCES)))) for loc in locations)
    return ImageSpec(modality, lesions)


def sample_unique_specs(n: int, rng: np.random.Generator) -> list[ImageSpec]:
    """``n`` pairwise distinct specs, with modality and lesion count drawn like the train split.

    Classes (modality, count) are small for count 0 (one spec each), so a draw
    that hits a full class moves to the next count of the same modality, then
    to the other modalities. Raises ValueError when ``n`` exceeds the number of
    distinct specs.
    """
    total = num_unique_specs()
    if n > total:
        raise ValueError(f"cannot draw {n} distinct attribute tuples; only {total} exist")
    classes = [(m, c) for m in MODALITIES for c in range(MAX_LESIONS + 1)]
    capacity = {cls: _class_size(cls[1]) for cls in classes}
    wanted = []
    for _ in range(n):
        modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
        count = int(rng.choice(len(LESION_COUNT_PROBS), p=LESION_COUNT_PROBS))
        start = classes.index((modality, count))
        # First class at or after the drawn one (cyclically) that still has room; one exists as n <= total.
        for step in range(len(classes)):
            cls = classes[(start + step) % len(classes)]
            if capacity[cls] > 0:
                break
        capacity[cls] -= 1
        wanted.append(cls)
    # Distinct indices per class, handed out in order of appearance.
    pools: dict[tuple[str, int], list[int]] = {}
    for cls in classes:
        k = wanted.count(cls)
        if k:
            pools[cls] = [int(i) for i in rng.choice(_class_size(cls[1]), size=k, replace=False)]
    specs = [_decode(cls[0], cls[1], pools[cls].pop()) for cls in wanted]
    # Early draws find the small classes (normal images) still open: shuffle so they are not all at the start.
    return [specs[int(i)] for i in rng.permutation(n)]
