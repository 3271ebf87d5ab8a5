"""Build a BLIP model from a config mapping: the entry point scripts and notebooks share.

The config uses the same keys as the YAML training configs (see
the README); only the model keys are read here::

    model = build_model("pretrain", {
        "med_config": "configs/med_config.json",   # or an inline mapping of MedConfig keys
        "tokenizer": "bert-base-uncased",          # dir or hub name
        "vit": "base", "image_size": 224,
        "text_encoder": "bert-base-uncased",       # BERT init (optional)
        "pretrained": "model_base.pth",            # BLIP/our/transformers checkpoint (optional)
    })
    print(model.init_reports)                      # what each initialisation loaded or missed
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from utils.errors import CheckpointError

from models.blip_base import BlipBase
from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval
from models.checkpoint import LoadReport, checkpoint_state, load_bert_weights, load_checkpoint, load_state, read_checkpoint
from models.med import MedConfig
from models.tokenizer import load_tokenizer, special_token_ids
from models.vit import load_timm_pretrained

__all__ = ["MODEL_KINDS", "MODEL_DEFAULTS", "build_model", "build_from_checkpoint", "med_config_from"]

MODEL_KINDS = {"pretrain": BlipPretrain, "retrieval": BlipRetrieval}

# Model keys and their defaults (BLIP-base). Training keys are ignored here.
MODEL_DEFAULTS: dict[str, Any] = {
    "med_config": "configs/med_config.json",
    "tokenizer": "bert-base-uncased",
    "vit": "base",
    "image_size": 224,
    "vit_grad_ckpt": False,
    "vit_ckpt_layer": 0,
    "vit_drop_path_rate": 0.0,
    "embed_dim": 256,
    "queue_size": 57600,
    "momentum": 0.995,
    "negative_all_rank": False,
    "max_length": None,  # None: 30 for pretrain, 35 for retrieval (BLIP)
    "max_words": 30,  # the scoring API cleans captions with pre_caption(caption, max_words), as training does
    "attn_impl": "sdpa",
    "text_encoder": None,
    "vit_init": None,
    "pretrained": None,
}


def med_config_from(value: str | Path | Mapping[str, Any] | MedConfig) -> MedConfig:
    """A MedConfig from a JSON path, an inline mapping or a MedConfig."""
    if isinstance(value, MedConfig):
        return value
    if isinstance(value, Mapping):
        return MedConfig.from_dict(value, source="med_config (inline)")
    return MedConfig.from_json(value)


def build_model(kind: str, config: Mapping[str, Any], *, tokenizer: Any = None) -> BlipBase:
    """Build a ``"pretrain"`` or ``"retrieval"`` model and run its configured initialisations.

    Initialisation order: BERT weights (``text_encoder``), timm ViT weights
    (``vit_init``), then a full checkpoint (``pretrained``), each reported in
    ``model.init_reports``. Momentum encoders end equal to the online ones.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
    cfg = {**MODEL_DEFAULTS, **{k: v for k, v in config.items() if k in MODEL_DEFAULTS}}
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg["tokenizer"])
    special = special_token_ids(tokenizer)
    kwargs = dict(
        med_config=med_config_from(cfg["med_config"]),
        special_tokens=special,
        vit=cfg["vit"],
        image_size=int(cfg["image_size"]),
        vit_grad_ckpt=bool(cfg["vit_grad_ckpt"]),
        vit_ckpt_layer=int(cfg["vit_ckpt_layer"]),
        vit_drop_path_rate=float(cfg["vit_drop_path_rate"]),
        embed_dim=int(cfg["embed_dim"]),
        queue_size=int(cfg["queue_size"]),
        momentum=float(cfg["momentum"]),
        negative_all_rank=bool(cfg["negative_all_rank"]),
        max_words=int(cfg["max_words"]),
        attn_impl=cfg["attn_impl"],
        tokenizer=tokenizer,
    )
    if cfg["max_length"] is not None:
        kwargs["max_length"] = int(cfg["max_length"])
    model = MODEL_KINDS[kind](**kwargs)

    reports: list[LoadReport | str] = []
    if cfg["text_encoder"]:
        reports.append(load_bert_weights(model.text_encoder, cfg["text_encoder"]))
        decoder = getattr(model, "text_decoder", None)
        if decoder is not None:
            reports.append(load_bert_weights(decoder, cfg["text_encoder"]))
    if cfg["vit_init"]:
        skipped = load_timm_pretrained(model.visual_encoder, str(cfg["vit_init"]))
        reports.append(f"ViT initialised from {cfg['vit_init']}; not loaded: {skipped or 'none'}")
    if cfg["text_encoder"] or cfg["vit_init"]:
        model.copy_params_to_momentum()
    if cfg["pretrained"]:
        reports.append(load_checkpoint(model, cfg["pretrained"]))
    model.init_reports = reports
    return model



# Keys that initialise weights (from files or the hub) which a checkpoint's weights then replace.
_INIT_KEYS = ("text_encoder", "vit_init", "pretrained")
_FUSION_KEYS = re.compile(r"^text_encoder\.encoder\.layer\.\d+\.crossattention\.")


def build_from_checkpoint(checkpoint: Any, kind: str = "retrieval", *, config: Mapping[str, Any] | None = None,
                          tokenizer: Any = None, strict: bool = True) -> BlipBase:
    """The model a checkpoint holds, rebuilt from the config saved in it, with its weights loaded.

    ``checkpoint``: anything :func:`models.checkpoint.read_checkpoint` reads (our
    ``checkpoint_last.pth``, BLIP's ``.pth``, a path, URL or hub name) or what
    ``torch.load`` returned for one. Our checkpoints and BLIP's keep their config
    under ``'config'``; give ``config`` (model keys as :func:`build_model` takes
    them) for one without, and ``tokenizer`` (a folder, hub name or tokenizer) to
    replace the config's. ``text_encoder``/``vit_init``/``pretrained`` are not
    run: the checkpoint's weights replace them. ``strict`` raises unless only
    documented differences remain (e.g. a pretrain checkpoint into ``"retrieval"``).
    The load report ends ``model.init_reports``.
    """
    if isinstance(checkpoint, Mapping):
        where = "the given checkpoint"
        state, fmt, extras = checkpoint_state(checkpoint, where)
    else:
        where = str(checkpoint)
        state, fmt, extras = read_checkpoint(checkpoint)
    model_config = config if config is not None else extras.get("config")
    if not isinstance(model_config, Mapping):
        raise CheckpointError(
            f"{where} carries no model config (our checkpoints keep one under 'config'; BLIP's and transformers' "
            "files do not); give the model keys: config={...} in Python, --config FILE for vis.py"
        )
    if "itm_head.weight" not in state or not any(_FUSION_KEYS.match(key) for key in state):
        raise CheckpointError(f"{where}: no fusion encoder in this checkpoint (it lacks the ITM head and/or the "
                              "text encoder's cross-attention layers); a BLIP pretrain or retrieval checkpoint is needed")
    model_config = {k: v for k, v in model_config.items() if k not in _INIT_KEYS}
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    model = build_model(kind, model_config, tokenizer=tokenizer)
    model.init_reports.append(load_state(model, state, source=where, fmt=fmt, strict=strict))
    model.source_config = dict(model_config)  # the model keys it was built from (image_size, max_words, ...)
    return model
