"""train_retrieval.py end to end on a tiny model: fine-tuning on the engine, --evaluate, BLIP's configs and files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models.blip_retrieval
import train_retrieval
from engine.config import load_config
from models import build_model, save_checkpoint
from tasks.pretrain import run_pretraining
from tasks.retrieval import RETRIEVAL_SCHEMA, alpha_at, run_retrieval
from tests.conftest import TINY_TEXT, TINY_VIT
from tests.pretrain_helpers import tiny_pretrain_config, write_tokenizer
from tests.test_retrieval_eval import BLIP_KEYS, write_eval_set

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

# BLIP's configs/retrieval_coco.yaml, as published (paths are the user's).
BLIP_RETRIEVAL_COCO = """\
image_root: '{image_root}'
ann_root: '{ann_root}'
dataset: 'coco'

# set pretrained as a file path or an url
pretrained: '{pretrained}'

# size of vit model; base or large

vit: 'base'
batch_size_train: 32
batch_size_test: 64
vit_grad_ckpt: True
vit_ckpt_layer: 4
init_lr: 1e-5

image_size: 384
queue_size: 57600
alpha: 0.4
k_test: 256
negative_all_rank: True

# optimizer
weight_decay: 0.05
min_lr: 0
max_epoch: 6
"""


def write_retrieval_data(folder: Path, n_train=16, n_eval=6):
    """train (Karpathy train format, 2 captions per image), val and test splits, images beside them."""
    test = write_eval_set(folder, n_images=n_eval, captions_per_image=2, seed=1)
    val = folder / "val.json"
    shutil.copy(test, val)
    pairs = []
    train_src = write_eval_set(folder / "train_images", n_images=n_train, captions_per_image=2, seed=2)
    for i, record in enumerate(json.loads(train_src.read_text())):
        for caption in record["caption"]:
            pairs.append({"image": f"train_images/{record['image']}", "caption": caption, "image_id": 1000 + i})
    train = folder / "train.json"
    train.write_text(json.dumps(pairs))
    return train, val, test


def tiny_retrieval_config(tmp_path, **overrides):
    train, val, test = write_retrieval_data(tmp_path / "data")
    values = {
        "train_file": str(train), "val_file": str(val), "test_file": str(test),
        "tokenizer": str(write_tokenizer(tmp_path)), "text_encoder": None, "vit": dict(TINY_VIT),
        "med_config": dict(TINY_TEXT), "image_size": 32, "embed_dim": 16, "queue_size": 24, "batch_size": 4,
        "batch_size_test": 4, "k_test": 4, "itm_batch_size": 8, "max_epoch": 2, "init_lr": 1e-4, "num_workers": 0,
        "log_every": 1, "output_dir": str(tmp_path / "out"), "device": "cpu", "seed": 5,
    }
    values.update(overrides)
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()], RETRIEVAL_SCHEMA)


def test_alpha_ramps_over_epoch_zero_only():
    config = {"alpha": 0.4}
    assert [alpha_at(config, 0, s, 10) for s in (0, 5, 10)] == pytest.approx([0.0, 0.2, 0.4])
    assert alpha_at(config, 1, 0, 10) == 0.4 and alpha_at(config, 3, 7, 10) == 0.4


def test_fine_tuning_validates_keeps_best_and_tests_it(tmp_path):
    config = tiny_retrieval_config(tmp_path)
    result = run_retrieval(config)
    out = Path(config["output_dir"])
    assert result.global_step == 16 and (out / "checkpoint_best.pth").exists()  # 32 pairs / 4, 2 epochs
    lines = [json.loads(l) for l in (out / "log.txt").read_text().splitlines()]
    epochs = [l for l in lines if "epoch" in l and "step" not in l and "event" not in l]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(set(f"val_{k}" for k in BLIP_KEYS) <= set(e) for e in epochs)
    best = max(epochs, key=lambda e: e["val_r_mean"])
    saved = torch.load(out / "checkpoint_best.pth", weights_only=True)
    assert saved["epoch"] == best["epoch"] and set(saved) >= {"model", "config", "epoch"}
    (test_line,) = [l for l in lines if l.get("event") == "test"]
    assert test_line["best_epoch"] == best["epoch"] and "test_r_mean" in test_line
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"val", "test"} and results["test"]["test_r_mean"] == test_line["test_r_mean"]
    assert (out / "results_recall.png").exists() and (out / "loss_curves.png").exists()


def test_image_id_positives_reach_the_queue(tmp_path, monkeypatch):
    seen = []
    real = models.blip_retrieval.distilled_targets

    def spy(sim, positives, alpha):
        seen.append(positives.detach().clone())
        return real(sim, positives, alpha)

    monkeypatch.setattr(models.blip_retrieval, "distilled_targets", spy)
    config = tiny_retrieval_config(tmp_path, max_epoch=1, val_file=None, test_file=None, batch_size=8)
    run_retrieval(config)
    # pairs of one image sit in one batch or the queue: some row has a positive beyond the batch columns
    assert any((p[:, 8:] > 0).any() for p in seen[1:])
    for p in seen:  # rows are distributions over the positives
        assert torch.allclose(p.sum(1), torch.ones(p.shape[0]))


def test_blip_retrieval_coco_config_runs_unchanged(tmp_path):
    ann_root, image_root = tmp_path / "annotation", tmp_path / "coco" / "images"
    train, val, test = write_retrieval_data(image_root)
    ann_root.mkdir()
    for split, path in (("train", train), ("val", val), ("test", test)):
        shutil.copy(path, ann_root / f"coco_karpathy_{split}.json")
    config_path = tmp_path / "retrieval_coco.yaml"
    config_path.write_text(BLIP_RETRIEVAL_COCO.format(image_root=image_root, ann_root=ann_root,
                                                     pretrained="model_base_retrieval_coco.pth"))
    config = load_config(config_path, [], RETRIEVAL_SCHEMA)
    assert (config["batch_size"], config["k_test"], config["negative_all_rank"], config["init_lr"]) == (
        32, 256, True, 1e-5)
    assert (config["lr_schedule"], config["warmup_steps"], config["min_lr"], config["max_epoch"]) == ("cosine", 0, 0, 6)
    # and it trains: BLIP's file layout, the tiny shapes and a short schedule given as overrides
    tiny = [f"{k}={json.dumps(v)}" for k, v in {
        "pretrained": None, "vit": TINY_VIT, "med_config": TINY_TEXT, "tokenizer": str(write_tokenizer(tmp_path)),
        "text_encoder": None, "image_size": 32, "embed_dim": 16, "queue_size": 20, "batch_size_train": 4,
        "batch_size_test": 4, "k_test": 3, "max_epoch": 1, "vit_grad_ckpt": False, "device": "cpu",
        "num_workers": 0, "output_dir": str(tmp_path / "out")}.items()]
    assert train_retrieval.main(["--config", str(config_path)] + tiny) == 0
    assert (tmp_path / "out" / "results.json").exists()


def _blip_layout_checkpoint(tmp_path, tokenizer_dir):
    """A retrieval checkpoint in BLIP's file layout (what its train_retrieval.py saves)."""
    torch.manual_seed(1)
    config = {"vit": dict(TINY_VIT), "med_config": dict(TINY_TEXT), "image_size": 32, "embed_dim": 16,
              "queue_size": 20, "tokenizer": tokenizer_dir}
    model = build_model("retrieval", config)
    path = tmp_path / "model_base_retrieval_tiny.pth"
    save_checkpoint(model, path, optimizer={}, config={"image_size": 32}, epoch=5)
    return path, model


