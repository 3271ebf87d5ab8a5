"""Checkpoint IO: BLIP's exact key list loads, interpolation, reports, URLs, BERT init, bad input."""

import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from models.checkpoint import load_bert_weights, read_checkpoint
from models.med import MedConfig, MedLMHeadModel, MedModel
from tests.conftest import tiny_model_config

DATA = Path(__file__).parent / "data"
# Base-size models are built on the meta device (no memory); loading into them is a documented no-op copy.
pytestmark = pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")


def reference_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A state dict with exactly BLIP's keys, shapes and dtypes; each tensor is a stride-0 view of one
    element, so a base-size checkpoint file stays a few hundred KB."""
    state = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        state[key] = torch.zeros(1, dtype=getattr(torch, dtype)).reshape([1] * len(dims) or []).expand(dims)
    return state


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    paths = {}
    for kind in ("pretrain", "retrieval"):
        paths[kind] = folder / f"blip_{kind}.pth"
        torch.save({"model": reference_state_dict(f"blip_{kind}_state_dict.txt"), "epoch": 19}, paths[kind])
    return paths


def base_model_on_meta(kind, tokenizer):
    """BLIP-base shapes without allocating memory (meta tensors)."""
    with torch.device("meta"):
        return build_model(kind, dict(med_config=dict(vocab_size=30524)), tokenizer=tokenizer)


@pytest.mark.parametrize("kind", ["pretrain", "retrieval"])
def test_reference_keys_load_with_nothing_missing(kind, tokenizer, reference_files):
    model = base_model_on_meta(kind, tokenizer)
    report = load_checkpoint(model, reference_files[kind], strict=True)
    assert report.format == "blip"
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert not report.momentum_synced  # BLIP checkpoints carry the momentum copies


def test_model_keys_equal_reference_list(tokenizer):
    for kind in ("pretrain", "retrieval"):
        ours = {k: (list(v.shape), str(v.dtype)) for k, v in base_model_on_meta(kind, tokenizer).state_dict().items()}
        ref = {k: (list(v.shape), str(v.dtype)) for k, v in reference_state_dict(f"blip_{kind}_state_dict.txt").items()}
        assert ours == ref


def test_pretrain_checkpoint_into_retrieval_reports_only_documented_keys(tokenizer, reference_files):
    model = base_model_on_meta("retrieval", tokenizer)
    report = load_checkpoint(model, reference_files["pretrain"])
    assert report.missing == ["idx_queue", "ptr_queue"]
    assert {k.split(".")[0] for k in report.unexpected} == {"queue_ptr", "text_decoder"}
    assert report.clean


def test_pos_embed_interpolated_like_timm_without_antialias(tokenizer, tmp_path):
    small = build_model("retrieval", tiny_model_config(image_size=32), tokenizer=tokenizer)
    save_checkpoint(small, tmp_path / "small.pth", epoch=0)
    large = build_model("retrieval", tiny_model_config(image_size=48), tokenizer=tokenizer)
    report = load_checkpoint(large, tmp_path / "small.pth")
    assert report.interpolated == ["visual_encoder.pos_embed", "visual_encoder_m.pos_embed"]
    expected = resample_abs_pos_embed(small.visual_encoder.pos_embed.detach(), [6, 6], num_prefix_tokens=1,
                                      antialias=False)
    assert torch.allclose(large.visual_encoder.pos_embed, expected, atol=1e-6)
    assert report.clean


def test_shape_mismatch_dropped_and_reported(tokenizer, tmp_path):
    model = build_model("pretrain", tiny_model_config(), tokenizer=tokenizer)
    state = model.state_dict()
    state["itm_head.weight"] = torch.zeros(3, 32)
    torch.save({"model": state}, tmp_path / "bad.pth")
    before = model.itm_head.weight.detach().clone()
    report = load_checkpoint(model, tmp_path / "bad.pth")
    assert report.shape_mismatch == [("itm_head.weight", (3, 32), (2, 32))]
    assert torch.equal(model.itm_head.weight, before)
    assert "itm_head.weight (3, 32) -> model (2, 32)" in report.summary()
    with pytest.raises(CheckpointError, match="itm_head.weight"):
        load_checkpoint(model, tmp_path / "bad.pth", strict=True)


def test_save_is_blip_format_and_roundtrips(tokenizer, tmp_path):
    model = build_model("pretrain", tiny_model_config(), tokenizer=tokenizer)
    save_checkpoint(model, tmp_path / "ours.pth", epoch=3, config={"a": 1})
    raw = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert set(raw) == {"model", "epoch", "config"} and raw["epoch"] == 3
    other = build_model("pretrain", tiny_model_config(), tokenizer=tokenizer)
    report = load_checkpoint(other, tmp_path / "ours.pth", strict=True)
    assert report.missing == [] and report.unexpected == []
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is a text file, not a checkpoint\n", "not a torch checkpoint"),
        (b"PK\x03\x04 truncated zip", "not a torch checkpoint"),
    ],
)
def test_not_a_checkpoint(tokenizer, tmp_path, content, message):
    path = tmp_path / "model_base.pth"
    path.write_bytes(content)
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(model, path)
    assert str(path) in str(err.value)


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")
    torch.save({"model": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="not tensors: a"):
        read_checkpoint(tmp_path / "odd.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_checkpoint(tmp_path / "list.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_checkpoint(tmp_path / "empty_dir")


def test_load_from_url(tokenizer, tmp_path, monkeypatch):
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    served = tmp_path / "served"
    served.mkdir()
    save_checkpoint(model, served / "model_small.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model_small.pth"
        other = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
        report = load_checkpoint(other, url, strict=True)
        assert report.format == "blip"
        assert (tmp_path / "hub" / "checkpoints" / "model_small.pth").exists()
        with pytest.raises(CheckpointError, match="cannot download"):
            load_checkpoint(other, url.replace("model_small", "absent"))
    finally:
        server.shutdown()
    assert torch.equal(model.itm_head.weight, other.itm_head.weight)


def _tiny_bert(tmp_path, vocab_size, hidden=32, layers=2):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(5)
    bert = BertForMaskedLM(config).eval()
    with torch.no_grad():
        bert.bert.embeddings.token_type_embeddings.weight.zero_()  # BLIP has no token types
    bert.save_pretrained(tmp_path / "bert")
    return bert


def test_bert_init_matches_transformers_bert(tmp_path):
    """Text-only mode = BERT: loaded weights reproduce transformers' BertModel (an independent implementation)."""
    bert = _tiny_bert(tmp_path, vocab_size=90)
    med = MedConfig(vocab_size=92, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=40, encoder_width=24, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    encoder = MedModel(med).eval()
    report = load_bert_weights(encoder, tmp_path / "bert")
    assert report.shape_mismatch == [] and report.unexpected == []
    fresh = [k for k in report.missing if not k.endswith("position_ids")]  # transformers 5 stores no position_ids
    assert fresh and all(".crossattention." in k for k in fresh)  # cross-attention is freshly initialised
    ids = torch.randint(1, 90, (2, 9))
    atts = torch.ones_like(ids)
    atts[1, 6:] = 0
    with torch.no_grad():
        expected = bert.bert(input_ids=ids, attention_mask=atts).last_hidden_state
        ours = encoder(ids, atts).last_hidden_state
    assert (expected - ours)[atts.bool()].abs().max() <= 1e-5
    # vocabulary grown by [DEC]/[ENC]: first rows copied, new rows keep their init
    assert torch.equal(encoder.embeddings.word_embeddings.weight[:90], bert.bert.embeddings.word_embeddings.weight)

    decoder = MedLMHeadModel(med).eval()
    load_bert_weights(decoder, tmp_path / "bert")
    assert torch.equal(decoder.cls.predictions.transform.dense.weight, bert.cls.predictions.transform.dense.weight)
    assert decoder.cls.predictions.decoder.weight is decoder.bert.embeddings.word_embeddings.weight


def test_bert_with_other_width_refused(tmp_path):
    _tiny_bert(tmp_path, vocab_size=90, hidden=48)
    encoder = MedModel(MedConfig(vocab_size=92, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=40))
    with pytest.raises(CheckpointError, match="hidden_size=48"):
        load_bert_weights(encoder, tmp_path / "bert")


def test_build_model_runs_configured_inits(tokenizer, tmp_path):
    _tiny_bert(tmp_path, vocab_size=len(tokenizer) - 2)
    model = build_model("pretrain", tiny_model_config(text_encoder=str(tmp_path / "bert")), tokenizer=tokenizer)
    assert len(model.init_reports) == 2  # encoder and decoder
    for a, b in zip(model.text_encoder.parameters(), model.text_encoder_m.parameters()):
        assert torch.equal(a, b)
