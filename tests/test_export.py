"""Export to transformers: one call writes a folder that transformers' BLIP classes load and that gives our numbers.

transformers' BLIP is an independent implementation, so equal outputs check the
config, the key renaming and the tokenizer together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipForImageTextRetrieval

from data.captions import pre_caption
from models import build_model, itc_similarity, itm_probability
from models.checkpoint import blip_to_transformers, save_checkpoint
from models.export import _vision_problems, export_transformers, main
from models.tokenizer import train_wordpiece_tokenizer
from tests.conftest import TEST_CAPTIONS, TINY_TEXT, TINY_VIT, tiny_model_config
from tests.test_blip_equivalence import randomize_
from utils.errors import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["<b>Axial CT</b> shows a hyperdense lesion in the LEFT frontal lobe.", "no focal lesion is seen",
            "coronal t1 image of the brain with contrast"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Our pretraining checkpoint as the engine writes it: {'model', 'config', ...}; eager attention (1e-5)."""
    folder = tmp_path_factory.mktemp("run")
    train_wordpiece_tokenizer(TEST_CAPTIONS, folder / "tokenizer", vocab_size=120, show_progress=False)
    config = tiny_model_config(tokenizer=str(folder / "tokenizer"), attn_impl="eager", max_words=30, max_length=24,
                               text_encoder="never-loaded/bert", vit_init=None, pretrained=None)
    model = build_model("pretrain", {k: v for k, v in config.items() if k != "text_encoder"}).eval()
    randomize_(model, seed=11)
    path = folder / "checkpoint_last.pth"
    save_checkpoint(model, path, config=config, epoch=1)
    return path, model


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def test_blip_to_transformers_takes_a_whole_checkpoint_and_filters_by_kind(checkpoint):
    path, model = checkpoint
    whole = torch.load(path, weights_only=True)
    assert blip_to_transformers(whole).keys() == blip_to_transformers(whole["model"]).keys()
    retrieval = blip_to_transformers(whole, kind="retrieval")
    assert retrieval and not any(k.startswith("text_decoder.") for k in retrieval)
    captioning = blip_to_transformers(whole, kind="captioning")
    assert {k.split(".")[0] for k in captioning} == {"vision_model", "text_decoder"}
    with pytest.raises(CheckpointError, match="not tensors: epoch"):
        blip_to_transformers({"epoch": 3, "w": torch.zeros(1)})


def test_retrieval_export_gives_our_scores(checkpoint, images, tmp_path):
    path, model = checkpoint
    out = export_transformers(path, tmp_path / "itm", kind="retrieval")
    hf = BlipForImageTextRetrieval.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert hf.config.vision_config.layer_norm_eps == 1e-6
    assert hf.config.image_text_hidden_size == 16 and hf.config.text_config.encoder_hidden_size == TINY_VIT["embed_dim"]
    assert hf.config.text_config.vocab_size == len(tokenizer) == len(model.tokenizer)
    assert hf.config.text_config.bos_token_id == tokenizer.convert_tokens_to_ids("[DEC]")

    # the README's recipe: clean as training, tokenize, ITM ids start with [ENC]
    cleaned = [pre_caption(c, 30) for c in CAPTIONS]
    batch = tokenizer(cleaned, padding="longest", truncation=True, max_length=24, return_tensors="pt")
    enc_ids = batch.input_ids.clone()
    enc_ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
    with torch.no_grad():
        hf_prob = torch.stack([
            hf(input_ids=enc_ids, pixel_values=image[None].expand(len(CAPTIONS), -1, -1, -1),
               attention_mask=batch.attention_mask).itm_score.softmax(dim=-1)[:, 1]
            for image in images])
        hf_sim = hf(input_ids=batch.input_ids, pixel_values=images, attention_mask=batch.attention_mask,
                    use_itm_head=False).itm_score
        without_enc = hf(input_ids=batch.input_ids, pixel_values=images[:1].expand(3, -1, -1, -1),
                         attention_mask=batch.attention_mask).itm_score.softmax(dim=-1)[:, 1]
    assert (hf_prob - itm_probability(model, images, CAPTIONS)).abs().max() <= 1e-5
    assert (hf_sim - itc_similarity(model, images, CAPTIONS)).abs().max() <= 1e-5
    assert (without_enc - hf_prob[0]).abs().max() > 1e-3  # [CLS] in place of [ENC] gives other numbers


