"""Shared tiny fixtures: a tokenizer trained on test captions, tiny model shapes, matching transformers configs."""

from __future__ import annotations

import os

import pytest
import torch

# Tests must never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

TEST_CAPTIONS = [
    "axial ct shows a hyperdense lesion in the left frontal lobe",
    "t2 weighted mri with a small hyperintense mass in the right occipital lobe",
    "no focal lesion is seen on this flair image",
    "large irregular hypodense lesion right parietal region",
    "coronal t1 image of the brain with contrast",
    "two lesions in the left temporal and right frontal lobes",
] * 10

TINY_TEXT = dict(vocab_size=None, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=40,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TINY_VIT = dict(patch_size=8, embed_dim=24, depth=2, num_heads=4)
TINY_IMAGE = 32


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from models.tokenizer import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(TEST_CAPTIONS, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=120)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer):
    return tokenizer.name_or_path


def tiny_model_config(**overrides):
    cfg = dict(med_config=dict(TINY_TEXT), vit=dict(TINY_VIT), image_size=TINY_IMAGE, embed_dim=16, queue_size=20)
    cfg.update(overrides)
    return cfg


@pytest.fixture
def tiny_config():
    return tiny_model_config()


def hf_blip_config(vocab_size: int, image_size: int = TINY_IMAGE):
    """transformers' BLIP config with the tiny shapes above and BLIP's numerics (eps 1e-6, no dropout)."""
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    text = BlipTextConfig(
        vocab_size=vocab_size, hidden_size=TINY_TEXT["hidden_size"], num_hidden_layers=TINY_TEXT["num_hidden_layers"],
        num_attention_heads=TINY_TEXT["num_attention_heads"], intermediate_size=TINY_TEXT["intermediate_size"],
        max_position_embeddings=TINY_TEXT["max_position_embeddings"], encoder_hidden_size=TINY_VIT["embed_dim"],
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, label_smoothing=0.1,
        bos_token_id=None, sep_token_id=None, eos_token_id=None,
    )
    vision = BlipVisionConfig(
        hidden_size=TINY_VIT["embed_dim"], intermediate_size=4 * TINY_VIT["embed_dim"],
        num_hidden_layers=TINY_VIT["depth"], num_attention_heads=TINY_VIT["num_heads"],
        image_size=image_size, patch_size=TINY_VIT["patch_size"], layer_norm_eps=1e-6,
    )
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), image_text_hidden_size=16)
