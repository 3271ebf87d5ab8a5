"""The one error hierarchy: problems a user can fix, reported as a message, never a traceback.

Every script catches :class:`MedVLPError` at the top and prints ``script: error: <message>``;
anything else is a bug and keeps its traceback. Each subclass also derives from the builtin
it refines (``ValueError`` for bad input, ``RuntimeError`` for a run that cannot go on), so
callers that catch the builtin keep working.
"""

from __future__ import annotations

__all__ = [
    "MedVLPError", "ConfigError", "CheckpointError", "DatasetError", "SourceError", "TokenizerError", "TrainingError",
]


class MedVLPError(Exception):
    """Base class: the message names the file, key or record and what is wrong."""


class ConfigError(MedVLPError, ValueError):
    """A config that cannot be used; the message names the key and where it was set."""


class CheckpointError(MedVLPError, ValueError):
    """A checkpoint file or state dict that cannot be used; the message names the file or keys."""


class DatasetError(MedVLPError, ValueError):
    """Data that cannot be used at all (a file, or too many unreadable records in a row)."""


class SourceError(MedVLPError, ValueError):
    """A model source (tokenizer, BERT, ViT weights, checkpoint) that is neither a local path nor a reachable hub name."""


class TokenizerError(MedVLPError, ValueError):
    """A tokenizer that cannot serve BLIP's encoder/decoder."""


class TrainingError(MedVLPError, RuntimeError):
    """The run cannot continue (non-finite losses, a used output_dir, another rank failed...)."""
