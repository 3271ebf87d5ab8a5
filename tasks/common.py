"""Config keys and builders that pretraining and retrieval fine-tuning share: images and the model.

The keys keep the meaning (and BLIP-base default) they have in BLIP's configs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from data.image_io import DEFAULT_MAX_PIXELS
from engine.config import Key
from models import build_model
from models.blip_base import BlipBase
from models.checkpoint import LoadReport
from models.med import med_config_problems
from models.tokenizer import load_tokenizer
from models.vit import vit_config_problems
from utils.errors import CheckpointError
from utils.json_file import read_json_file

__all__ = ["image_keys", "model_keys", "build_task_model", "crop_scale_problem"]


def crop_scale_problem(value: list[float]) -> str | None:
    if not 0 < value[0] <= value[1]:
        return f"must be [low, high] with 0 < low <= high, got {value}"
    return None


def image_keys(image_size: int, crop_scale: list[float]) -> tuple[Key, ...]:
    """Image loading and augmentation (BLIP: 224 / [0.2, 1] pretraining, 384 / [0.5, 1] retrieval)."""
    return (
        Key("max_image_pixels", "int", DEFAULT_MAX_PIXELS, "Images with more pixels are skipped as too_large (decompression-bomb guard).", minimum=1),
        Key("image_size", "int", image_size, "Training image side in pixels (ViT input).", minimum=1),
        Key("crop_scale", "list[float]", crop_scale, f"RandomResizedCrop area range [low, high] (BLIP: {crop_scale[0]}-{crop_scale[1]:g} here).", length=2, minimum=0.0, maximum=1.0, check=crop_scale_problem),
        Key("hflip", "float", 0.0, "Probability of a horizontal flip that also swaps left/right words in the caption; 0 disables.", minimum=0.0, maximum=1.0),
        Key("randaugment", "bool", True, "Apply BLIP's RandomAugment(2, 5) after the crop."),
        Key("num_workers", "int", 4, "DataLoader worker processes per rank (0: load in the training process).", minimum=0),
    )


def vit_key_problems(value: Any) -> list[str]:
    """``vit``: a preset or timm name that exists, or a shape mapping with known keys of the right types."""
    return [f"key 'vit': {problem}" for problem in vit_config_problems(value)]


def med_config_key_problems(value: Any) -> list[str]:
    """``med_config``: the keys of the inline mapping, or of the JSON file it names (already resolved)."""
    if isinstance(value, dict):
        return [f"key 'med_config': {problem}" for problem in med_config_problems(value)]
    try:
        values = read_json_file(value, what="med_config file", error=ValueError, missing=ValueError)
    except ValueError as exc:
        return [f"key 'med_config': {exc}"]
    if not isinstance(values, dict):
        return [f"key 'med_config': {value}: expected a JSON object of config keys"]
    return [f"key 'med_config' ({value}): {problem}" for problem in med_config_problems(values)]


def model_keys(*, max_length: int, alpha_rampup: tuple[Key, ...] = ()) -> tuple[Key, ...]:
    """The model: ViT, fusion BERT, tokenizer, initial weights, ITC/ITM settings."""
    return (
        Key("vit", "str|mapping", "base", "Image encoder: base | large | a timm ViT name | {patch_size, embed_dim, depth, num_heads[, mlp_ratio]}.", check=vit_key_problems),
        Key("vit_grad_ckpt", "bool", False, "Gradient checkpointing in the ViT blocks."),
        Key("vit_ckpt_layer", "int", 0, "With vit_grad_ckpt: checkpoint the last N ViT blocks (0: none, as BLIP; -1: all).", minimum=-1),
        Key("vit_drop_path_rate", "float", 0.0, "Stochastic depth rate of the ViT.", minimum=0.0),
        Key("vit_init", "str", None, "ViT initial weights: a timm pretrained name or a file; null: random init.", nullable=True, path="source"),
        Key("med_config", "str|mapping", "configs/med_config.json", "BLIP med_config.json-style BERT config of the text encoder/decoder (a path, or the keys inline).", check=med_config_key_problems, path="input"),
        Key("tokenizer", "str", "bert-base-uncased", "WordPiece tokenizer: a local folder or a hub name ([DEC]/[ENC] are added).", path="source"),
        Key("text_encoder", "str", "bert-base-uncased", "BERT weights to initialise the text side: a folder or hub name; null: random init.", nullable=True, path="source"),
        Key("pretrained", "str", None, "A BLIP checkpoint (.pth path or URL) to start from, e.g. BLIP's model_base.pth; null: none.", nullable=True, path="source"),
        Key("embed_dim", "int", 256, "Dimension of the ITC projection (vision_proj / text_proj).", minimum=1),
        Key("queue_size", "int", 57600, "Momentum feature queue length for ITC.", minimum=1),
        Key("momentum", "float", 0.995, "EMA coefficient of the momentum encoders.", minimum=0.0),
        Key("alpha", "float", 0.4, "Weight of the momentum-distillation soft targets in ITC.", minimum=0.0),
        *alpha_rampup,
        Key("negative_all_rank", "bool", False, "Draw ITM hard negatives from all ranks (gathered with gradient) instead of the local batch."),
        Key("max_length", "int", max_length, "Tokenizer max_length (tokens) for captions.", minimum=2),
        Key("attn_impl", "str", "sdpa", "Attention kernel of the text side: sdpa (fast) or eager (keeps attention maps).", choices=("sdpa", "eager")),
    )


def build_task_model(kind: str, config: Mapping[str, Any], device: torch.device) -> BlipBase:
    """``models.build_model`` with the config's tokenizer, moved to ``device``.

    A ``pretrained`` checkpoint that does not fit the configured shapes is an error naming the
    keys (BLIP dropped them silently and trained the rest from random weights).
    """
    tokenizer = load_tokenizer(config["tokenizer"])
    model = build_model(kind, config, tokenizer=tokenizer)
    if config.get("pretrained"):
        report = model.init_reports[-1]
        if isinstance(report, LoadReport) and not report.clean:
            raise CheckpointError(
                f"pretrained={config['pretrained']} does not fit the model this config describes "
                f"(vit, med_config, embed_dim, tokenizer):\n{report.summary()}"
            )
    return model.to(device)


def tokenizer_fit_warning(tokenizer: Any, data: Any, max_length: int, sample: int = 2000) -> str | None:
    """``models.tokenizer.tokenizer_report`` on up to ``sample`` training captions, evenly spread.

    A tokenizer trained on other text (the demo's, on real PubMed captions) splits medical words into
    letters and cuts long captions; that trains badly without any error, so the run says so at start.
    ``data`` is the engine's training data; sources that cannot list captions cheaply (shards) are skipped.
    """
    from models.tokenizer import tokenizer_report

    dataset = getattr(data, "dataset", None)
    caption = getattr(dataset, "caption", None)
    if caption is None or not len(dataset):
        return None
    step = max(1, len(dataset) // sample)
    captions = [caption(i) for i in range(0, len(dataset), step)][:sample]
    _, warning = tokenizer_report(tokenizer, captions, max_length)
    return warning
