"""Phantom dataset: determinism, caption <-> image consistency, unique eval captions, masks, formats, reruns.

Captions are checked with a keyword parser written here, independent of the
generator's phrase tables; geometry is checked from the written PNGs and the
documented head-coordinate convention, not from the renderer's internals.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.captions import pre_caption
from data.phantom import generate_phantom_dataset, num_unique_specs, phantom_dataset_is_complete
from data.phantom.__main__ import main as cli_main
from data.phantom.attributes import LOCATIONS, MODALITIES, ImageSpec, Lesion, sample_unique_specs
from data.phantom.generate import PhantomParams
from data.phantom.render import PlacementError, render_phantom
from models.tokenizer import load_tokenizer, special_token_ids

PARAMS = dict(num_train=40, num_val=40, num_test=40, image_size=128, captions_per_image=3, seed=7)
# Documented in docs/phantom.md (not imported from the renderer on purpose).
SIZE_FRACTIONS = {"small": (0.055, 0.07), "medium": (0.085, 0.105), "large": (0.125, 0.145)}
LOBE_SECTORS_DEG = {"frontal": (0, 57), "temporal": (57, 102), "parietal": (102, 140), "occipital": (140, 180)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "data"
    generate_phantom_dataset(root, workers=1, **PARAMS)
    return root


@pytest.fixture(scope="module")
def metadata(dataset) -> dict:
    return json.loads((dataset / "metadata.json").read_text())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- independent caption parser

_SIZE = {"small": r"\b(small|tiny)\b", "medium": r"\b(medium|moderate|intermediate)-sized\b",
         "large": r"\b(large|sizeable)\b"}
_SHAPE = {"round": r"\b(round|rounded|circular)\b", "oval": r"\b(oval|ovoid|elliptical)\b",
          "irregular": r"\b(irregular|irregularly|lobulated)\b"}
_INTENSITY = {"hyper": r"\b(hyper\w+|high-\w+|bright)\b", "hypo": r"\b(hypo\w+|low-\w+|dark)\b"}
_LOBE = r"\b(frontal|parietal|temporal|occipital)\b"


def _one_of(table: dict[str, str], text: str) -> str:
    found = [key for key, pattern in table.items() for _ in re.finditer(pattern, text)]
    assert len(found) == 1, f"expected exactly one of {list(table)} in {text!r}, found {found}"
    return found[0]


def parse_caption(caption: str) -> tuple[str, tuple]:
    """(modality, sorted lesion tuples) from a caption, using keywords only."""
    text = caption.lower()
    modality = _one_of({"FLAIR": r"\bflair\b", "CT": r"\bct\b", "T1": r"\bt1\b", "T2": r"\bt2\b"}, text)
    if modality == "FLAIR":
        assert not re.search(r"\bt[12]\b", text), caption
    if modality == "CT":
        assert not re.search(r"intense|signal", text), f"MR wording in a CT caption: {caption!r}"
    else:
        assert not re.search(r"dense|attenuation|density", text), f"CT wording in an MR caption: {caption!r}"
    lesions = []
    for segment in re.split(r";| and ", text):
        if not re.search(_LOBE, segment):
            continue
        lesions.append((
            _one_of({"left": r"\bleft\b", "right": r"\bright\b"}, segment),
            _one_of({lobe: rf"\b{lobe}\b" for lobe in ("frontal", "parietal", "temporal", "occipital")}, segment),
            _one_of(_SIZE, segment),
            _one_of(_SHAPE, segment),
            _one_of(_INTENSITY, segment),
        ))
    if not lesions:
        assert re.search(r"\b(no|without)\b", text), f"a caption without lesions must say so: {caption!r}"
    return modality, tuple(sorted(lesions))


def record_tuple(record: dict) -> tuple[str, tuple]:
    lesions = [(l["hemisphere"], l["lobe"], l["size"], l["shape"], l["intensity"]) for l in record["lesions"]]
    return record["modality"], tuple(sorted(lesions))


def test_parser_on_examples_from_the_brief():
    assert parse_caption("Axial T2-weighted MRI shows a large hyperintense oval lesion in the left frontal lobe.") == (
        "T2", (("left", "frontal", "large", "oval", "hyper"),))
    assert parse_caption("CT of the head: small hypodense irregular mass, right occipital region.") == (
        "CT", (("right", "occipital", "small", "irregular", "hypo"),))
    assert parse_caption("No focal lesion on this FLAIR image.") == ("FLAIR", ())
    with pytest.raises(AssertionError):
        parse_caption("CT shows a hyperintense round lesion in the left frontal lobe.")  # MR word on CT


# ---------------------------------------------------------------- determinism

def test_same_seed_same_bytes_for_any_worker_count(dataset, tmp_path):
    again = tmp_path / "again"
    generate_phantom_dataset(again, workers=2, **PARAMS)
    first, second = _tree_bytes(dataset), _tree_bytes(again)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert any(name.startswith("tokenizer/") for name in first)


def test_different_seed_gives_different_data(dataset, tmp_path):
    other = tmp_path / "other"
    generate_phantom_dataset(other, **{**PARAMS, "seed": 8, "num_train": 5, "num_val": 5, "num_test": 5})
    for name in ("images/train/train_00000.png", "images/test/test_00000.png"):
        assert (dataset / name).read_bytes() != (other / name).read_bytes()
    captions = lambda root: json.loads((root / "pretrain.json").read_text())[0]["caption"]  # noqa: E731
    assert captions(dataset) != captions(other)


# ---------------------------------------------------------------- captions

def test_every_caption_describes_its_image(metadata):
    for record in metadata["images"]:
        assert len(record["captions"]) == PARAMS["captions_per_image"]
        assert len(set(record["captions"])) == len(record["captions"]), record["image"]
        for caption in record["captions"]:
            assert parse_caption(caption) == record_tuple(record), (record["image"], caption)
            assert len(pre_caption(caption, 0).split()) <= 30, caption  # BLIP's max_words would cut it


@pytest.mark.parametrize("split", ["val", "test"])
def test_each_eval_caption_identifies_exactly_one_image(dataset, split):
    entries = json.loads((dataset / f"retrieval_{split}.json").read_text())
    meta = {r["image"]: record_tuple(r) for r in json.loads((dataset / "metadata.json").read_text())["images"]}
    tuples = [meta[entry["image"]] for entry in entries]
    assert len(set(tuples)) == len(tuples), "two eval images share an attribute tuple"
    for entry in entries:
        for caption in entry["caption"]:
            described = parse_caption(caption)
            matching = [e["image"] for e, t in zip(entries, tuples) if t == described]
            assert matching == [entry["image"]], caption


def test_caption_variety(metadata):
    captions = [c for r in metadata["images"] for c in r["captions"]]
    openings = {" ".join(c.split()[:2]) for c in captions}
    assert len(openings) > 15  # many templates and modality phrases, not one sentence pattern
    normal = [c for r in metadata["images"] if not r["lesions"] for c in r["captions"]]
    assert len(set(normal)) >= min(len(normal), 6)


def test_unique_spec_sampler_is_exhaustive_and_capped():
    total = num_unique_specs()
    assert total == 4 * (1 + 8 * 18 + 28 * 18 * 18)  # modality x (normal + one lesion + two lesions)
    specs = sample_unique_specs(total, np.random.default_rng(0))
    assert len(set(specs)) == total
    few = sample_unique_specs(300, np.random.default_rng(1))
    assert sum(1 for s in few if not s.lesions) <= len(MODALITIES)  # one normal image per modality at most
    with pytest.raises(ValueError, match=str(total)):
        sample_unique_specs(total + 1, np.random.default_rng(0))


# ---------------------------------------------------------------- images, masks, geometry

def _head_coordinates(record: dict, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brain-normalised (u to the patient's left, v anterior), by the convention in docs/phantom.md."""
    head = record["head"]
    cx, cy = head["center_xy"]
    phi = math.radians(head["rotation_deg"])
    dx, dy = xs - cx, ys - cy
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = dx * math.sin(phi) - dy * math.cos(phi)
    brain_a, brain_b = head["brain_semi_axes_px"]
    return u / brain_a, v / brain_b


