"""train_retrieval.py options: --evaluate --itc_only, val_itc_only, and train lists without image_id."""

import json
from pathlib import Path

import pytest
import torch

import models.retrieval_eval
import train_retrieval
from models import build_model, save_checkpoint
from models.retrieval_eval import recall_at_k
from tasks.retrieval import RetrievalTask, run_retrieval
from tests.conftest import TINY_TEXT, TINY_VIT
from tests.pretrain_helpers import write_tokenizer
from tests.test_retrieval_eval import BLIP_KEYS, write_eval_set
from tests.test_retrieval_task import tiny_retrieval_config, write_retrieval_data

SHAPES = {"vit": TINY_VIT, "med_config": TINY_TEXT, "image_size": 32, "embed_dim": 16, "queue_size": 20}


class EvalSpy:
    """Records the features every evaluation computes and counts ITM re-rankings."""

    def __init__(self, monkeypatch):
        self.features, self.reranks = [], 0
        real_features, real_rerank = models.retrieval_eval.compute_features, models.retrieval_eval.itm_rerank

        def compute_features(*args, **kwargs):
            self.features.append(real_features(*args, **kwargs))
            return self.features[-1]

        def itm_rerank(*args, **kwargs):
            self.reranks += 1
            return real_rerank(*args, **kwargs)

        monkeypatch.setattr(models.retrieval_eval, "compute_features", compute_features)
        monkeypatch.setattr(models.retrieval_eval, "itm_rerank", itm_rerank)


def _checkpoint_with_a_strong_itm_head(tmp_path, tokenizer_dir):
    torch.manual_seed(1)
    model = build_model("retrieval", dict(SHAPES, tokenizer=tokenizer_dir))
    with torch.no_grad():  # so that ITM re-ranking changes the order ITC gives
        model.itm_head.weight.normal_(0, 0.5)
    path = tmp_path / "retrieval_tiny.pth"
    save_checkpoint(model, path, optimizer={}, config={"image_size": 32}, epoch=0)
    return path


def test_itc_only_evaluation_is_the_itc_ranking_of_the_full_evaluations_features(tmp_path, monkeypatch, capsys):
    tokenizer_dir = str(write_tokenizer(tmp_path))
    test = write_eval_set(tmp_path / "karpathy", n_images=8, captions_per_image=2, seed=3)
    base = ["--config", "/dev/null", "--evaluate"] + [f"{k}={json.dumps(v)}" for k, v in dict(
        SHAPES, test_file=str(test), pretrained=str(_checkpoint_with_a_strong_itm_head(tmp_path, tokenizer_dir)),
        tokenizer=tokenizer_dir, text_encoder=None, k_test=4, device="cpu").items()]
    spy = EvalSpy(monkeypatch)
    assert train_retrieval.main(base + [f"output_dir={tmp_path / 'full'}"]) == 0
    assert spy.reranks == 1
    (features,) = spy.features
    assert train_retrieval.main(base + ["--itc_only", f"output_dir={tmp_path / 'itc'}"]) == 0
    assert spy.reranks == 1  # no ITM re-ranking under --itc_only
    printed = capsys.readouterr().out
    assert printed.count("test: {'txt_r1': ") == 2

    dataset_img2txt = [[2 * i, 2 * i + 1] for i in range(8)]
    itc = recall_at_k(features.sims(), dataset_img2txt, [t // 2 for t in range(16)])  # the full run's features
    full, itc_only = (json.loads((tmp_path / name / "evaluate.json").read_text())["test"] for name in ("full", "itc"))
    assert {k: itc_only[f"test_{k}"] for k in BLIP_KEYS} == {k: itc[k] for k in BLIP_KEYS}
    assert {k: full[f"test_{k}"] for k in BLIP_KEYS} != {k: itc[k] for k in BLIP_KEYS}  # ITM did change the ranks
    assert {k: full[f"test_itc_{k}"] for k in BLIP_KEYS} == {k: itc[k] for k in BLIP_KEYS}  # reported beside it
    assert not any(k.startswith("test_itc_") for k in itc_only)  # --itc_only: the ITC ranking is the result


def test_val_itc_only_validates_by_itc_and_tests_with_itm(tmp_path, monkeypatch):
    spy = EvalSpy(monkeypatch)
    config = tiny_retrieval_config(tmp_path, val_itc_only=True, k_test=3)
    run_retrieval(config)
    assert spy.reranks == 1 and len(spy.features) == 3  # val after epochs 0 and 1 by ITC; test re-ranked
    lines = [json.loads(l) for l in (Path(config["output_dir"]) / "log.txt").read_text().splitlines()]
    epochs = [l for l in lines if "epoch" in l and "step" not in l and "event" not in l]
    val = json.loads(Path(config["val_file"]).read_text())
    img2txt = [[2 * i, 2 * i + 1] for i in range(len(val))]  # write_retrieval_data: 2 captions per image
    for epoch, features in zip(epochs, spy.features[:2]):
        itc = recall_at_k(features.sims(), img2txt, [t // 2 for t in range(2 * len(val))])
        assert {k: epoch[f"val_{k}"] for k in BLIP_KEYS} == pytest.approx({k: itc[k] for k in BLIP_KEYS})


def test_train_list_without_image_id_groups_pairs_by_image_path(tmp_path, monkeypatch):
    train, _, _ = write_retrieval_data(tmp_path / "no_ids", n_train=6)
    pairs = json.loads(train.read_text())
    for pair in pairs:
        del pair["image_id"]
    pairs = pairs[::2] + pairs[1::2]  # the two captions of an image are far apart in the list
    train.write_text(json.dumps(pairs))
    seen = []
    real_forward = RetrievalTask.forward

    def forward(self, model, batch, ctx):
        seen.append((batch["index"].tolist(), batch["idx"].tolist()))
        return real_forward(self, model, batch, ctx)

    monkeypatch.setattr(RetrievalTask, "forward", forward)
    config = tiny_retrieval_config(tmp_path, train_file=str(train), val_file=None, test_file=None, max_epoch=1,
                                   batch_size=6)
    run_retrieval(config)
    assert sorted(i for indices, _ in seen for i in indices) == list(range(12))
    image_of = {}
    for indices, idx in seen:
        for i, image_id in zip(indices, idx):
            image_of.setdefault(pairs[i]["image"], set()).add(image_id)
    # one id per image path, a different one for every image: captions of an image are each other's positives
    assert all(len(ids) == 1 for ids in image_of.values()) and len(image_of) == 6
    assert sorted(next(iter(ids)) for ids in image_of.values()) == list(range(6))  # BLIP: 0.. in first appearance


def test_blip_flickr_names_and_a_missing_annotation_file_is_named(tmp_path, capsys):
    from data.retrieval_dataset import retrieval_files

    config = {"ann_root": "ann", "dataset": "flickr"}
    assert retrieval_files(config) == {s: str(Path("ann") / f"flickr30k_{s}.json") for s in ("train", "val", "test")}
    assert retrieval_files({**config, "test_file": "mine.json"})["test"] == "mine.json"  # our keys win
    path = tmp_path / "retrieval_flickr.yaml"  # BLIP's keys; no annotation files downloaded yet
    path.write_text(f"image_root: '{tmp_path}/flickr30k'\nann_root: '{tmp_path}/annotation'\ndataset: 'flickr'\n"
                    f"tokenizer: '{write_tokenizer(tmp_path)}'\ntext_encoder: null\ndevice: cpu\n"
                    f"output_dir: '{tmp_path}/out'\n")
    assert train_retrieval.main(["--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path}/annotation/flickr30k_" in err and "not found" in err and "Traceback" not in err
