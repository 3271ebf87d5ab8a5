"""Fusion BERT: masks, KV-cache generation, Grad-CAM hooks, config errors."""

import json

import pytest
import torch

from models.med import MedConfig, MedLMHeadModel, MedModel
from tests.conftest import TINY_TEXT


def tiny_config(**kw):
    values = dict(TINY_TEXT, vocab_size=50, encoder_width=24)
    values.update(kw)
    return MedConfig(**values)


@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_padding_does_not_change_real_tokens(attn_impl):
    torch.manual_seed(0)
    model = MedModel(tiny_config(), attn_impl).eval()
    ids = torch.randint(1, 50, (1, 6))
    image = torch.randn(1, 5, 24)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], 1).long()
    with torch.no_grad():
        short = model(ids, torch.ones(1, 6, dtype=torch.long), encoder_hidden_states=image).last_hidden_state
        long = model(padded, mask, encoder_hidden_states=image).last_hidden_state
    assert torch.allclose(short, long[:, :6], atol=1e-5)


@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_cls_only_gives_the_cls_row_and_its_gradients(attn_impl):
    # The ITM head reads [CLS] alone; the last layer may compute that row alone, padding included.
    torch.manual_seed(0)
    model = MedModel(tiny_config(), attn_impl)
    ids = torch.randint(1, 50, (3, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    image = torch.randn(3, 5, 24)
    grads = []
    for cls_only in (False, True):
        model.zero_grad()
        out = model(ids, mask, encoder_hidden_states=image, cls_only=cls_only).last_hidden_state
        assert out.shape == ((3, 1, 32) if cls_only else (3, 6, 32))
        out[:, 0].pow(2).sum().backward()
        grads.append((out[:, 0].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (full, full_grads), (cls, cls_grads) = grads
    assert torch.allclose(full, cls, atol=1e-6) and len(full_grads) == len(cls_grads)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full_grads, cls_grads))
    with pytest.raises(ValueError, match="cls_only is for the bidirectional encoder"):
        model(ids, mask, encoder_hidden_states=image, cls_only=True, is_decoder=True)


def test_decoder_is_causal_encoder_is_not():
    torch.manual_seed(0)
    lm = MedLMHeadModel(tiny_config()).eval()
    image = torch.randn(1, 5, 24)
    a = torch.tensor([[2, 7, 8, 9, 10]])
    b = a.clone()
    b[0, 3] = 11
    with torch.no_grad():
        la = lm(a, encoder_hidden_states=image).logits
        lb = lm(b, encoder_hidden_states=image).logits
        assert torch.allclose(la[:, :3], lb[:, :3], atol=1e-6) and not torch.allclose(la[:, 3], lb[:, 3])
        ea = lm.bert(a, encoder_hidden_states=image).last_hidden_state
        eb = lm.bert(b, encoder_hidden_states=image).last_hidden_state
        assert not torch.allclose(ea[:, 0], eb[:, 0])  # bidirectional without is_decoder


@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
def test_kv_cache_generation_equals_full_recompute(attn_impl):
    torch.manual_seed(0)
    lm = MedLMHeadModel(tiny_config(), attn_impl).eval()
    image = torch.randn(2, 5, 24)
    cached = lm.generate(image, bos_token_id=2, eos_token_id=3, pad_token_id=0, max_length=8)
    ids = torch.full((2, 1), 2)
    with torch.no_grad():
        while ids.shape[1] < 8:
            next_token = lm(ids, encoder_hidden_states=image).logits[:, -1].argmax(-1)
            ids = torch.cat([ids, next_token[:, None]], 1)
    # identical until each row's first [SEP]; afterwards generate pads
    for row in range(2):
        tokens = ids[row].tolist()
        stop = tokens.index(3) + 1 if 3 in tokens else len(tokens)
        assert cached[row, :stop].tolist() == tokens[:stop]
        assert all(t == 0 for t in cached[row, stop:].tolist())
    sampled = lm.generate(image, 2, 3, 0, max_length=8, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert sampled.shape[0] == 2 and (sampled[:, 0] == 2).all()


def test_gradcam_attention_map_and_gradients():
    torch.manual_seed(0)
    model = MedModel(tiny_config(), "sdpa")
    cross = model.encoder.layer[1].crossattention.self
    cross.save_attention = True  # forces the eager path for this module only
    ids = torch.randint(1, 50, (2, 6))
    image = torch.randn(2, 5, 24, requires_grad=True)
    out = model(ids, torch.ones_like(ids), encoder_hidden_states=image).last_hidden_state
    out[:, 0].square().sum().backward()  # (a plain sum of a LayerNorm output has zero gradient)
    attention, gradients = cross.get_attention_map(), cross.get_attn_gradients()
    assert attention.shape == (2, 4, 6, 5) and gradients.shape == attention.shape
    assert torch.allclose(attention.sum(-1), torch.ones(2, 4, 6), atol=1e-5)
    assert gradients.abs().sum() > 0


def test_config_errors(tmp_path):
    bad = tmp_path / "med.json"
    bad.write_text('{"hidden_size": 32,\n "num_attention_heads": }')
    with pytest.raises(ValueError, match=r"med.json:2:25: malformed JSON"):
        MedConfig.from_json(bad)
    with pytest.raises(FileNotFoundError, match="med config file not found"):
        MedConfig.from_json(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="not a multiple"):
        MedConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        MedConfig(hidden_act="swish2")
    good = tmp_path / "bert_config.json"
    good.write_text(json.dumps({"architectures": ["BertModel"], "type_vocab_size": 2, "hidden_size": 32,
                                "num_attention_heads": 4, "add_cross_attention": True}))
    assert MedConfig.from_json(good).hidden_size == 32


def test_too_long_text_and_missing_cross_attention():
    model = MedModel(tiny_config(max_position_embeddings=8))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=8"):
        model(torch.ones(1, 9, dtype=torch.long))
    text_only = MedModel(tiny_config(add_cross_attention=False))
    with pytest.raises(ValueError, match="add_cross_attention=False"):
        text_only(torch.ones(1, 3, dtype=torch.long), encoder_hidden_states=torch.randn(1, 2, 24))
