"""Numerical equality with transformers' BLIP port, built with the same (random) weights.

transformers' classes are an independent implementation of BLIP; our model
loads their weights through the checkpoint loader (which reverses their key
renaming), so these tests check the architecture and the loader together.
"""

import pytest
import torch
from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

from models import build_model, itc_similarity, load_checkpoint
from models.checkpoint import blip_to_transformers
from models.med import set_attention_impl
from tests.conftest import TEST_CAPTIONS, hf_blip_config, tiny_model_config

TOLERANCE = {"eager": 1e-5, "sdpa": 1e-4}


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Replace every weight with a clearly non-trivial random value (transformers' BLIP init is ~0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "layer_norm" in name.lower() or "layernorm" in name.lower():
                param.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


@pytest.fixture(scope="module")
def hf_retrieval(tokenizer, tmp_path_factory):
    model = BlipForImageTextRetrieval(hf_blip_config(len(tokenizer))).eval()
    randomize_(model, seed=1)
    folder = tmp_path_factory.mktemp("hf_itm")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def batch(tokenizer):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    captions = [TEST_CAPTIONS[0], TEST_CAPTIONS[1][:20], TEST_CAPTIONS[3]]
    enc = tokenizer(captions, padding="longest", return_tensors="pt")
    return images, enc.input_ids, enc.attention_mask


@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_itm_and_itc_match_transformers(tokenizer, hf_retrieval, batch, attn_impl):
    hf, folder = hf_retrieval
    images, ids, atts = batch
    ours = build_model("retrieval", tiny_model_config(attn_impl=attn_impl), tokenizer=tokenizer).eval()
    report = load_checkpoint(ours, folder)  # a transformers save_pretrained directory
    assert report.format == "transformers"
    assert report.clean, report.summary()
    assert report.unexpected == [] and report.shape_mismatch == []

    with torch.no_grad():
        enc_ids = ids.clone()
        enc_ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")  # BLIP's ITM protocol
        hf_itm = hf(input_ids=enc_ids, pixel_values=images, attention_mask=atts, use_itm_head=True).itm_score
        our_itm = ours.itm_logits(ours.encode_image(images), ids, atts)
        hf_itc = hf(input_ids=ids, pixel_values=images, attention_mask=atts, use_itm_head=False).itm_score
        our_itc = itc_similarity(ours, images, text_ids=ids, text_atts=atts)
    tol = TOLERANCE[attn_impl]
    assert hf_itm.abs().max() > 0.1  # non-trivial outputs
    assert (hf_itm - our_itm).abs().max() <= tol
    # transformers returns the full image x text similarity matrix without temperature, as ours does
    assert hf_itc.shape == (3, 3) and our_itc.shape == (3, 3)
    assert (hf_itc - our_itc).abs().max() <= tol


@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_lm_logits_and_loss_match_transformers(tokenizer, batch, tmp_path, attn_impl):
    hf = BlipForConditionalGeneration(hf_blip_config(len(tokenizer))).eval()
    randomize_(hf, seed=2)
    hf.save_pretrained(tmp_path)
    images, ids, atts = batch
    ours = build_model("pretrain", tiny_model_config(attn_impl=attn_impl), tokenizer=tokenizer).eval()
    report = load_checkpoint(ours, tmp_path / "model.safetensors")  # a single safetensors file
    assert report.format == "transformers" and not report.shape_mismatch and not report.unexpected

    dec_ids = ids.clone()
    dec_ids[:, 0] = tokenizer.bos_token_id
    labels = dec_ids.masked_fill(dec_ids == tokenizer.pad_token_id, -100)
    with torch.no_grad():
        hf_image = hf.vision_model(pixel_values=images).last_hidden_state
        hf_out = hf.text_decoder(input_ids=dec_ids, attention_mask=atts, encoder_hidden_states=hf_image, labels=labels)
        our_image = ours.encode_image(images)
        our_out = ours.text_decoder(dec_ids, atts, encoder_hidden_states=our_image, labels=labels)
    tol = TOLERANCE[attn_impl]
    assert (hf_image - our_image).abs().max() <= tol
    assert (hf_out.logits - our_out.logits).abs().max() <= tol
    assert abs(hf_out.loss.item() - our_out.loss.item()) <= tol


def test_export_to_transformers_roundtrip(tokenizer, batch):
    """Our weights exported with transformers' names reproduce our outputs in transformers' class."""
    images, ids, atts = batch
    ours = build_model("retrieval", tiny_model_config(attn_impl="eager"), tokenizer=tokenizer).eval()
    randomize_(ours, seed=3)
    hf = BlipForImageTextRetrieval(hf_blip_config(len(tokenizer))).eval()
    result = hf.load_state_dict(blip_to_transformers(ours.state_dict()), strict=False)
    assert result.unexpected_keys == []
    assert [k for k in result.missing_keys if not k.endswith("position_ids")] == []
    with torch.no_grad():
        enc_ids = ours.with_enc_token(ids)
        hf_itm = hf(input_ids=enc_ids, pixel_values=images, attention_mask=atts).itm_score
        our_itm = ours.itm_logits(ours.encode_image(images), ids, atts)
    assert (hf_itm - our_itm).abs().max() <= 1e-5


def test_switching_attention_impl_keeps_outputs(tokenizer, batch):
    images, ids, atts = batch
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer).eval()
    randomize_(model, seed=4)
    with torch.no_grad():
        sdpa = model.itm_logits(model.encode_image(images), ids, atts)
        set_attention_impl(model, "eager")
        eager = model.itm_logits(model.encode_image(images), ids, atts)
    assert (sdpa - eager).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="attn_impl"):
        set_attention_impl(model, "flash")
