"""pretrain.py's data sources through the engine: JSON lists + BLIP's laion_path parts, prepared shards.

BLIP's own configs/pretrain.yaml (its laion_path included) validates; a laion_path run trains each
epoch on all of train_file plus part ``epoch mod n``; a shard run resumes mid-epoch to the same
weights as an uninterrupted one; two torchrun ranks read every shard sample once per epoch, also
when the run resumes on another number of processes.
"""

import json
import signal
from pathlib import Path

import pytest
import torch

import engine.logger
from data.shards.writer import PrepareSettings, prepare_shards
from engine.config import load_config
from tasks.pretrain import PRETRAIN_SCHEMA, PretrainTask, run_pretraining
from tests.pretrain_helpers import tiny_pretrain_config, write_tiny_dataset
from tests.test_engine_processes import _config_file, _record_run, needs_torchrun
from utils.errors import ConfigError, TrainingError

# BLIP's configs/pretrain.yaml (salesforce/BLIP), keys and values as published
BLIP_PRETRAIN_YAML = """\
train_file: ['/export/share/junnan-li/VL_pretrain/annotation/coco_karpathy_train.json',
             '/export/share/junnan-li/VL_pretrain/annotation/vg_caption.json',
             ]
laion_path: ''

# size of vit model; base or large
vit: 'base'
vit_grad_ckpt: False
vit_ckpt_layer: 0

image_size: 224
batch_size: 75

queue_size: 57600
alpha: 0.4

# optimizer
weight_decay: 0.05
init_lr: 3e-4
min_lr: 1e-6
warmup_lr: 1e-6
lr_decay_rate: 0.9
max_epoch: 20
warmup_steps: 3000
"""


def test_blips_pretrain_config_validates_unchanged_laion_path_included(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text(BLIP_PRETRAIN_YAML)
    cfg = load_config(path, [], PRETRAIN_SCHEMA)
    assert cfg["laion_path"] == "" and len(cfg["train_file"]) == 2 and cfg["train_shards"] == []
    assert (cfg["batch_size"], cfg["queue_size"], cfg["warmup_steps"], cfg["vit_grad_ckpt"]) == (75, 57600, 3000, False)
    path.write_text(BLIP_PRETRAIN_YAML.replace("laion_path: ''", "laion_path: '/export/laion115m'"))
    assert load_config(path, [], PRETRAIN_SCHEMA)["laion_path"] == "/export/laion115m"


@pytest.mark.parametrize("overrides, message", [
    (["train_file=[]"], "no training data: set train_file"),
    (["train_shards=[m.json]"], "give train_shards or train_file, not both"),
    (["train_file=[]", "laion_path=parts", "train_shards=[m.json]"], "give train_shards or laion_path, not both"),
    (["train_file=[]", "train_shards=[a.json, b.json]", "shard_weights=[1.0]"],
     "shard_weights has 1 weight\\(s\\) for 2 train_shards"),
    (["train_file=[]", "train_shards=[a.json]", "shard_weights=[0.0]"], "shard_weights' must all be > 0"),
    (["epoch_samples=100"], "epoch_samples apply to train_shards only"),
    (["train_file=[]", "train_shards=[a.json]", "epoch_samples=0"], "epoch_samples' must be >= 1"),
])
def test_data_source_conflicts_are_config_errors_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["train_file=[a.json]"] + overrides, PRETRAIN_SCHEMA)


# -- laion_path: all of train_file plus part (epoch mod n) ------------------------------------------------

def _laion_setup(tmp_path):
    """train_file: 8 pairs; laion_path: part_00 (4 pairs), part_01 (8 pairs), written out of name order."""
    train = write_tiny_dataset(tmp_path / "base", n=8, seed=1)
    laion = tmp_path / "laion"
    laion.mkdir()
    for name, n, seed in (("part_01", 8, 3), ("part_00", 4, 2)):
        records = json.loads(write_tiny_dataset(tmp_path / name, n=n, seed=seed).read_text())
        for record in records:  # parts live elsewhere: absolute image paths, captions naming the part
            record["image"] = str(tmp_path / name / record["image"])
            record["caption"] = f"{record['caption']} from {name}"
        (laion / f"{name}.json").write_text(json.dumps(records))
    return train, laion


