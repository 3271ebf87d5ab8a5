"""A tiny trained-shape checkpoint on disk, as pretrain.py writes it, for the vis tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models import build_model, save_checkpoint
from tests.conftest import TINY_TEXT, TINY_VIT
from tests.pretrain_helpers import write_tokenizer


def tiny_vis_config(tmp_path: Path, **overrides) -> dict:
    """Model keys of a pretrain config (3 fusion layers so the default layer is not the last)."""
    config = {
        "tokenizer": str(write_tokenizer(tmp_path)),
        "med_config": dict(TINY_TEXT, num_hidden_layers=3),
        "vit": dict(TINY_VIT),
        "image_size": 32,
        "embed_dim": 16,
        "queue_size": 24,
        "max_words": 30,
        "max_length": 40,
        "text_encoder": None,
        "vit_init": None,
        "pretrained": None,
        "attn_impl": "sdpa",
    }
    config.update(overrides)
    return config


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from BERT's near-zero init, so attention and gradients are clearly non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.3 * noise)


def write_tiny_checkpoint(tmp_path: Path, kind: str = "pretrain", with_config: bool = True, **overrides) -> Path:
    """``{'model': state, 'config': ...}`` like pretrain.py's checkpoints; returns its path."""
    config = tiny_vis_config(tmp_path, **overrides)
    torch.manual_seed(0)
    model = build_model(kind, config)
    randomize_(model)
    model.copy_params_to_momentum()
    path = tmp_path / f"{kind}_checkpoint.pth"
    extra = {"config": config, "epoch": 0} if with_config else {}
    save_checkpoint(model, path, **extra)
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    return path
