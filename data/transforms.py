"""The one image transform builder (BLIP's train/test pipelines, CLIP normalisation).

BLIP trains with ``RandomResizedCrop(bicubic) -> RandomHorizontalFlip -> RandomAugment(2, 5)``
and tests with a plain bicubic resize. ``RandomAugment`` here reproduces BLIP's
op set, magnitudes and sampling (2 ops drawn with replacement from 10, each
applied with probability 0.5, magnitude 5 of 10, gray fill 128) with
torchvision's functional ops instead of BLIP's hand-written cv2 code. All
randomness comes from torch's generator, so seeding torch alone fixes a
sample's augmentation (the dataset does that per sample).

Horizontal flip is off by default: mirroring a medical image without
swapping "left"/"right" in its caption teaches the model wrong laterality.
:class:`data.pretrain_dataset.PretrainDataset` has a flip that swaps the words
too; ``hflip`` here is the plain, caption-blind flip for image-only uses.

Faithful detail worth knowing: at BLIP's magnitude 5, Brightness and
Sharpness get the enhance factor ``5/10 * 1.8 + 0.1 = 1.0``, i.e. they are the
identity, exactly as in BLIP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "BLIP_AUGMENTS",
    "DEFAULT_CROP_SCALE",
    "RandomAugment",
    "build_image_transform",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# BLIP's pretrain / train op list (transform/randaugment.py call sites in BLIP's data/__init__.py).
BLIP_AUGMENTS = (
    "Identity",
    "AutoContrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)

# BLIP: min_scale 0.2 for pretraining, 0.5 for fine-tuning (retrieval, captioning, VQA).
DEFAULT_CROP_SCALE = {"pretrain": (0.2, 1.0), "train": (0.5, 1.0)}

_MAX_LEVEL = 10.0
_TRANSLATE_CONST = 10.0  # pixels at full level: BLIP translates by 5 px at magnitude 5
_FILL = [128, 128, 128]


@dataclass(frozen=True)
class AugmentOp:
    """One drawn op: its name, whether it fires (p=0.5) and its signed argument."""

    name: str
    applied: bool
    arg: float


class RandomAugment:
    """BLIP's ``RandomAugment(N, M, isPIL=True, augs=...)`` on PIL images, driven by torch's RNG.

    Ops and arguments at level ``M`` (max 10), as in BLIP:

    * Identity, AutoContrast, Equalize: no argument.
    * Brightness, Sharpness: enhance factor ``M/10 * 1.8 + 0.1``.
    * ShearX/Y: shear factor ``±M/10 * 0.3`` (about the top-left corner, like BLIP's affine matrix).
    * TranslateX/Y: ``±M/10 * 10`` pixels.
    * Rotate: ``±M/10 * 30`` degrees about the centre.

    Geometric ops fill with gray (128, 128, 128) and interpolate bilinearly.
    """

    def __init__(self, n: int = 2, m: float = 5, augs: Sequence[str] = BLIP_AUGMENTS):
        unknown = [name for name in augs if name not in _OPS]
        if unknown:
            raise ValueError(f"unknown augment op(s) {unknown}; known: {sorted(_OPS)}")
        if not augs:
            raise ValueError("RandomAugment needs at least one op")
        self.n = n
        self.m = float(m)
        self.augs = tuple(augs)

    def sample_ops(self, generator: torch.Generator | None = None) -> list[AugmentOp]:
        """Draw ``n`` ops with replacement, each applied with probability 0.5, signs at random."""
        ops = []
        for _ in range(self.n):
            name = self.augs[int(torch.randint(len(self.augs), (1,), generator=generator))]
            applied = bool(torch.rand((), generator=generator) < 0.5)
            sign = -1.0 if bool(torch.rand((), generator=generator) < 0.5) else 1.0
            ops.append(AugmentOp(name, applied, sign * _level_to_arg(name, self.m)))
        return ops

    def __call__(self, img: Image.Image) -> Image.Image:
        for op in self.sample_ops():
            if op.applied:
                img = apply_op(img, op.name, op.arg)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, m={self.m:g}, augs={list(self.augs)})"


def _level_to_arg(name: str, level: float) -> float:
    frac = level / _MAX_LEVEL
    if name in ("Brightness", "Sharpness"):
        return frac * 1.8 + 0.1
    if name in ("ShearX", "ShearY"):
        return frac * 0.3
    if name in ("TranslateX", "TranslateY"):
        return frac * _TRANSLATE_CONST
    if name == "Rotate":
        return frac * 30.0
    return 0.0


def _shear(img: Image.Image, factor: float, axis: int) -> Image.Image:
    # BLIP warps with the matrix [[1, f], [0, 1]] about the top-left corner; torchvision's shear
    # angle has the opposite sign convention, hence -f, and centre (0, 0) pins the corner.
    degrees = math.degrees(math.atan(-factor))
    shear = [degrees, 0.0] if axis == 0 else [0.0, degrees]
    return F.affine(
        img,
        angle=0.0,
        translate=[0, 0],
        scale=1.0,
        shear=shear,
        interpolation=InterpolationMode.BILINEAR,
        fill=_FILL,
        center=[0, 0],
    )


def _translate(img: Image.Image, offset: float, axis: int) -> Image.Image:
    # BLIP's offset moves content towards negative x / y (its matrix holds -offset).
    translate = [-offset, 0.0] if axis == 0 else [0.0, -offset]
    return F.affine(
        img,
        angle=0.0,
        translate=translate,
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
        fill=_FILL,
    )


_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "Identity": lambda img, _: img,
    "AutoContrast": lambda img, _: F.autocontrast(img),
    "Equalize": lambda img, _: F.equalize(img),
    "Brightness": F.adjust_brightness,
    "Sharpness": F.adjust_sharpness,
    "ShearX": lambda img, f: _shear(img, f, 0),
    "ShearY": lambda img, f: _shear(img, f, 1),
    "TranslateX": lambda img, px: _translate(img, px, 0),
    "TranslateY": lambda img, px: _translate(img, px, 1),
    "Rotate": lambda img, deg: F.rotate(img, deg, interpolation=InterpolationMode.BILINEAR, fill=_FILL),
}


def apply_op(img: Image.Image, name: str, arg: float) -> Image.Image:
    """Apply one named op with its (already signed) argument."""
    return _OPS[name](img, arg)


def build_image_transform(
    kind: Literal["pretrain", "train", "test"],
    image_size: int,
    *,
    crop_scale: Sequence[float] | None = None,
    hflip: float = 0.0,
    randaugment: bool = True,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> transforms.Compose:
    """PIL RGB image -> normalised float tensor (3, image_size, image_size).

    * ``pretrain`` / ``train``: RandomResizedCrop(bicubic, ``crop_scale``; default
      (0.2, 1) for pretrain and (0.5, 1) for train, as BLIP), optional plain
      horizontal flip with probability ``hflip``, BLIP's RandomAugment(2, 5)
      when ``randaugment``, ToTensor, Normalize.
    * ``test``: Resize((s, s), bicubic), ToTensor, Normalize (no randomness).
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    normalize = transforms.Normalize(mean, std)
    if kind == "test":
        return transforms.Compose(
            [
                transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
                transforms.ToTensor(),
                normalize,
            ]
        )
    if kind not in DEFAULT_CROP_SCALE:
        raise ValueError(f"kind must be 'pretrain', 'train' or 'test', got {kind!r}")
    scale = tuple(DEFAULT_CROP_SCALE[kind] if crop_scale is None else crop_scale)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {list(scale)}")
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
    steps: list = [
        transforms.RandomResizedCrop(image_size, scale=scale, interpolation=InterpolationMode.BICUBIC)
    ]
    if hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(hflip))
    if randaugment:
        steps.append(RandomAugment(2, 5))
    steps += [transforms.ToTensor(), normalize]
    return transforms.Compose(steps)