def test_laion_path_trains_each_epoch_on_train_file_plus_part_epoch_mod_n(tmp_path, monkeypatch, capsys):
    train, laion = _laion_setup(tmp_path)
    seen: dict[int, list[str]] = {}
    real_forward = PretrainTask.forward
    monkeypatch.setattr(PretrainTask, "forward", lambda self, model, batch, ctx: (
        seen.setdefault(ctx.epoch, []).extend(batch["caption"]), real_forward(self, model, batch, ctx))[1])
    config = tiny_pretrain_config(tmp_path, train_file=str(train), laion_path=str(laion), max_epoch=3)
    result = run_pretraining(config)
    assert result.global_step == 3 + 4 + 3  # 12, 16, 12 pairs at batch 4
    for epoch, (part, other, size) in enumerate([("part_00", "part_01", 4), ("part_01", "part_00", 8),
                                                 ("part_00", "part_01", 4)]):
        captions = seen[epoch]
        assert len(captions) == 8 + size and len(set(captions)) == len(captions), epoch  # each pair once
        assert sum(c.endswith(f"from {part}") for c in captions) == size, epoch
        assert not any(c.endswith(f"from {other}") for c in captions), epoch
    out = capsys.readouterr().out
    assert "plus laion_path" in out and "2 part(s) (part_00.json, part_01.json); epoch e uses part e mod 2" in out


def _stop_at(monkeypatch, global_step):
    real_log_step = engine.logger.TrainLogger.log_step

    def log_step_then_signal(self, *args, **kwargs):
        real_log_step(self, *args, **kwargs)
        if self.global_step == global_step:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(engine.logger.TrainLogger, "log_step", log_step_then_signal)
    return real_log_step


def _same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def test_laion_path_resume_inside_a_later_part_equals_uninterrupted(tmp_path, monkeypatch):
    train, laion = _laion_setup(tmp_path)
    straight = run_pretraining(tiny_pretrain_config(tmp_path / "a", train_file=str(train), laion_path=str(laion)))
    config = tiny_pretrain_config(tmp_path / "b", train_file=str(train), laion_path=str(laion))
    real = _stop_at(monkeypatch, 5)  # epoch 1 (part_01, 4 steps) after its 2nd step
    stopped = run_pretraining(config)
    assert stopped.stopped_by_signal and stopped.global_step == 5
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["epoch"] == 1 and saved["sampler"]["laion_part"].endswith("part_01.json")
    monkeypatch.setattr(engine.logger.TrainLogger, "log_step", real)
    resumed = run_pretraining(config, resume=True)
    assert resumed.global_step == straight.global_step == 7
    _same_weights(straight.model, resumed.model)
    # the parts changed under the stopped run: a message, not a silent jump to other samples
    saved["epoch_finished"] = False
    torch.save(saved, Path(config["output_dir"]) / "checkpoint_last.pth")
    (laion / "part_01.json").rename(laion / "part_02.json")
    (laion / "part_00.json").rename(laion / "part_01.json")
    with pytest.raises(TrainingError, match="laion part part_01.json, now it would be .*part_02.json"):
        run_pretraining(config, resume=True)


# -- prepared shards ------------------------------------------------------------------------------------

def _shards(tmp_path, n, shard_samples=5):
    train = write_tiny_dataset(tmp_path / "data", n=n)
    prepare_shards([train], tmp_path / "shards", PrepareSettings(max_side=64, shard_samples=shard_samples))
    return str(tmp_path / "shards" / "manifest.json")


def test_shards_run_resumed_mid_epoch_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    manifest = _shards(tmp_path, 16)
    shard_keys = dict(train_file=[], train_shards=[manifest], shard_lanes=3, shuffle_buffer=4)
    straight = run_pretraining(tiny_pretrain_config(tmp_path / "a", **shard_keys))
    out = capsys.readouterr().out
    assert "4 shard(s) of 1 source(s)" in out and "16 samples per epoch" in out
    config = tiny_pretrain_config(tmp_path / "b", **shard_keys)
    real = _stop_at(monkeypatch, 3)  # epoch 0, after 3 of its 4 steps
    stopped = run_pretraining(config)
    assert stopped.stopped_by_signal and stopped.global_step == 3
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert saved["sampler"]["offset"] == 12 and "order" in saved["sampler"]
    monkeypatch.setattr(engine.logger.TrainLogger, "log_step", real)
    resumed = run_pretraining(config, resume=True)
    assert resumed.global_step == straight.global_step == 8
    _same_weights(straight.model, resumed.model)