def test_masks_match_boxes_and_lie_inside_the_skull(dataset, metadata):
    for record in metadata["images"]:
        mask = np.asarray(Image.open(dataset / record["mask"]))
        image = Image.open(dataset / record["image"])
        assert mask.shape == (image.height, image.width) and image.mode == "L"
        assert set(np.unique(mask)) == set(range(len(record["lesions"]) + 1))
        for lesion in record["lesions"]:
            ys, xs = np.nonzero(mask == lesion["id"])
            assert lesion["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert lesion["area_px"] == len(xs)
            u, v = _head_coordinates(record, xs.astype(float), ys.astype(float))
            wobble = record["head"]["outline_wobble_max"]
            assert np.sqrt(u**2 + v**2).max() <= 1.0 + 2 * wobble, (record["image"], lesion["id"])


def test_left_is_image_right_and_lobes_are_where_documented(dataset, metadata):
    checked = 0
    for record in metadata["images"]:
        mask = np.asarray(Image.open(dataset / record["mask"]))
        for lesion in record["lesions"]:
            ys, xs = np.nonzero(mask == lesion["id"])
            u, v = _head_coordinates(record, xs.mean(), ys.mean())
            assert (u > 0) == (lesion["hemisphere"] == "left"), (record["image"], lesion)
            if abs(record["head"]["rotation_deg"]) < 1e-9:
                assert (xs.mean() > record["head"]["center_xy"][0]) == (lesion["hemisphere"] == "left")
            angle = math.degrees(math.atan2(abs(u), v))
            low, high = LOBE_SECTORS_DEG[lesion["lobe"]]
            assert low <= angle < high, (record["image"], lesion, angle)
            checked += 1
    assert checked > 50


def _feret_diameter(xs: np.ndarray, ys: np.ndarray) -> float:
    points = np.stack([xs, ys], 1).astype(float)
    return float(np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)).max()) + 1.0  # pixel centres -> extent