def test_evaluate_a_blip_layout_checkpoint_prints_and_writes_blips_metric_dict(tmp_path, capsys):
    tokenizer_dir = str(write_tokenizer(tmp_path))
    ckpt, _ = _blip_layout_checkpoint(tmp_path, tokenizer_dir)
    test = write_eval_set(tmp_path / "karpathy", n_images=6, captions_per_image=5)  # relative image paths
    med = tmp_path / "med_config.json"
    med.write_text(json.dumps(dict(TINY_TEXT, vocab_size=None)))
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"test_file: {test}\npretrained: {ckpt}\ntokenizer: {tokenizer_dir}\ntext_encoder: null\n"
        f"vit: {{patch_size: 8, embed_dim: 24, depth: 2, num_heads: 4}}\nmed_config: {med}\nimage_size: 32\n"
        f"embed_dim: 16\nqueue_size: 20\nk_test: 4\ndevice: cpu\noutput_dir: {tmp_path / 'out'}\n")
    assert train_retrieval.main(["--config", str(config), "--evaluate"]) == 0
    printed = capsys.readouterr().out
    assert "test: {'txt_r1': " in printed and "'r_mean': " in printed and "chance" in printed
    written = json.loads((tmp_path / "out" / "evaluate.json").read_text())
    assert set(f"test_{k}" for k in BLIP_KEYS) <= set(written["test"])
    assert (tmp_path / "out" / "evaluate_recall.png").exists()


