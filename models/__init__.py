"""MedVLP models: build, load, score.

    from models import build_model, load_checkpoint, itc_similarity, itm_probability
"""

from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval, itc_similarity, itm_probability, itm_scores
from models.build import build_model, med_config_from, model_from_checkpoint, unwrap
from models.checkpoint import CheckpointError, LoadReport, load_checkpoint, save_checkpoint
from models.med import MedConfig
from models.tokenizer import TokenizerError, load_tokenizer

__all__ = [
    "BlipPretrain",
    "BlipRetrieval",
    "CheckpointError",
    "LoadReport",
    "MedConfig",
    "TokenizerError",
    "build_model",
    "itc_similarity",
    "itm_probability",
    "itm_scores",
    "load_checkpoint",
    "load_tokenizer",
    "med_config_from",
    "model_from_checkpoint",
    "save_checkpoint",
    "unwrap",
]
