"""Pretrain dataset: format contract, load-time and run-time skips, full batches, per-sample seeding."""

import io
import json
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from data.pretrain_dataset import (
    DatasetError,
    PretrainDataset,
    SkipCounter,
    build_pretrain_dataset,
    build_pretrain_loader,
    collate_pretrain,
    sample_seed,
    swap_laterality,
)
from data.transforms import build_image_transform

TO_TENSOR = T.ToTensor()


def _png(path, value=100, size=(16, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _truncated_jpeg(path):
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    return path


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_relative_paths_resolve_per_json_folder_and_extra_fields_are_ignored(tmp_path):
    _png(tmp_path / "a" / "img" / "x.png")
    _png(tmp_path / "b" / "y.png")
    absolute = _png(tmp_path / "abs.png")
    fa = _write(tmp_path / "a" / "list.json", [{"image": "img/x.png", "caption": "A <b>Left</b> lobe.", "pmcid": "PMC1"}])
    fb = _write(tmp_path / "b" / "list.json", [{"image": "y.png", "caption": "two"}, {"image": str(absolute), "caption": "z"}])
    ds = PretrainDataset([fa, fb], TO_TENSOR)
    assert len(ds) == 3
    assert ds.image_path(0) == str(tmp_path / "a" / "img" / "x.png")
    assert ds.image_path(1) == str(tmp_path / "b" / "y.png")
    assert ds.image_path(2) == str(absolute)
    assert ds.caption(0) == "a left lobe"  # pre_caption after HTML removal
    assert ds.records_per_file == {str(fa): 1, str(fb): 2}
    item = ds[0]
    assert item["image"].shape == (3, 12, 16) and item["skipped"] == [] and item["index"] == 0
    # an explicit image_root wins over the JSON folder
    ds_root = PretrainDataset(fb, TO_TENSOR, image_root=tmp_path / "elsewhere")
    assert ds_root.image_path(0) == str(tmp_path / "elsewhere" / "y.png")


def test_bad_records_are_skipped_at_load_with_file_and_index(tmp_path):
    _png(tmp_path / "ok.png")
    records = [
        {"image": "ok.png", "caption": "fine"},
        "just a string",
        {"caption": "no image"},
        {"image": "ok.png"},
        {"image": "ok.png", "caption": "<b></b> ((  ))"},
        {"image": "ok.png", "caption": ["a", "list"]},
        {"image": 5, "caption": "number path"},
    ]
    f = _write(tmp_path / "l.json", records)
    ds = PretrainDataset(f, TO_TENSOR)
    assert len(ds) == 1
    assert dict(ds.load_skips.counts) == {
        "not_an_object": 1,
        "missing_image_field": 1,
        "missing_caption_field": 1,
        "empty_caption": 1,
        "caption_not_text": 1,
        "bad_image_field": 1,
    }
    assert ("empty_caption", f"{f}[4]") in ds.load_skips.examples


def test_malformed_json_fails_at_start_naming_file_line_and_column(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[\n  {"image": "a.png", "caption": "x"},\n  {"image": "b.png" "caption": "y"}\n]')
    with pytest.raises(DatasetError, match=r"broken\.json:3:21: malformed JSON: Expecting"):
        PretrainDataset(f, TO_TENSOR)


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"image": "a.png"}', "expected a JSON list"),
        (None, "not found"),
        (b"\xff\xfe[]", "not UTF-8"),
        ('[{"image": "a.png", "caption": ""}]', "no usable records"),
    ],
)
def test_unusable_annotation_files(tmp_path, content, match):
    f = tmp_path / "f.json"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(DatasetError, match=match) as err:
        PretrainDataset(f, TO_TENSOR)
    assert "f.json" in str(err.value)


def _bad_data(tmp_path):
    good = [_png(tmp_path / f"g{i}.png", value=i) for i in range(6)]
    (tmp_path / "not_image.jpg").write_text("<html>404</html>")
    _truncated_jpeg(tmp_path / "trunc.jpg")
    _png(tmp_path / "huge.png", size=(100, 100))
    records = [{"image": p.name, "caption": f"good {i}"} for i, p in enumerate(good)]
    records += [
        {"image": "missing.png", "caption": "gone"},
        {"image": "trunc.jpg", "caption": "cut"},
        {"image": "not_image.jpg", "caption": "html"},
        {"image": "huge.png", "caption": "bomb"},
        {"image": "g0.png", "caption": "   "},
    ]
    return _write(tmp_path / "data.json", records)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_images_are_replaced_counted_and_batches_stay_full(tmp_path, num_workers):
    f = _bad_data(tmp_path)
    tf = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    ds = PretrainDataset(f, tf, max_pixels=5000)  # huge.png has 10,000 pixels, trunc.jpg 4096
    assert dict(ds.load_skips.counts) == {"empty_caption": 1}
    assert len(ds) == 10
    loader = build_pretrain_loader(ds, batch_size=5, num_workers=num_workers, seed=0)
    loader.set_epoch(0)
    counter = SkipCounter()
    used = []
    for batch in loader:
        assert batch["image"].shape == (5, 3, 8, 8) and len(batch["caption"]) == 5
        counter.update(batch["skipped"])
        used += batch["index"].tolist()
    assert counter.total == 4
    assert dict(counter.counts) == {"missing": 1, "truncated": 1, "not_an_image": 1, "too_large": 1}
    paths = {where for _, where in counter.examples}
    assert paths == {str(tmp_path / n) for n in ("missing.png", "trunc.jpg", "not_image.jpg", "huge.png")}
    assert all(i < 6 for i in used)  # only good records were delivered
    merged = counter.merged_across_ranks()  # no process group: identity
    assert merged.state_dict() == counter.state_dict()
    assert "4 samples skipped" in counter.summary()


