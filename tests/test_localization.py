"""Localisation scores by hand, and ground truth from record boxes and phantom lesion masks."""

import json

import numpy as np
import pytest

from data.caption_lists import CaptionList, CaptionListError
from data.captions import pre_caption
from data.grounding import GroundTruth, find_phrase
from data.phantom import generate_phantom_dataset
from visualize.localization import ScoreTable, cell_coverage, score_map


def test_scores_on_a_hand_made_case():
    mask = np.zeros((4, 6), dtype=bool)
    mask[0:2, 4:6] = True                      # top-right 2 x 2: area 4 / 24
    image_map = np.zeros((4, 6))
    image_map[1, 5] = 3.0                      # peak inside
    image_map[3, 0] = 1.0
    grid_map = np.array([[0.0, 0.0, 2.0], [0.5, 0.0, 0.0]])  # 2 x 3 grid, max in the top-right cell
    score = score_map(image_map, grid_map, mask)
    assert score.pointing and score.cell_pointing
    assert score.energy == pytest.approx(3.0 / 4.0)
    assert score.chance_pointing == pytest.approx(4 / 24)
    assert score.chance_cell == pytest.approx(1 / 6)  # cells of 2 x 2 px: only the top-right one is touched


def test_miss_and_empty_map():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    image_map = np.zeros((4, 4))
    image_map[3, 3] = 1.0
    miss = score_map(image_map, np.array([[0.0, 0.0], [0.0, 1.0]]), mask)
    assert not miss.pointing and not miss.cell_pointing and miss.energy == 0.0
    empty = score_map(np.zeros((4, 4)), np.zeros((2, 2)), mask)  # argmax would say (0, 0): a hit by accident
    assert not empty.pointing and not empty.cell_pointing and empty.energy == 0.0


def test_an_oracle_map_scores_perfectly_and_a_uniform_one_at_chance():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 40)) < 0.1
    oracle = score_map(mask.astype(float), np.ones((3, 4)) * (np.arange(12).reshape(3, 4) == 5), mask | True)
    assert oracle.pointing and oracle.energy == pytest.approx(1.0)
    uniform = score_map(np.ones((30, 40)), np.ones((3, 4)), mask)
    assert uniform.energy == pytest.approx(uniform.chance_pointing) == pytest.approx(mask.mean())


def test_cell_coverage_counts_boundary_pixels_for_both_cells():
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True  # 5 px over 2 cells: rows 0..2 and 2..4 share row 2
    assert cell_coverage(mask, (2, 2)).tolist() == [[True, True], [True, True]]
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 5] = True
    assert cell_coverage(mask, (3, 3)).tolist() == [[False, False, True], [False] * 3, [False] * 3]


def test_score_table_groups():
    table = ScoreTable()
    hit = score_map(np.eye(2), np.eye(2), np.eye(2, dtype=bool))
    miss = score_map(np.eye(2), np.eye(2), np.fliplr(np.eye(2)).astype(bool))
    table.add(hit, "small")
    table.add(miss, "large")
    summary = table.summary()
    assert summary["all"]["n"] == 2 and summary["all"]["pointing"] == 0.5
    assert summary["small"]["pointing"] == 1.0 and summary["large"]["pointing"] == 0.0


def test_find_phrase_matches_cleaned_words():
    words = pre_caption("Axial CT: a hyperdense lesion (left frontal lobe).").split()
    assert [words[i] for i in find_phrase(words, "Left frontal lobe")] == ["left", "frontal", "lobe"]
    assert find_phrase(words, "right frontal") == []


def _write_list(tmp_path, records):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(records))
    return CaptionList(path)


def test_boxes_whole_caption_and_per_phrase(tmp_path):
    caption_list = _write_list(tmp_path, [
        {"image": "a.png", "caption": "Lesion in the left lobe", "boxes": [[2, 1, 5, 3]]},
        {"image": "b.png", "caption": ["Mass in the right lobe and a cyst", "Another text"],
         "boxes": [{"box": [0, 0, 2, 2], "phrase": "right lobe"}, {"box": [8, 8, 20, 20], "phrase": "a cyst"}]},
        {"image": "c.png", "caption": "no boxes here"},
    ])
    truth = GroundTruth(caption_list)
    first = truth.targets(caption_list.item(0), "Lesion in the left lobe", (10, 10))
    assert first.mask.sum() == 3 * 2 and first.mask[1:3, 2:5].all() and first.phrases == []
    second = truth.targets(caption_list.item(1), "Mass in the right lobe and a cyst", (10, 10))
    assert second.mask.sum() == 4 + 4  # the cyst box is clipped to the 10 x 10 image
    assert [p.words for p in second.phrases] == [[3, 4], [6, 7]]
    # a box tied to a phrase belongs to the captions that contain the phrase
    assert truth.targets(caption_list.item(1), "Another text", (10, 10)) is None
    assert truth.targets(caption_list.item(2), "no boxes here", (10, 10)) is None


