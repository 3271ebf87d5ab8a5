"""Image transforms: BLIP's pipelines, RandomAugment ops checked against BLIP's affine maths in cv2."""

import collections

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from data.transforms import (
    BLIP_AUGMENTS,
    CLIP_MEAN,
    CLIP_STD,
    RandomAugment,
    apply_op,
    build_image_transform,
)


def _smooth_image(h=64, w=80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 3) % 256, (y * 4) % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
    return cv2.GaussianBlur(arr, (0, 0), 1.5)


def _warp(arr, matrix):
    # BLIP's geometric ops: cv2.warpAffine with the forward matrix, bilinear, gray fill.
    h, w = arr.shape[:2]
    return cv2.warpAffine(arr, np.float32(matrix), (w, h), borderValue=(128, 128, 128), flags=cv2.INTER_LINEAR)


@pytest.mark.parametrize(
    "name, arg, matrix",
    [
        ("ShearX", 0.15, [[1, 0.15, 0], [0, 1, 0]]),
        ("ShearX", -0.15, [[1, -0.15, 0], [0, 1, 0]]),
        ("ShearY", 0.15, [[1, 0, 0], [0.15, 1, 0]]),
        ("TranslateX", 5.0, [[1, 0, -5], [0, 1, 0]]),
        ("TranslateY", -5.0, [[1, 0, 0], [0, 1, 5]]),
    ],
)
def test_geometric_ops_match_blip_matrices(name, arg, matrix):
    arr = _smooth_image()
    ours = np.asarray(apply_op(Image.fromarray(arr), name, arg)).astype(int)
    ref = _warp(arr, matrix).astype(int)
    diff = np.abs(ours - ref)
    # same warp up to resampling at the borders; the opposite sign would differ by ~25 on average
    assert diff.mean() < 1.0
    assert (diff > 8).mean() < 0.02


def test_rotate_matches_blip_rotation_about_centre():
    arr = _smooth_image()
    h, w = arr.shape[:2]
    ref = _warp(arr, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1)).astype(int)
    ours = np.asarray(apply_op(Image.fromarray(arr), "Rotate", 15.0)).astype(int)
    diff = np.abs(ours - ref)
    assert diff.mean() < 1.5 and (diff > 16).mean() < 0.02


def test_autocontrast_and_equalize_match_hand_computation():
    arr = np.array([[[50, 0, 7]] * 3, [[100, 0, 7]] * 3, [[150, 0, 9]] * 3], dtype=np.uint8)
    out = np.asarray(apply_op(Image.fromarray(arr), "AutoContrast", 0.0))
    # channel 0: 50..150 stretched to 0..255 with truncation; channel 1 flat stays; channel 2: 7..9
    assert out[:, 0, 0].tolist() == [0, 127, 255]
    assert out[:, 0, 1].tolist() == [0, 0, 0]
    assert out[:, 0, 2].tolist() == [0, 0, 255]
    eq = np.asarray(apply_op(Image.fromarray(np.array([[10, 10, 20, 30]], np.uint8)).convert("RGB"), "Equalize", 0))
    # PIL/BLIP equalize: step = (4 - 1) // 255 = 0 -> identity
    assert eq[0, :, 0].tolist() == [10, 10, 20, 30]


def test_brightness_and_sharpness_are_identity_at_blip_magnitude():
    aug = RandomAugment(2, 5)
    ops = [op for _ in range(300) for op in aug.sample_ops()]
    args = {op.name: abs(op.arg) for op in ops}
    assert args["Brightness"] == pytest.approx(1.0) and args["Sharpness"] == pytest.approx(1.0)
    assert args["ShearX"] == pytest.approx(0.15) and args["TranslateY"] == pytest.approx(5.0)
    assert args["Rotate"] == pytest.approx(15.0)
    img = Image.fromarray(_smooth_image())
    assert np.array_equal(np.asarray(apply_op(img, "Brightness", 1.0)), np.asarray(img))


def test_random_augment_sampling_statistics():
    gen = torch.Generator().manual_seed(0)
    aug = RandomAugment(2, 5)
    draws = [aug.sample_ops(gen) for _ in range(3000)]
    assert all(len(d) == 2 for d in draws)
    names = collections.Counter(op.name for d in draws for op in d)
    assert set(names) == set(BLIP_AUGMENTS)
    for count in names.values():  # uniform over 10 ops: 600 expected, sd ~23
        assert 480 < count < 720
    applied = sum(op.applied for d in draws for op in d) / 6000
    assert 0.47 < applied < 0.53
    signs = [op.arg > 0 for d in draws for op in d if op.name == "Rotate"]
    assert 0.4 < sum(signs) / len(signs) < 0.6
    # both slots may draw the same op (with replacement, like np.random.choice)
    assert any(d[0].name == d[1].name for d in draws)


def test_unknown_op_rejected():
    with pytest.raises(ValueError, match="Solarise"):
        RandomAugment(2, 5, augs=["Identity", "Solarise"])


def test_test_transform_is_bicubic_resize_and_clip_normalisation():
    img = Image.fromarray(_smooth_image(50, 70))
    out = build_image_transform("test", 32)(img)
    ref = T.functional.resize(img, [32, 32], interpolation=InterpolationMode.BICUBIC)
    ref = (T.functional.to_tensor(ref) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, ref, atol=1e-6)


def test_train_transform_shapes_determinism_and_crop_defaults():
    img = Image.fromarray(_smooth_image())
    tf = build_image_transform("pretrain", 24)
    torch.manual_seed(3)
    a = tf(img)
    torch.manual_seed(3)
    b = tf(img)
    assert a.shape == (3, 24, 24) and torch.equal(a, b)
    crops = {t.scale for t in build_image_transform("pretrain", 24).transforms if isinstance(t, T.RandomResizedCrop)}
    assert crops == {(0.2, 1.0)}
    crops = {t.scale for t in build_image_transform("train", 24).transforms if isinstance(t, T.RandomResizedCrop)}
    assert crops == {(0.5, 1.0)}
    names = [type(t).__name__ for t in build_image_transform("train", 24, randaugment=False).transforms]
    assert names == ["RandomResizedCrop", "ToTensor", "Normalize"]  # no flip by default
    names = [type(t).__name__ for t in build_image_transform("train", 24, hflip=0.5).transforms]
    assert "RandomHorizontalFlip" in names and "RandomAugment" in names


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="val", image_size=8), "kind"),
        (dict(kind="train", image_size=0), "image_size"),
        (dict(kind="train", image_size=8, crop_scale=(0.6, 0.2)), "crop_scale"),
        (dict(kind="train", image_size=8, hflip=2.0), "hflip"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_image_transform(**kwargs)
