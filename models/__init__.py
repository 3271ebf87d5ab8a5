"""MedVLP models: build, load, score.

    from models import build_model, load_checkpoint, itc_similarity, itm_probability
"""

from models.blip_pretrain import BlipPretrain
from models.blip_retrieval import BlipRetrieval, itc_similarity, itm_probability, itm_scores
from engine.distributed import unwrap_model as unwrap
from models.build import build_model, med_config_from
from models.checkpoint import LoadReport, load_checkpoint, save_checkpoint
from models.med import MedConfig
from models.tokenizer import load_tokenizer
from utils.errors import CheckpointError, TokenizerError

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
    "save_checkpoint",
    "unwrap",
]