def test_captioning_export_gives_our_logits_and_captions(checkpoint, images, tmp_path):
    path, model = checkpoint
    out = export_transformers(path, tmp_path / "cap", kind="captioning")
    hf = BlipForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids, atts = model.tokenize(CAPTIONS)
    dec_ids = ids.clone()
    dec_ids[:, 0] = tokenizer.convert_tokens_to_ids("[DEC]")
    special = model.special_tokens
    with torch.no_grad():
        image_embeds = model.encode_image(images[:1].expand(3, -1, -1, -1))
        ours = model.text_decoder(dec_ids, atts, encoder_hidden_states=image_embeds).logits
        theirs = hf(pixel_values=images[:1].expand(3, -1, -1, -1), input_ids=dec_ids, attention_mask=atts).logits
        our_caption = model.text_decoder.generate(model.encode_image(images), special.bos, special.sep, special.pad,
                                                  max_length=12)
        their_caption = hf.generate(pixel_values=images, max_length=12, do_sample=False, num_beams=1)
    assert (ours - theirs).abs().max() <= 1e-5
    assert torch.equal(our_caption, their_caption)


def test_export_from_a_model_and_errors_that_leave_nothing_behind(checkpoint, tokenizer, tmp_path, monkeypatch):
    path, model = checkpoint
    retrieval = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer)
    out = export_transformers(retrieval, tmp_path / "from_model")  # a model in memory, kind retrieval
    assert (out / "model.safetensors").exists()
    with pytest.raises(CheckpointError, match="has no text decoder"):
        export_transformers(retrieval, tmp_path / "x", kind="captioning")
    save_checkpoint(retrieval, tmp_path / "retrieval.pth")
    with pytest.raises(CheckpointError, match="carries no model config"):
        export_transformers(tmp_path / "retrieval.pth", tmp_path / "x")
    whole = torch.load(path, weights_only=True)
    save_checkpoint(retrieval, tmp_path / "with_config.pth", config=whole["config"])
    with pytest.raises(CheckpointError, match="with_config.pth has no text decoder"):
        export_transformers(tmp_path / "with_config.pth", tmp_path / "x", kind="captioning")
    assert not (tmp_path / "x").exists()
    with pytest.raises(CheckpointError, match="exists and is not empty"):
        export_transformers(path, out)
    import models.export as export

    real = export.blip_config

    def wrong_eps(m):  # what a hand-built BlipConfig with transformers' defaults gets wrong
        config = real(m)
        config.text_config.layer_norm_eps = 1e-1
        return config

    monkeypatch.setattr(export, "blip_config", wrong_eps)
    with pytest.raises(CheckpointError, match="does not reproduce ours"):
        export_transformers(path, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_image_encoders_transformers_cannot_hold_are_named():
    from timm.models.vision_transformer import VisionTransformer

    with_registers = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=4, reg_tokens=2,
                                       num_classes=0, global_pool="")
    assert any("register" in p for p in _vision_problems(with_registers))
    no_bias = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=4, qkv_bias=False,
                                num_classes=0, global_pool="")
    assert any("biases" in p for p in _vision_problems(no_bias))


def test_cli(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert main([str(path), str(tmp_path / "cli"), "--kind", "captioning"]) == 0
    assert "BlipForConditionalGeneration" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "cli2")]) == 2
    assert "not found" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "models.export", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--kind" in done.stdout and "RuntimeWarning" not in done.stderr
