"""BLIP's laion_path: all of train_file plus part (epoch mod n) each epoch, with exact mid-epoch resume."""

import json

import pytest
import torch

from data.laion_parts import LaionPartsData, epoch_files, laion_part_files
from data.pretrain_dataset import PretrainDataset
from data.transforms import build_image_transform
from tests.shard_helpers import make_json_set
from utils.errors import DatasetError


def _setup(tmp_path):
    base = make_json_set(tmp_path / "base", 6, bad=False, prefix="b")
    laion = tmp_path / "laion"
    laion.mkdir()
    for part, n in (("part_01", 4), ("part_00", 2)):  # written out of order: parts sort by name
        ann = make_json_set(tmp_path / part, n, bad=False, prefix=part)
        records = json.loads(ann.read_text())
        for r in records:
            r["image"] = str(tmp_path / part / r["image"])
        (laion / f"{part}.json").write_text(json.dumps(records))
    (laion / "notes.txt").write_text("not a part")
    return base, laion


def _data(base, laion, workers=0):
    transform = build_image_transform("test", 16)
    return LaionPartsData([base], laion, lambda files: PretrainDataset(files, transform),
                          batch_size=2, num_workers=workers, seed=3)


def test_each_epoch_uses_train_file_plus_part_epoch_mod_n(tmp_path):
    base, laion = _setup(tmp_path)
    parts = laion_part_files(laion)
    assert [p.name for p in parts] == ["part_00.json", "part_01.json"]
    assert epoch_files([base], parts, 3) == [base, parts[1]]
    assert laion_part_files("") == [] and epoch_files([base], [], 5) == [base]
    data = _data(base, laion)
    sizes = []
    for epoch in range(4):
        data.set_epoch(epoch)
        captions = [c for batch in data for c in batch["caption"]]
        sizes.append(data.samples_per_epoch)
        assert len(captions) == data.samples_per_epoch  # 8 and 10: even, nothing dropped
        part = "part_00" if epoch % 2 == 0 else "part_01"
        assert sum(part in c for c in captions) == (2 if part == "part_00" else 4)
        assert sum(" case b" in c for c in captions) == 6
    assert sizes == [8, 10, 8, 10]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no \\*.json parts"):
        laion_part_files(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a folder"):
        laion_part_files(tmp_path / "absent")


def test_resume_mid_epoch_of_a_later_part_is_exact(tmp_path):
    base, laion = _setup(tmp_path)
    full = _data(base, laion)
    full.set_epoch(3)
    batches = list(full)
    first = _data(base, laion)
    first.set_epoch(3)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict(consumed=4)
    assert state["laion_part"].endswith("part_01.json") and state["dataset_len"] == 10
    resumed = _data(base, laion, workers=1)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    resumed.set_epoch(3)
    tail = list(resumed)
    assert len(head + tail) == len(batches)
    for a, b in zip(batches, head + tail):
        assert torch.equal(a["index"], b["index"]) and a["caption"] == b["caption"]
