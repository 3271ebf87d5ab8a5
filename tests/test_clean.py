"""Cleaning and test-leakage removal on a constructed overlap between pretraining and evaluation lists."""

import json
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from data.clean import clean_records, eval_lists_from_configs, main as clean_main


def _save(arr, path: Path, size=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr).convert("RGB")
    if size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    img.save(path, quality=85) if path.suffix == ".jpg" else img.save(path)
    return str(path)


@pytest.fixture()
def overlap(tmp_path):
    camera, astronaut, coffee = skdata.camera(), skdata.astronaut(), skdata.coffee()
    chelsea, rocket, coins, moon = skdata.chelsea(), skdata.rocket(), skdata.coins(), skdata.moon()
    ev = tmp_path / "eval"
    _save(camera, ev / "cam.png")
    _save(astronaut, ev / "astro.png")
    (ev / "test.json").write_text(json.dumps([
        {"image": "cam.png", "caption": ["A man with a camera on a tripod.", "photographer outdoors"]},
        {"image": "astro.png", "caption": ["Astronaut portrait in a suit"]},
    ]))
    a, b = tmp_path / "roco", tmp_path / "pmcoa"
    records_a = [
        # leak: the eval camera image, resized and re-encoded as JPEG, under another caption
        {"image": _save(camera, a / "cam_small.jpg", (256, 256)), "caption": "radiograph of the left hand", "source": "roco"},
        # leak: an eval caption (case and punctuation differ), different image
        {"image": _save(coffee, a / "coffee.png"), "caption": "a MAN with a camera on a tripod", "source": "roco"},
        # kept; its caption has HTML and runs of whitespace
        {"image": _save(chelsea, a / "cat.png"), "caption": "CT   of the <b>abdomen</b> with contrast", "source": "roco"},
        {"image": _save(rocket, a / "rocket.png"), "caption": "short", "source": "roco"},                # short caption
        {"image": _save(coins, a / "tiny.png", (40, 30)), "caption": "tiny coins image here", "source": "roco"},  # small
        {"image": str(a / "gone.png"), "caption": "missing image file here", "source": "roco"},
        {"caption": "no image field at all"},
    ]
    records_b = [
        # near-duplicate of roco's cat across sources (resized JPEG), different caption
        {"image": _save(chelsea, b / "cat.jpg", (300, 200)), "caption": "MRI of the knee joint", "source": "pmc_oa"},
        # duplicate caption of roco's cleaned cat caption
        {"image": _save(moon, b / "moon.png"), "caption": "CT of the abdomen with contrast", "source": "pmc_oa"},
        # leak: exact copy of the eval astronaut image
        {"image": _save(astronaut, b / "astro_copy.png"), "caption": "a person in a white suit", "source": "pmc_oa"},
        {"image": _save(rocket, b / "rocket.png"), "caption": "launch of a rocket at dusk", "source": "pmc_oa"},  # kept
    ]
    (a / "roco.json").write_text(json.dumps(records_a))
    (b / "pmc_oa.json").write_text(json.dumps(records_b))
    return a / "roco.json", b / "pmc_oa.json", ev / "test.json"


def test_constructed_overlap_is_removed_and_counted(overlap):
    roco, pmc, test = overlap
    kept, report = clean_records([roco, pmc], [test])
    assert [Path(r["image"]).name for r in kept] == ["cat.png", "rocket.png"]
    assert kept[0]["caption"] == "CT of the abdomen with contrast" and report["cleaned_html_whitespace"] == 1
    assert report["removed"] == {
        "leak_image": 2, "leak_caption": 1, "short_caption": 1, "small_image": 1, "image_missing": 1,
        "bad_record": 1, "near_duplicate_image": 1, "duplicate_caption": 1,
    }
    assert report["test_leakage_removed"] == 3 and report["test_leakage_by_eval_file"] == {str(test): 3}
    assert report["removed_by_source"]["pmc_oa"] == {"near_duplicate_image": 1, "duplicate_caption": 1, "leak_image": 1}
    # without the evaluation list, the leaked records stay in
    kept_blind, blind = clean_records([roco, pmc], [])
    assert blind["test_leakage_removed"] == 0 and len(kept_blind) == len(kept) + 3  # all three leaks kept


def test_cli_writes_list_report_and_chart(overlap, tmp_path):
    roco, pmc, test = overlap
    config = tmp_path / "c.yaml"
    config.write_text(f"eval_file: {test}\n")
    assert eval_lists_from_configs([config]) == [test]
    out = tmp_path / "clean"
    assert clean_main([str(roco), str(pmc), "--config", str(config), "--out", str(out)]) == 0
    records = json.loads((out / "pretrain_clean.json").read_text())
    assert len(records) == 2 and not Path(records[0]["image"]).is_absolute()
    assert (out / records[0]["image"]).is_file()
    report = json.loads((out / "clean_report.json").read_text())
    assert report["test_leakage_removed"] == 3
    assert Image.open(out / "clean_report.png").size[0] > 100