@pytest.mark.parametrize("boxes, message", [
    ([[1, 2, 3]], r"\[x0, y0, x1, y1\]"), ([[5, 5, 5, 9]], "is empty"), ([[20, 20, 30, 30]], "outside the 10x10"),
    ([{"box": [0, 0, 2, 2]}], "'phrase' must be"), ({"box": 1}, "expected a list"),
])
def test_bad_boxes_name_the_record(tmp_path, boxes, message):
    caption_list = _write_list(tmp_path, [{"image": "a.png", "caption": "x", "boxes": boxes}])
    with pytest.raises(CaptionListError, match=message) as info:
        GroundTruth(caption_list).targets(caption_list.item(0), "x", (10, 10))
    assert "a.png (record 0)" in str(info.value)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "data"
    generate_phantom_dataset(out, num_train=4, num_val=4, num_test=40, image_size=64, seed=3, progress=False)
    return out


def test_phantom_masks_tie_each_lesion_phrase_to_its_lesion(phantom):
    caption_list = CaptionList(phantom / "retrieval_test.json")
    truth = GroundTruth(caption_list)
    assert truth.source == "phantom lesion masks"
    metadata = {r["image"]: r for r in json.loads((phantom / "metadata.json").read_text())["images"]}
    checked = 0
    for index in range(len(caption_list)):
        item = caption_list.item(index)
        record = metadata[item.record["image"]]
        for caption in item.captions:
            targets = truth.targets(item, caption, (64, 64))
            if not record["lesions"]:
                assert targets is None
                continue
            words = pre_caption(caption).split()
            assert len(targets.phrases) == len(record["lesions"])
            assert targets.mask.sum() == sum(lesion["area_px"] for lesion in record["lesions"])
            for phrase in targets.phrases:
                lesion = next(les for les in record["lesions"] if phrase.label == les["size"]
                              and phrase.mask.sum() == les["area_px"])
                named = [words[i].strip(",") for i in phrase.words]
                assert lesion["hemisphere"] in named and lesion["lobe"] in named
                x0, y0, x1, y1 = lesion["box"]
                assert phrase.mask[y0:y1, x0:x1].sum() == phrase.mask.sum()  # the mask of that lesion
                checked += 1
    assert checked >= 40


def test_panel_records_move_their_figures_boxes_into_the_crop(tmp_path):
    """The splitter copies the figure's fields into each panel record: boxes are in figure pixels."""
    figure_boxes = [{"box": [110, 20, 130, 40], "phrase": "the mass"}, {"box": [10, 10, 20, 20], "phrase": "other"}]
    caption_list = _write_list(tmp_path, [
        {"image": "crops/f-B.png", "caption": "B the mass", "parent": "images/f.png", "box": [100, 0, 200, 50],
         "alignment": "ocr", "label": "B", "boxes": figure_boxes},
        {"image": "crops/f.png", "caption": "the mass and other", "parent": "images/f.png", "box": [0, 0, 200, 50],
         "alignment": "whole", "boxes": figure_boxes},
    ])
    truth = GroundTruth(caption_list)
    panel = truth.targets(caption_list.item(0), "B the mass", (100, 50))
    assert panel.mask.sum() == 20 * 20 and panel.mask[20:40, 10:30].all()
    assert [p.words for p in panel.phrases] == [[1, 2]]
    whole = truth.targets(caption_list.item(1), "the mass and other", (200, 50))
    assert whole.mask.sum() == 400 + 100 and len(whole.phrases) == 2


def test_missing_phantom_mask_is_a_record_error(phantom, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(phantom, copy)
    caption_list = CaptionList(copy / "retrieval_test.json")
    truth = GroundTruth(caption_list)
    item = next(caption_list.item(i) for i in range(len(caption_list))
                if truth.phantom[str(caption_list.item(i).image)]["lesions"])
    (copy / truth.phantom[str(item.image)]["mask"]).unlink()
    with pytest.raises(CaptionListError, match="cannot read the lesion mask"):
        truth.targets(item, item.captions[0], (64, 64))