def test_shard_weights_and_epoch_samples_set_the_epoch(tmp_path, monkeypatch):
    small = write_tiny_dataset(tmp_path / "small", n=4, seed=5)
    big = write_tiny_dataset(tmp_path / "big", n=16, seed=6)
    prepare_shards([small], tmp_path / "s1", PrepareSettings(max_side=64, shard_samples=3), source="small")
    prepare_shards([big], tmp_path / "s2", PrepareSettings(max_side=64, shard_samples=3), source="big")
    sources: list[int] = []
    real_forward = PretrainTask.forward
    monkeypatch.setattr(PretrainTask, "forward", lambda self, model, batch, ctx: (
        sources.extend(batch["index"].tolist()), real_forward(self, model, batch, ctx))[1])
    config = tiny_pretrain_config(tmp_path, train_file=[], max_epoch=1, train_shards=[
        str(tmp_path / "s1" / "manifest.json"), str(tmp_path / "s2" / "manifest.json")],
        shard_weights=[1.0, 1.0], epoch_samples=12)
    result = run_pretraining(config)
    assert result.global_step == 3  # 12 samples at batch 4
    # equal weights: 6 from each source; the small one (ids 0-3) repeats, the big one (ids 4-19) does not
    assert sum(i < 4 for i in sources) == 6 and sum(i >= 4 for i in sources) == 6


@needs_torchrun
def test_two_ranks_read_every_shard_sample_once_and_resume_on_one_rank(tmp_path):
    manifest = _shards(tmp_path, 48)
    config_path, _ = _config_file(tmp_path, train_file=[], train_shards=[manifest], shard_lanes=4,
                                  shuffle_buffer=6, max_epoch=1, batch_size=4, log_every=0)
    every = _record_run(tmp_path, config_path, 2, 0)
    assert sorted(every) == list(range(48))  # one uninterrupted epoch over 2 ranks: each sample once
    out = json.loads(config_path.read_text())["output_dir"]
    config_path.write_text(config_path.read_text().replace(out, out + "_b"))
    before = _record_run(tmp_path, config_path, 2, 2)  # stopped after 2 steps of 2 x 4 samples
    after = _record_run(tmp_path, config_path, 1, 0, resume=True)
    assert len(before) == 16 and len(after) == 32
    assert sorted(before + after) == list(range(48))


def test_readme_custom_data_guide_folder_to_convert_clean_prepare_config_pretrain(tmp_path, capsys):
    """The README's "Your own data" steps, in order, with the commands' own entry points."""
    from data.clean import main as clean_main
    from data.convert.__main__ import main as convert_main
    from data.prepare import main as prepare_main
    from pretrain import main as pretrain_main

    listed = json.loads(write_tiny_dataset(tmp_path / "made", n=18).read_text())
    folder = tmp_path / "my_figures"
    folder.mkdir()
    for i, record in enumerate(listed):  # 1. a folder of images with a caption file beside each
        (folder / f"fig{i:02d}.png").write_bytes((tmp_path / "made" / record["image"]).read_bytes())
        (folder / f"fig{i:02d}.txt").write_text(record["caption"])
    evaluation = tmp_path / "retrieval_test.json"  # a test list that shares two figures with the folder
    evaluation.write_text(json.dumps([{"image": str(folder / f"fig{i:02d}.png"), "caption": ["held out"]}
                                      for i in (3, 7)]))
    # 2. convert, 3. clean against the evaluation lists, 4. prepare shards
    assert convert_main(["folder", str(folder), "--out", str(tmp_path / "data" / "mine.json")]) == 0
    assert clean_main([str(tmp_path / "data" / "mine.json"), "--eval", str(evaluation), "--min-side", "16",
                       "--out", str(tmp_path / "clean")]) == 0
    report = json.loads((tmp_path / "clean" / "clean_report.json").read_text())
    assert report["test_leakage_removed"] == 2 and report["records_kept"] == 16
    assert prepare_main(["shards", str(tmp_path / "clean" / "pretrain_clean.json"), "--out",
                         str(tmp_path / "shards"), "--max-side", "64", "--shard-samples", "5"]) == 0
    # 5. a config naming the manifest; 6. pretrain.py
    config = tiny_pretrain_config(tmp_path, train_file=[], train_shards=[str(tmp_path / "shards" / "manifest.json")],
                                  max_epoch=1)
    config_path = tmp_path / "mine.yaml"
    config_path.write_text(json.dumps(config))
    capsys.readouterr()
    assert pretrain_main(["--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "4 shard(s) of 1 source(s)" in out and "16 samples per epoch" in out
    assert "finished at epoch 0, global step 4" in out