def test_all_images_missing_stops_with_a_clear_error(tmp_path):
    f = _write(tmp_path / "d.json", [{"image": f"m{i}.png", "caption": "x"} for i in range(3)])
    ds = PretrainDataset(f, TO_TENSOR, max_attempts=5)
    item = ds[0]  # not raised in a loader worker: the training loop stops every rank with it (test_pretrain)
    assert re.search("5 images in a row could not be loaded.*image_root", item["fatal"])
    assert collate_pretrain([item, item])["fatal"] == item["fatal"]


def _aug_data(tmp_path, n=8):
    paths = [_png(tmp_path / f"i{i}.png", value=i, size=(40, 32)) for i in range(n)]
    return _write(tmp_path / "d.json", [{"image": p.name, "caption": f"c{i}"} for i, p in enumerate(paths)])


def test_augmentation_depends_only_on_seed_epoch_index_whatever_the_workers(tmp_path):
    f = _aug_data(tmp_path)
    ds = PretrainDataset(f, build_image_transform("pretrain", 16), seed=5)
    by_workers = {}
    for workers in (0, 2):
        loader = build_pretrain_loader(ds, batch_size=2, num_workers=workers, seed=1)
        out = {}
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            for batch in loader:
                for idx, img in zip(batch["index"].tolist(), batch["image"]):
                    out[(epoch, idx)] = img
        by_workers[workers] = out
    assert by_workers[0].keys() == by_workers[2].keys()
    for key in by_workers[0]:
        assert torch.equal(by_workers[0][key], by_workers[2][key])
    # direct access with the same (index, epoch) gives the same tensor; another epoch another one
    assert torch.equal(ds[(3, 1)]["image"], by_workers[0][(1, 3)])
    assert not torch.equal(ds[(3, 0)]["image"], ds[(3, 1)]["image"])
    different_seed = PretrainDataset(f, build_image_transform("pretrain", 16), seed=6)
    assert not torch.equal(different_seed[(3, 1)]["image"], ds[(3, 1)]["image"])


def test_loading_does_not_disturb_the_training_processes_rng(tmp_path):
    f = _aug_data(tmp_path, n=2)
    ds = PretrainDataset(f, build_image_transform("pretrain", 16))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    ds[0]
    ds[(1, 4)]
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_sample_seed_is_a_function_of_its_three_inputs():
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450


def test_laterality_swap():
    assert swap_laterality("left frontal lobe, right-sided effusion") == "right frontal lobe, left-sided effusion"
    assert swap_laterality("Left leftward RIGHT rightmost") == "Right rightward LEFT leftmost"
    assert swap_laterality("leftover bright copyright") == "leftover bright copyright"


def test_flip_mirrors_image_and_swaps_caption(tmp_path):
    p = _png(tmp_path / "a.png", size=(6, 4))
    f = _write(tmp_path / "d.json", [{"image": p.name, "caption": "mass in the left lung"}])
    plain = PretrainDataset(f, TO_TENSOR)[0]
    flipped = PretrainDataset(f, TO_TENSOR, hflip=1.0)[0]
    assert plain["caption"] == "mass in the left lung"
    assert flipped["caption"] == "mass in the right lung"
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    with pytest.raises(ValueError, match="hflip"):
        PretrainDataset(f, TO_TENSOR, hflip=1.5)


def test_collate_and_skip_counter_state_roundtrip():
    samples = [
        {"image": torch.zeros(3, 2, 2), "caption": "a", "index": 4, "skipped": [("missing", "/x.png")]},
        {"image": torch.ones(3, 2, 2), "caption": "b", "index": 1, "skipped": []},
    ]
    batch = collate_pretrain(samples)
    assert batch["image"].shape == (2, 3, 2, 2) and batch["caption"] == ["a", "b"]
    assert batch["index"].tolist() == [4, 1] and batch["skipped"] == [("missing", "/x.png")]
    counter = SkipCounter(max_examples=2)
    counter.update([("missing", "a"), ("truncated", "b"), ("missing", "c")])
    assert counter.examples == [("missing", "a"), ("truncated", "b")]
    again = SkipCounter.from_state_dict(counter.state_dict())
    assert again.counts == counter.counts and again.examples == counter.examples
    counter.reset()
    assert counter.total == 0 and counter.summary() == "0 samples skipped"


def test_build_from_config(tmp_path):
    f = _aug_data(tmp_path, n=3)
    cfg = {
        "train_file": [str(f)], "image_root": None, "image_size": 16, "crop_scale": [0.5, 1.0],
        "randaugment": False, "hflip": 0.25, "max_words": 5, "max_image_pixels": 10_000, "seed": 3,
    }
    ds = build_pretrain_dataset(cfg)
    assert len(ds) == 3 and ds.hflip == 0.25 and ds.max_pixels == 10_000 and ds.seed == 3
    assert ds[0]["image"].shape == (3, 16, 16)
    assert "RandomHorizontalFlip" not in repr(ds.transform)  # the flip lives in the dataset
