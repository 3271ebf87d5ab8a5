"""Shards: prepare (round trip, counts, atomic + resumable), index of existing tars, the streaming order and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data.image_io import open_image
from data.prepare import default_max_side, main as prepare_main
from data.pretrain_dataset import PretrainDataset
from data.shards.dataset import ShardDataset, ShardSampler, ShardTrainingData
from data.shards.index import index_tars
from data.shards.manifest import Manifest, file_sha256
from utils.errors import DatasetError
from data.shards.order import SourceSpec, StreamOrder
from data.shards.writer import PrepareSettings, encode_image, prepare_shards, resize_to_max_side
from data.transforms import build_image_transform
from tests.shard_helpers import make_json_set, make_laion_tar

ROOT = Path(__file__).resolve().parents[1]


def test_json_to_shards_to_samples_is_exact(tmp_path):
    ann = make_json_set(tmp_path / "src", 11)
    manifest = prepare_shards([ann], tmp_path / "shards",
                              PrepareSettings(max_side=4096, image_format="png", shard_samples=4))
    assert [s.samples for s in manifest.shards] == [4, 4, 3]
    assert manifest.counts["skipped"] == {"empty_caption": 1, "image_missing": 1, "image_truncated": 1,
                                          "missing_image_field": 1}
    for shard in manifest.shards:
        assert file_sha256(shard.path) == shard.sha256 and shard.path.stat().st_size == shard.bytes
    transform = build_image_transform("test", 24)
    from_json = PretrainDataset(ann, transform)
    from_shards = ShardDataset([Manifest.load(tmp_path / "shards")], transform)
    # the JSON loader drops the records without image or caption at load and finds the missing and the
    # truncated image only when it loads them; prepare found all four
    assert len(from_json) == 13 and len(from_shards) == 11
    for i in range(11):
        a, b = from_json[(i, 0)], from_shards[(i, 0)]
        assert a["caption"] == b["caption"] and torch.equal(a["image"], b["image"])
    meta = from_shards.metadata(3)
    assert (meta["source"], meta["license"], meta["source_id"], meta["image"]) == ("scrape", "CC BY", "im-3", "im3.png")


def test_prepare_resizes_once_and_is_deterministic(tmp_path):
    ann = make_json_set(tmp_path / "src", 3, bad=False, size=(300, 120))
    settings = PrepareSettings(max_side=100, image_format="jpeg", quality=85)
    first = prepare_shards([ann], tmp_path / "a", settings)
    second = prepare_shards([ann], tmp_path / "b", settings)
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in second.shards]  # byte-identical
    ds = ShardDataset([first], build_image_transform("test", 24))
    for i in range(3):
        img = open_image(ds.image_bytes(i))
        resized = resize_to_max_side(open_image(tmp_path / "src" / f"im{i}.png"), 100)
        assert img.size == resized.size == (100, round((120 + i % 5) * 100 / 300))
        expected = open_image(encode_image(resized, settings)[0])  # PIL's own JPEG of the resized figure
        assert np.array_equal(np.asarray(img), np.asarray(expected))
    assert ds.metadata(0)["original_width"] == 300
    # a second run of the same job finds its manifest; another job in the same folder is refused
    assert prepare_shards([ann], tmp_path / "a", settings).counts == first.counts
    with pytest.raises(ValueError, match="another prepare job"):
        prepare_shards([ann], tmp_path / "a", PrepareSettings(max_side=90))


def test_default_max_side_is_twice_the_largest_config_image_size(tmp_path):
    (tmp_path / "a.yaml").write_text("image_size: 224\n")
    (tmp_path / "b.yaml").write_text("image_size: 384\nbatch_size: 4\n")
    (tmp_path / "c.yaml").write_text(": broken")
    assert default_max_side(tmp_path) == 768
    assert default_max_side(ROOT / "configs") == 2 * 224


def test_prepare_survives_kill_9_and_resumes_to_identical_shards(tmp_path):
    ann = make_json_set(tmp_path / "src", 60, bad=False, size=(200, 160))
    args = ["shards", str(ann), "--max-side", "180", "--shard-samples", "3"]
    assert prepare_main(args + ["--out", str(tmp_path / "reference")]) == 0
    reference = Manifest.load(tmp_path / "reference")
    killed_mid_run = False
    for _ in range(5):
        out = tmp_path / "resumed"
        proc = subprocess.Popen([sys.executable, "-m", "data.prepare", *args, "--out", str(out)], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and not list(out.glob("shard-000002.tar")):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if not (out / "manifest.json").exists() and (out / ".prepare_progress.json").exists():
            killed_mid_run = True
            break
        import shutil
        shutil.rmtree(out)
    assert killed_mid_run, "could not interrupt the prepare run"
    assert prepare_main(args + ["--out", str(out)]) == 0
    resumed = Manifest.load(out)
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in reference.shards]
    assert resumed.counts["samples"] == 60 and not list(out.glob(".*.tmp"))


def test_index_existing_laion_tars_and_read_them_as_they_are(tmp_path):
    tars = [make_laion_tar(tmp_path / "laion" / "00000.tar", 0, 5), make_laion_tar(tmp_path / "laion" / "00001.tar", 5, 4)]
    manifest = index_tars(tars, tmp_path / "laion_manifest.json", source="laion", license="LAION terms",
                          image_check="decode")
    assert [s.samples for s in manifest.shards] == [5, 4]
    assert manifest.counts["skipped"] == {"empty_caption": 2, "image_not_an_image": 2, "no_caption_field": 2,
                                          "no_image_field": 2}
    ds = ShardDataset([Manifest.load(tmp_path / "laion_manifest.json")], build_image_transform("test", 16))
    assert len(ds) == 9
    captions = [ds[(i, 0)]["caption"] for i in range(9)]
    assert captions == [f"histology slide {i}" for i in range(9)]  # txt when present, else json caption
    meta = ds.metadata(2)
    assert (meta["source"], meta["license"], meta["source_id"], meta["url"]) == ("laion", "LAION terms", "000000002",
                                                                                   "https://x/2.jpg")
    # a tar that changed since it was indexed is refused
    with open(tars[0], "ab") as handle:
        handle.write(b"\0" * 1024)
    with pytest.raises(DatasetError, match="changed or truncated"):
        Manifest.load(tmp_path / "laion_manifest.json")
    assert prepare_main(["verify", str(tmp_path / "laion_manifest.json")]) == 1


# -- the order -------------------------------------------------------------------------


def _order(**kw):
    sources = kw.pop("sources", [SourceSpec("a", (7, 5, 9, 3)), SourceSpec("b", (6, 6, 2))])
    return StreamOrder(sources, seed=kw.pop("seed", 3), lanes=kw.pop("lanes", 4), shuffle_buffer=kw.pop("buffer", 5), **kw)


def test_every_sample_exactly_once_per_epoch_and_epochs_differ():
    order = _order()
    epochs = [order.order(e) for e in range(3)]
    for ids in epochs:
        assert sorted(ids.tolist()) == list(range(38))
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(order.order(1), _order().order(1))  # a pure function of its inputs


def test_weights_set_each_sources_share_and_cycle_through_its_samples():
    order = _order(sources=[SourceSpec("a", (10, 10), 3.0), SourceSpec("b", (5,), 1.0)], epoch_samples=40)
    assert order.quotas == [30, 10]
    first_two = np.concatenate([order.order(0), order.order(1)])
    b = first_two[first_two >= 20]
    assert len(b) == 20 and sorted(b.tolist()) == sorted(list(range(20, 25)) * 4)  # b upsampled 4x, evenly
    a = first_two[first_two < 20]
    assert sorted(a.tolist()) == sorted(list(range(20)) * 3)
    # spread evenly (seen without lanes and shuffling): every 4 samples hold 3 of a and 1 of b
    ids = _order(sources=[SourceSpec("a", (10, 10), 3.0), SourceSpec("b", (5,), 1.0)], epoch_samples=40,
                 lanes=1, shuffle=False).order(0)
    assert all(np.sum(ids[i : i + 4] >= 20) == 1 for i in range(0, 40, 4))
    with pytest.raises(ValueError, match="every source or to none"):
        _order(sources=[SourceSpec("a", (3,), 1.0), SourceSpec("b", (3,))])


def test_lanes_keep_each_rank_on_its_own_shards():
    sizes = tuple([10] * 16)
    order = StreamOrder([SourceSpec("a", sizes)], seed=0, lanes=8, shuffle_buffer=10)
    ids = order.order(0)
    shard_of = ids // 10
    for world in (2, 4, 8):
        for offset in (0, 3, 17):  # after a resume, from any global offset
            shards_per_rank = [set(shard_of[offset + r :: world].tolist()) for r in range(world)]
            for r in range(world):
                others = set().union(*(shards_per_rank[o] for o in range(world) if o != r))
                assert not shards_per_rank[r] & others, (world, offset, r)


def _consume(order, world, batch, start_state=None, steps=None):
    """Indices each rank yields (per step), stopping after ``steps``; returns per-rank lists and the states."""
    samplers = [ShardSampler(order, num_replicas=world, rank=r, drop_last=True) for r in range(world)]
    for s in samplers:
        if start_state is not None:
            s.load_state_dict(start_state)
        s.set_epoch(start_state["epoch"] if start_state else 0)
    streams = [list(iter(s)) for s in samplers]
    n_steps = len(streams[0]) // batch if steps is None else steps
    taken = [st[: n_steps * batch] for st in streams]
    return taken, samplers[0].state_dict(consumed=n_steps * batch)


def test_resume_mid_epoch_equals_uninterrupted_on_same_and_other_world_size():
    order = _order(sources=[SourceSpec("a", (13, 11, 17, 9, 12))], lanes=8, buffer=6)
    full, _ = _consume(order, world=2, batch=3)
    part, state = _consume(order, world=2, batch=3, steps=4)
    rest, _ = _consume(order, world=2, batch=3, start_state=state)
    assert [p + r for p, r in zip(part, rest)] == full  # bit-for-bit the same stream on every rank
    # resumed on 3 ranks: no sample seen twice, none lost beyond the drop_last tail
    rest3, _ = _consume(order, world=3, batch=2, start_state=state)
    before = [i for p in part for i in p]
    after = [i for r in rest3 for i in r]
    assert not set(before) & set(after) and len(set(after)) == len(after)
    assert len(before) + len(after) >= 62 - 3 * 2
    changed = _order(sources=[SourceSpec("a", (13, 11, 17, 9, 12))], lanes=4, buffer=6)
    with pytest.raises(ValueError, match="shard stream"):
        ShardSampler(changed, num_replicas=2, rank=0).load_state_dict(state)


def test_training_data_object_batches_and_resumes_with_workers(tmp_path):
    ann = make_json_set(tmp_path / "src", 22, bad=False)
    manifest = prepare_shards([ann], tmp_path / "shards", PrepareSettings(max_side=64, shard_samples=5))
    transform = build_image_transform("pretrain", 16, randaugment=True)

    def data(workers):
        ds = ShardDataset([manifest], transform, seed=1)
        return ShardTrainingData(ds, StreamOrder(ds.source_specs(), seed=1, lanes=3, shuffle_buffer=4),
                                 batch_size=4, num_workers=workers)

    full = data(0)
    full.set_epoch(1)
    batches = list(full)
    assert full.samples_per_epoch == 22 and len(batches) == len(full) == 5
    assert {k for k in batches[0]} == {"image", "caption", "index", "skipped"}
    interrupted = data(0)
    interrupted.set_epoch(1)
    it = iter(interrupted)
    head = [next(it) for _ in range(2)]
    state = interrupted.state_dict(consumed=8)
    assert json.loads(json.dumps(state)) == state  # plain types only
    resumed = data(2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    tail = list(resumed)
    for a, b in zip(batches, head + tail):
        assert torch.equal(a["index"], b["index"]) and a["caption"] == b["caption"]
        assert torch.equal(a["image"], b["image"])  # same augmentation whatever the worker count
    assert len(head + tail) == len(batches)
