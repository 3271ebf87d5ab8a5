"""Image encoder: timm ViT with BLIP's keys, partial gradient checkpointing, pos-embed interpolation."""

import pytest
import torch

import models.vit as vit_module
from models.vit import build_vit, interpolate_pos_embed
from tests.conftest import TINY_VIT


def test_blip_key_names_and_width():
    model, width = build_vit(dict(TINY_VIT), 32)
    keys = set(model.state_dict())
    assert width == 24
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.proj.bias", "norm.weight"} <= keys
    assert not any(k.startswith(("head", "fc_norm")) and model.state_dict()[k].numel() for k in keys)
    out = model.forward_features(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1 + 16, 24)


@pytest.mark.parametrize("ckpt_layer, expected_calls", [(1, 1), (2, 2), (-1, 2)])
def test_checkpointing_last_blocks_keeps_outputs_and_grads(ckpt_layer, expected_calls, monkeypatch):
    torch.manual_seed(0)
    plain, _ = build_vit(dict(TINY_VIT), 32)
    ckpt, _ = build_vit(dict(TINY_VIT), 32, grad_ckpt=True, ckpt_layer=ckpt_layer)
    assert set(ckpt.state_dict()) == set(plain.state_dict())
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    real = vit_module.checkpoint
    monkeypatch.setattr(vit_module, "checkpoint", lambda fn, *a, **k: calls.append(1) or real(fn, *a, **k))
    x = torch.randn(2, 3, 32, 32)
    outs, grads = [], []
    for model in (plain, ckpt):
        model.train()
        y = model.forward_features(x)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert len(calls) == expected_calls
    assert torch.allclose(outs[0], outs[1], atol=1e-6) and torch.allclose(grads[0], grads[1], atol=1e-5)
    ckpt.eval()
    calls.clear()
    ckpt.forward_features(x)
    assert calls == []  # no recomputation in eval mode


def test_timm_name_and_errors():
    model, width = build_vit("vit_tiny_patch16_224", 32)
    assert width == 192 and model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 5, 192)
    with pytest.raises(ValueError, match="outside -1..2"):
        build_vit(dict(TINY_VIT), 32, grad_ckpt=True, ckpt_layer=3)
    with pytest.warns(UserWarning, match="no ViT block is checkpointed"):  # BLIP's meaning of 0
        model, _ = build_vit(dict(TINY_VIT), 32, grad_ckpt=True, ckpt_layer=0)
    assert not isinstance(model.blocks, vit_module.CheckpointedBlocks)
    with pytest.raises(ValueError, match="unknown shape key 'heads'"):
        build_vit(dict(TINY_VIT, heads=3), 32)
    with pytest.raises(ValueError, match="lacks"):
        build_vit({"patch_size": 8}, 32)


def test_interpolate_pos_embed_keeps_class_token_and_refuses_non_square():
    model, _ = build_vit(dict(TINY_VIT), 48)  # 6x6 grid
    old = torch.randn(1, 1 + 16, 24)
    new = interpolate_pos_embed(old, model)
    assert new.shape == (1, 37, 24) and torch.equal(new[:, 0], old[:, 0])
    constant = torch.ones(1, 17, 24)
    assert torch.allclose(interpolate_pos_embed(constant, model), torch.ones(1, 37, 24), atol=1e-5)
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_pos_embed(torch.randn(1, 1 + 15, 24), model)