def test_checkpoint_that_does_not_fit_the_config_names_the_keys(tmp_path, capsys):
    tokenizer_dir = str(write_tokenizer(tmp_path))
    ckpt, _ = _blip_layout_checkpoint(tmp_path, tokenizer_dir)
    test = write_eval_set(tmp_path / "karpathy", n_images=4, captions_per_image=1)
    args = ["--config", "/dev/null", "--evaluate"] + [f"{k}={json.dumps(v)}" for k, v in {
        "test_file": str(test), "pretrained": str(ckpt), "tokenizer": tokenizer_dir, "text_encoder": None,
        "vit": dict(TINY_VIT, embed_dim=32), "med_config": TINY_TEXT, "image_size": 32, "embed_dim": 16,
        "device": "cpu", "output_dir": str(tmp_path / "out")}.items()]
    assert train_retrieval.main(args) == 1
    err = capsys.readouterr().err
    assert "does not fit the model this config describes" in err and "visual_encoder.cls_token" in err


def test_zero_shot_evaluation_of_a_pretrain_checkpoint(tmp_path, capsys):
    pre = tiny_pretrain_config(tmp_path / "pre", max_epoch=1)
    run_pretraining(pre)
    test = write_eval_set(tmp_path / "karpathy", n_images=5, captions_per_image=2)
    args = ["--config", "/dev/null", "--evaluate"] + [f"{k}={json.dumps(v)}" for k, v in {
        "test_file": str(test), "pretrained": str(Path(pre["output_dir"]) / "checkpoint_last.pth"),
        "tokenizer": pre["tokenizer"], "text_encoder": None, "vit": pre["vit"], "med_config": pre["med_config"],
        "image_size": 32, "embed_dim": 16, "queue_size": 24, "device": "cpu", "output_dir": str(tmp_path / "o")}.items()]
    assert train_retrieval.main(args) == 0
    assert "test: {'txt_r1'" in capsys.readouterr().out


def test_missing_test_image_stops_before_evaluation(tmp_path, capsys):
    tokenizer_dir = str(write_tokenizer(tmp_path))
    ckpt, _ = _blip_layout_checkpoint(tmp_path, tokenizer_dir)
    test = write_eval_set(tmp_path / "karpathy", n_images=4, captions_per_image=1)
    (tmp_path / "karpathy" / "img02.png").unlink()
    args = ["--config", "/dev/null", "--evaluate"] + [f"{k}={json.dumps(v)}" for k, v in {
        "test_file": str(test), "pretrained": str(ckpt), "tokenizer": tokenizer_dir, "text_encoder": None,
        "vit": TINY_VIT, "med_config": TINY_TEXT, "image_size": 32, "embed_dim": 16, "queue_size": 20,
        "device": "cpu", "output_dir": str(tmp_path / "out")}.items()]
    assert train_retrieval.main(args) == 1
    err = capsys.readouterr().err
    assert "test.json[2]" in err and "img02.png: image file not found" in err


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_evaluation_under_two_ranks_equals_one_process(tmp_path):
    tokenizer_dir = str(write_tokenizer(tmp_path))
    ckpt, _ = _blip_layout_checkpoint(tmp_path, tokenizer_dir)
    test = write_eval_set(tmp_path / "karpathy", n_images=7, captions_per_image=3)  # odd sizes: uneven shares
    overrides = [f"{k}={json.dumps(v)}" for k, v in {
        "test_file": str(test), "pretrained": str(ckpt), "tokenizer": tokenizer_dir, "text_encoder": None,
        "vit": TINY_VIT, "med_config": TINY_TEXT, "image_size": 32, "embed_dim": 16, "queue_size": 20,
        "k_test": 5, "batch_size_test": 2, "itm_batch_size": 3, "device": "cpu"}.items()]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    outputs = {}
    for world in (1, 2):
        out = tmp_path / f"out{world}"
        launcher = [torchrun, "--standalone", f"--nproc_per_node={world}"] if world > 1 else [sys.executable]
        proc = subprocess.run(launcher + [str(ROOT / "train_retrieval.py"), "--config", "/dev/null", "--evaluate",
                                          *overrides, f"output_dir={out}"],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outputs[world] = json.loads((out / "evaluate.json").read_text())["test"]
    assert outputs[1] == outputs[2]