def test_lesion_size_classes_are_measurable_in_the_mask(dataset, metadata):
    size = PARAMS["image_size"]
    for record in metadata["images"]:
        mask = np.asarray(Image.open(dataset / record["mask"]))
        for lesion in record["lesions"]:
            ys, xs = np.nonzero(mask == lesion["id"])
            low, high = SIZE_FRACTIONS[lesion["size"]]
            assert low * size - 1.5 <= _feret_diameter(xs, ys) <= high * size + 1.5, (record["image"], lesion)
            assert 0.04 * size <= _feret_diameter(xs, ys)  # >= 4% of the width even at the smallest


def test_lesion_intensity_relative_to_surrounding_tissue(dataset, metadata):
    for record in metadata["images"]:
        image = np.asarray(Image.open(dataset / record["image"])).astype(float)
        mask = np.asarray(Image.open(dataset / record["mask"]))
        for lesion in record["lesions"]:
            inside = mask == lesion["id"]
            ring = _dilate(inside, 4) & ~_dilate(inside, 1) & (mask == 0)
            contrast = image[inside].mean() - np.median(image[ring])
            if lesion["intensity"] == "hyper":
                assert contrast > 30, (record["image"], lesion, contrast)
            else:
                assert contrast < -30, (record["image"], lesion, contrast)


def _dilate(region: np.ndarray, steps: int) -> np.ndarray:
    out = region.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def test_modalities_differ_in_bone_brightness(dataset, metadata):
    for record in metadata["images"]:
        image = np.asarray(Image.open(dataset / record["image"]))
        saturated = (image >= 250).mean()
        if record["modality"] == "CT":
            assert saturated > 0.03, record["image"]  # bright skull in a brain window
        else:
            assert saturated < 0.01, record["image"]  # cortical bone is dark on MRI


@pytest.mark.parametrize("image_size", [64, 128])
def test_every_location_pair_fits_two_large_lesions(image_size):
    pairs = itertools.product(itertools.combinations(LOCATIONS, 2), ("oval", "irregular"))
    for index, ((first, second), shape) in enumerate(pairs):
        spec = ImageSpec("T1", (Lesion(*first, "large", shape, "hyper"), Lesion(*second, "large", shape, "hypo")))
        try:
            _, mask, _ = render_phantom(spec, image_size, np.random.default_rng(index))
        except PlacementError as exc:  # pragma: no cover - the assertion message is the point
            pytest.fail(str(exc))
        assert {int(v) for v in np.unique(mask)} == {0, 1, 2}


# ---------------------------------------------------------------- files and formats

def test_split_files_follow_blip_formats(dataset, metadata):
    pretrain = json.loads((dataset / "pretrain.json").read_text())
    assert len(pretrain) == PARAMS["num_train"] * PARAMS["captions_per_image"]
    assert json.loads((dataset / "retrieval_train.json").read_text()) == pretrain
    for entry in pretrain:
        assert set(entry) == {"image", "caption", "image_id"} and isinstance(entry["caption"], str)
        assert not os.path.isabs(entry["image"]) and (dataset / entry["image"]).is_file()
    for split in ("val", "test"):
        entries = json.loads((dataset / f"retrieval_{split}.json").read_text())
        assert len(entries) == PARAMS[f"num_{split}"]
        for entry in entries:
            assert set(entry) == {"image", "caption"} and len(entry["caption"]) == PARAMS["captions_per_image"]
            assert all(isinstance(c, str) and c for c in entry["caption"])
            assert not os.path.isabs(entry["image"]) and (dataset / entry["image"]).is_file()
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["params"] == PARAMS and manifest["counts"] == {"train": 40, "val": 40, "test": 40}


