"""MedVLP models: build, load, score, export.

    from models import build_model, load_checkpoint, itc_similarity, itm_probability

Names are imported on first use (PEP 562), so ``python -m models.tokenizer`` and
``python -m models.export`` run their module once, without runpy's "found in
sys.modules" warning, and ``import models`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BlipPretrain": "models.blip_pretrain",
    "BlipRetrieval": "models.blip_retrieval",
    "itc_similarity": "models.blip_retrieval",
    "itm_probability": "models.blip_retrieval",
    "itm_scores": "models.blip_retrieval",
    "build_model": "models.build",
    "build_from_checkpoint": "models.build",
    "med_config_from": "models.build",
    "unwrap": "engine.distributed",
    "CheckpointError": "utils.errors",
    "LoadReport": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "export_transformers": "models.export",
    "MedConfig": "models.med",
    "SourceError": "utils.errors",
    "TokenizerError": "utils.errors",
    "load_tokenizer": "models.tokenizer",
    "tokenizer_report": "models.tokenizer",
}

_RENAMED = {"unwrap": "unwrap_model"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
