"""Retrieval evaluation: identical to a straightforward per-query BLIP procedure, bad input, ranks, K/V reuse."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.retrieval_dataset import RetrievalDataError, RetrievalEvalDataset
from data.transforms import build_image_transform
from models import build_model
from models.med import set_attention_impl
from models.retrieval_eval import chance_recall, compute_features, evaluate_retrieval, recall_at_k
from tests.blip_reference import blip_reference
from tests.conftest import TEST_CAPTIONS, tiny_model_config

BLIP_KEYS = ["txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean"]


def write_eval_set(folder, n_images=12, captions_per_image=3, seed=0, flat=False):
    """Small distinct images with captions in BLIP's Karpathy val/test format (or flat pairs)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    words = sorted({w for c in TEST_CAPTIONS for w in c.split()})
    for i in range(n_images):
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        pixels[: 4 + 3 * i] //= 2
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        caps = [" ".join(rng.choice(words, size=6)) + f" case {i}" for _ in range(captions_per_image)]
        if flat:
            records += [{"image": f"img{i:02d}.png", "caption": c} for c in caps]
        else:
            records.append({"image": f"img{i:02d}.png", "caption": caps})
    path = folder / "test.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    m = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer).eval()
    with torch.no_grad():  # a non-trivial ITM head so re-ranking changes the order
        m.itm_head.weight.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("k_test, itm_batch", [(10, 7), (16, 64), (256, 3)])
def test_fast_evaluation_equals_per_query_blip_procedure(model, tmp_path, k_test, itm_batch):
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path), build_image_transform("test", 32))
    reference, ref_i2t, ref_t2i = blip_reference(model, dataset, k_test)
    result = evaluate_retrieval(model, dataset, k_test=k_test, itm_batch_size=itm_batch, batch_size=5)
    assert {k: result.metrics[k] for k in BLIP_KEYS} == reference  # identical numbers
    assert np.allclose(result.score_i2t.numpy(), ref_i2t, atol=1e-5)
    assert np.allclose(result.score_t2i.numpy(), ref_t2i, atol=1e-5)
    if k_test < len(dataset):  # then the two matrices are not transposes of each other
        assert not np.allclose(result.score_i2t.numpy(), result.score_t2i.numpy().T)


def test_k_test_below_k_counts_the_candidates_above_as_documented(model, tmp_path):
    # A ground truth outside the top k_test keeps -100, tied with every other non-candidate: its rank is
    # k_test (the strictly greater scores), where BLIP's np.argsort put it anywhere among the ties.
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path), build_image_transform("test", 32))
    result = evaluate_retrieval(model, dataset, k_test=3)
    assert result.metrics["img_r5"] == 100.0 and result.metrics["txt_r5"] == 100.0
    assert (result.score_t2i > -100).sum(dim=1).eq(3).all()


def test_itc_only_ranks_by_cosine(model, tmp_path):
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path), build_image_transform("test", 32))
    result = evaluate_retrieval(model, dataset, itc_only=True)
    features = compute_features(model, dataset)
    assert torch.allclose(result.score_i2t, features.sims())
    assert result.metrics == recall_at_k(features.sims(), dataset.img2txt, dataset.txt2img)


def test_reranked_evaluation_also_reports_the_itc_ranking_it_started_from(model, tmp_path):
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path), build_image_transform("test", 32))
    reranked = evaluate_retrieval(model, dataset, k_test=4)
    itc = evaluate_retrieval(model, dataset, itc_only=True)
    assert reranked.itc_metrics == itc.metrics and itc.itc_metrics is None
    assert reranked.metrics != reranked.itc_metrics  # the random ITM head moved the ranking


def test_ranks_count_strictly_greater_scores_and_median_rank():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1],   # image 0: captions 1, 2 tied at rank 1 (0.9 above)
                           [0.2, 0.7, 0.7, 0.7]])  # image 1: caption 3 ties with 1, 2: nothing strictly above
    metrics = recall_at_k(scores, [[1, 2], [3]], [0, 0, 0, 1], scores_t2i=scores.t(), ks=(1, 2))
    assert metrics["txt_r1"] == 50.0 and metrics["txt_r2"] == 100.0
    assert metrics["txt_mean_rank"] == pytest.approx(1.5) and metrics["txt_median_rank"] == 1.0
    # texts 0 ([0.9, 0.2] -> image 0) and 3 ([0.1, 0.7] -> image 1) rank their image first; texts 1 and 2
    # ([0.5, 0.7], image 0) second
    assert metrics["img_r1"] == 50.0 and metrics["img_r2"] == 100.0


def test_flat_pairs_are_grouped_by_image_and_chance_is_exact(tmp_path):
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path, n_images=4, captions_per_image=2, flat=True),
                                   build_image_transform("test", 32))
    assert len(dataset) == 4 and dataset.img2txt == [[0, 1], [2, 3], [4, 5], [6, 7]]
    chance = chance_recall(dataset.img2txt, len(dataset.texts), ks=(1,))
    assert chance["txt_r1"] == pytest.approx(100 * 2 / 8) and chance["img_r1"] == pytest.approx(25.0)


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
def test_image_key_values_reuse_equals_plain_cross_attention(model, attn_impl):
    set_attention_impl(model, attn_impl)  # sdpa: rows of one image stacked into one query; eager: a copy per row
    images = torch.randn(3, 3, 32, 32)
    ids, atts = model.tokenize(TEST_CAPTIONS[:5])
    rows = torch.tensor([0, 0, 1, 2, 2])
    with torch.no_grad():
        embeds = model.encode_image(images)
        plain = model.text_encoder(ids, atts, encoder_hidden_states=embeds[rows]).last_hidden_state
        kv = model.text_encoder.image_key_values(embeds, [2, 1, 2])
        reused = model.text_encoder(ids, atts, image_kv=kv).last_hidden_state
        cls = model.text_encoder(ids, atts, image_kv=kv, cls_only=True).last_hidden_state
    assert torch.allclose(plain, reused, atol=1e-6)
    assert cls.shape == (5, 1, plain.shape[-1]) and torch.allclose(plain[:, :1], cls, atol=1e-6)
    with pytest.raises(ValueError, match="counts cover 4 rows, the batch has 5"):
        model.text_encoder(ids, atts, image_kv=model.text_encoder.image_key_values(embeds, [2, 1, 1]))
    with pytest.raises(ValueError, match="positive row count for each of the 3 images"):
        model.text_encoder.image_key_values(embeds, [2, 3])


@pytest.mark.parametrize("problem, message", [
    ("missing", r"test\.json\[3\]: .*img03\.png: image file not found \(check image_root\)"),
    ("not_image", r"test\.json\[3\]: .*img03\.png: not a recognised image format"),
    ("empty_caption", r"test\.json\[3\]: empty caption ' \.; '"),
    ("no_image", r"test\.json\[3\]: record needs an 'image' path"),
])
def test_bad_evaluation_records_are_named_before_evaluation(tmp_path, problem, message):
    path = write_eval_set(tmp_path, n_images=5)
    records = json.loads(path.read_text())
    if problem == "missing":
        (tmp_path / "img03.png").unlink()
    elif problem == "not_image":
        (tmp_path / "img03.png").write_text("<html>not an image</html>")
    elif problem == "empty_caption":
        records[3]["caption"][1] = " .; "
    else:
        del records[3]["image"]
    path.write_text(json.dumps(records))
    with pytest.raises(RetrievalDataError, match=message):
        RetrievalEvalDataset(path, build_image_transform("test", 32))