def test_no_image_in_two_splits(dataset, metadata):
    by_split = {split: [r for r in metadata["images"] if r["split"] == split] for split in ("train", "val", "test")}
    for a, b in itertools.combinations(by_split, 2):
        assert not {r["image"] for r in by_split[a]} & {r["image"] for r in by_split[b]}
        assert not {r["image_id"] for r in by_split[a]} & {r["image_id"] for r in by_split[b]}
    digests = [hashlib.sha256((dataset / r["image"]).read_bytes()).hexdigest() for r in metadata["images"]]
    assert len(set(digests)) == len(digests)


def test_tokenizer_covers_all_caption_words(dataset, metadata):
    tokenizer = load_tokenizer(dataset / "tokenizer")
    special_token_ids(tokenizer)
    captions = [c for r in metadata["images"] for c in r["captions"]]  # val/test too
    for caption in captions:
        for text in (caption, pre_caption(caption, 30)):
            assert tokenizer.unk_token_id not in tokenizer(text).input_ids, text
    # Whole words stay whole: the vocabulary is closed and small.
    assert tokenizer.tokenize("hyperintense lobulated lesion") == ["hyperintense", "lobulated", "lesion"]


# ---------------------------------------------------------------- reruns, crashes, bad input

def test_complete_dataset_is_left_alone(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    manifest_time = (copy / "manifest.json").stat().st_mtime_ns
    image = copy / "images/train/train_00000.png"
    image_inode = image.stat().st_ino
    generate_phantom_dataset(copy, **PARAMS)
    assert (copy / "manifest.json").stat().st_mtime_ns == manifest_time
    assert image.stat().st_ino == image_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temp folder left behind


@pytest.mark.parametrize("damage", ["delete_image", "truncate_mask", "delete_manifest", "other_params"])
def test_partial_or_different_dataset_is_regenerated(dataset, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    params = dict(PARAMS)
    if damage == "delete_image":
        (copy / "images/val/val_00003.png").unlink()
    elif damage == "truncate_mask":
        path = copy / "masks/test/test_00001.png"
        path.write_bytes(path.read_bytes()[:20])
    elif damage == "delete_manifest":
        (copy / "manifest.json").unlink()
    else:
        params["captions_per_image"] = 2
    assert not phantom_dataset_is_complete(copy, PhantomParams(**params))
    generate_phantom_dataset(copy, **params)
    assert phantom_dataset_is_complete(copy, PhantomParams(**params))
    if damage != "other_params":
        assert _tree_bytes(copy) == _tree_bytes(dataset)
    else:
        assert len(json.loads((copy / "retrieval_test.json").read_text())[0]["caption"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_crash_midway_leaves_no_dataset_that_looks_complete(tmp_path, monkeypatch):
    import data.phantom.generate as generate

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(generate, "_write_splits", crash)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        generate_phantom_dataset(out, num_train=3, num_val=2, num_test=2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp folder was removed too


def test_stale_temp_folder_of_a_dead_run_is_removed(tmp_path):
    stale = tmp_path / ".data.phantom-tmp-999999999-abcd1234"
    (stale / "images").mkdir(parents=True)
    unrelated = tmp_path / "keep.txt"
    unrelated.write_text("mine")
    generate_phantom_dataset(tmp_path / "data", num_train=3, num_val=2, num_test=2)
    assert not stale.exists() and unrelated.read_text() == "mine"


def test_refuses_to_replace_a_folder_with_foreign_files(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"out_dir .*notes\.txt"):
        generate_phantom_dataset(out, num_train=3, num_val=2, num_test=2)
    assert (out / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "override, name",
    [
        ({"num_test": num_unique_specs() + 1}, "num_test"),
        ({"num_val": num_unique_specs() + 1}, "num_val"),
        ({"image_size": 32}, "image_size"),
        ({"image_size": 100000}, "image_size"),
        ({"num_train": 0}, "num_train"),
        ({"num_train": "10"}, "num_train"),
        ({"captions_per_image": 0}, "captions_per_image"),
        ({"captions_per_image": 21}, "captions_per_image"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_parameters_name_the_parameter(tmp_path, override, name):
    kwargs = {"num_train": 3, "num_val": 2, "num_test": 2, **override}
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        generate_phantom_dataset(tmp_path / "data", **kwargs)
    assert not (tmp_path / "data").exists()


def test_cli_generates_then_skips(tmp_path, capsys):
    args = ["--out", str(tmp_path / "d"), "--num_train", "4", "--num_val", "3", "--num_test", "3", "--quiet"]
    assert cli_main(args) == 0
    assert "wrote 10 images" in capsys.readouterr().out
    assert cli_main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli_main(args[:-1] + ["--num_test", str(num_unique_specs() + 5), "--quiet"]) == 2
    assert "num_test" in capsys.readouterr().err
