"""The one checkpoint loader/saver: BLIP ``.pth`` files, transformers' BLIP weights, BERT weights.

* :func:`load_checkpoint` reads an original BLIP checkpoint (``{'model': state_dict, ...}``
  from a path or URL), our own (same format), a bare state dict, a
  ``.safetensors`` file, or a transformers BLIP directory/file
  (``BlipForImageTextRetrieval`` / ``BlipForConditionalGeneration``, whose
  renamed vision keys are mapped back). Position embeddings are interpolated
  to the model's image size, keys whose shapes differ are dropped, and
  everything that did not line up is reported in a :class:`LoadReport`.
* :func:`save_checkpoint` writes BLIP's format atomically, so BLIP's code reads ours.
* :func:`load_bert_weights` initialises the fusion text encoder/decoder from a
  transformers BERT checkpoint (bert-base-uncased, BiomedBERT, a local dir);
  cross-attention is freshly initialised and reported.

Anything from outside is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from models.vit import interpolate_pos_embed
from utils.atomic import atomic_save

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "load_checkpoint",
    "load_state",
    "save_checkpoint",
    "transformers_to_blip",
    "blip_to_transformers",
    "load_bert_weights",
]


class CheckpointError(ValueError):
    """A file or state dict that cannot be used as a checkpoint for this model."""


# Keys a checkpoint may legitimately lack or carry for a given model; reported, not alarming.
_EXPECTED_MISSING = re.compile(
    r"(^|\.)position_ids$"            # transformers does not store it; it is arange()
    r"|^(idx_queue|ptr_queue)$"       # retrieval model initialised from a pretrain checkpoint
    r"|^queue_ptr$"                   # pretrain model initialised from a retrieval checkpoint
    r"|_m\."                          # momentum copies: synced from the online weights
)
_EXPECTED_UNEXPECTED = re.compile(r"^text_decoder\.|^queue_ptr$|^(idx_queue|ptr_queue)$|_m\.")
# transformers' BLIP classes store no temperature and no queues: they start fresh (temp 0.07).
_EXPECTED_MISSING_TRANSFORMERS = re.compile(r"^(temp|image_queue|text_queue)$")


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a model."""

    source: str
    format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    momentum_synced: bool = False

    @property
    def unexpected_problems(self) -> list[str]:
        return [k for k in self.unexpected if not _EXPECTED_UNEXPECTED.search(k)]

    @property
    def missing_problems(self) -> list[str]:
        def expected(key: str) -> bool:
            if _EXPECTED_MISSING.search(key):
                return True
            return self.format == "transformers" and bool(_EXPECTED_MISSING_TRANSFORMERS.search(key))

        return [k for k in self.missing if not expected(k)]

    @property
    def clean(self) -> bool:
        """True when only documented, expected differences occurred."""
        return not (self.missing_problems or self.unexpected_problems or self.shape_mismatch)

    def summary(self, limit: int = 10) -> str:
        def head(keys: list[str]) -> str:
            shown = ", ".join(keys[:limit])
            return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")

        lines = [f"loaded {self.source} ({self.format} format)"]
        if self.interpolated:
            lines.append(f"  position embeddings interpolated: {head(self.interpolated)}")
        if self.shape_mismatch:
            items = [f"{k} {tuple(a)} -> model {tuple(b)}" for k, a, b in self.shape_mismatch]
            lines.append(f"  dropped, shape differs ({len(items)}): {head(items)}")
        if self.missing:
            lines.append(f"  missing, left as initialised ({len(self.missing)}): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected, ignored ({len(self.unexpected)}): {head(self.unexpected)}")
        if self.momentum_synced:
            lines.append("  momentum encoders copied from the online weights (checkpoint has none)")
        return "\n".join(lines)


# ----- reading ---------------------------------------------------------------------

def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def _download(url: str) -> Path:
    """Download into torch's hub cache once (BLIP's ``download_cached_file`` behaviour)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(urlparse(url).path).name or "checkpoint.pth"
    target = cache / name
    if not target.exists():
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as exc:  # urllib raises many types; the message names the URL
            raise CheckpointError(f"cannot download checkpoint {url}: {exc}") from exc
    return target


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # pickle/zip errors come in many types
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _weights_file_in(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).exists():
            return directory / name
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin in this directory")


def read_checkpoint(source: str | Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Return ``(state_dict in BLIP naming, format name, other top-level entries)``."""
    text = str(source)
    path = _download(text) if _is_url(text) else Path(text)
    if path.is_dir():
        path = _weights_file_in(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raw: Any = _load_safetensors(path)
    else:
        raw = _torch_load(path)
    extras: dict[str, Any] = {}
    fmt = "state_dict"
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        extras = {k: v for k, v in raw.items() if k != "model"}
        raw, fmt = raw["model"], "blip"
    elif isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{path}: no state dict found (expected a dict of tensors or {{'model': state_dict}})")
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}")
    state = dict(raw)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("vision_model.") for k in state):
        state, fmt = transformers_to_blip(state), "transformers"
    return state, fmt, extras


# ----- transformers' BLIP naming ------------------------------------------------------

# (transformers pattern, BLIP replacement): the inverse of transformers' conversion script.
_HF_TO_BLIP = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
]
_BLIP_TO_HF = [
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
]


def _rename(state: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            new_key, count = pattern.subn(replacement, key)
            if count:
                key = new_key
                break
        out[key] = value
    return out


def transformers_to_blip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``BlipForImageTextRetrieval``/``BlipForConditionalGeneration`` keys -> BLIP keys."""
    return _rename(state, _HF_TO_BLIP)


def blip_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BLIP keys -> transformers' BLIP keys (momentum copies, queues and ``position_ids`` dropped)."""
    kept = {
        k: v for k, v in state.items()
        if "_m." not in k and not k.endswith(("_queue", "queue_ptr", "ptr_queue", "position_ids")) and k != "temp"
    }
    return _rename(kept, _BLIP_TO_HF)


# ----- loading into a model ---------------------------------------------------------

def _interpolate_pos_embeds(model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport) -> None:
    for prefix in ("visual_encoder", "visual_encoder_m"):
        key = f"{prefix}.pos_embed"
        encoder = getattr(model, prefix, None)
        if key in state and encoder is not None and state[key].shape != encoder.pos_embed.shape:
            state[key] = interpolate_pos_embed(state[key], encoder)
            report.interpolated.append(key)


def load_checkpoint(model: nn.Module, source: str | Path, *, strict: bool = False) -> LoadReport:
    """Load weights of any supported format into ``model`` and report what did not line up.

    ``strict=True`` raises :class:`CheckpointError` unless the report is
    :attr:`LoadReport.clean` (only documented, expected differences).
    """
    state, fmt, _ = read_checkpoint(source)
    return load_state(model, state, source=str(source), fmt=fmt, strict=strict)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, fmt: str,
               strict: bool = False) -> LoadReport:
    """:func:`load_checkpoint` for a state dict already read with :func:`read_checkpoint` (no second read)."""
    report = LoadReport(source=source, format=fmt)
    _interpolate_pos_embeds(model, state, report)
    own = model.state_dict()
    for key in list(state):
        if key in own and own[key].shape != state[key].shape:
            report.shape_mismatch.append((key, tuple(state[key].shape), tuple(own[key].shape)))
            del state[key]
    result = model.load_state_dict(state, strict=False)
    report.missing = sorted(result.missing_keys)
    report.unexpected = sorted(result.unexpected_keys)
    momentum_names = getattr(model, "_momentum_names", ())
    if momentum_names and not any(k.startswith(f"{momentum_names[0]}_m.") for k in state):
        model.copy_params_to_momentum()
        report.momentum_synced = True
    if strict and not report.clean:
        raise CheckpointError(f"checkpoint does not match the model:\n{report.summary()}")
    return report


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> None:
    """Write ``{'model': state_dict, **extra}`` (BLIP's layout) atomically."""
    module = model.module if hasattr(model, "module") else model
    payload = {"model": module.state_dict(), **extra}
    atomic_save(path, lambda handle: torch.save(payload, handle))


# ----- BERT initialisation -------------------------------------------------------------

def _resolve_pretrained_file(name_or_path: str) -> tuple[Path, Path | None]:
    """Local directory or hub name -> (weights file, config.json or None)."""
    local = Path(name_or_path)
    if local.is_dir():
        config = local / "config.json"
        return _weights_file_in(local), config if config.exists() else None
    if local.is_file():
        return local, None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last_error: Exception | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            weights = Path(hf_hub_download(name_or_path, filename))
            break
        except EntryNotFoundError as exc:
            last_error = exc
        except Exception as exc:  # offline, unknown repo, ... : name the source
            raise CheckpointError(f"cannot get BERT weights {name_or_path!r} (not a local path; hub: {exc})") from exc
    else:
        raise CheckpointError(f"{name_or_path!r}: no model.safetensors or pytorch_model.bin on the hub ({last_error})")
    try:
        config = Path(hf_hub_download(name_or_path, "config.json"))
    except Exception:
        config = None
    return weights, config


_BERT_DROP = re.compile(r"^(pooler\.|cls\.seq_relationship|embeddings\.token_type_embeddings)")


def _bert_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    raw = _load_safetensors(weights) if weights.suffix == ".safetensors" else _torch_load(weights)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{weights}: not a BERT state dict")
    out = {}
    for key, value in raw.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        key = key[len("bert."):] if key.startswith("bert.") else key
        if _BERT_DROP.match(key):
            continue
        out[key] = value
    return out


def load_bert_weights(module: nn.Module, name_or_path: str | Path) -> LoadReport:
    """Initialise a :class:`~models.med.MedModel` or :class:`~models.med.MedLMHeadModel` from BERT weights.

    The vocabulary may be smaller than the model's (BLIP appends ``[DEC]``,
    ``[ENC]`` to bert-base-uncased's 30522): the first rows are copied, the
    rest keep their fresh initialisation. Cross-attention layers do not exist
    in BERT and are reported as missing (freshly initialised).
    """
    from models.med import MedLMHeadModel

    source = str(name_or_path)
    weights, config_file = _resolve_pretrained_file(source)
    if config_file is not None:
        bert_config = json.loads(config_file.read_text(encoding="utf-8"))
        ours = module.config
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if key in bert_config and bert_config[key] != getattr(ours, key):
                raise CheckpointError(
                    f"{source}: BERT {key}={bert_config[key]} but the med config has {getattr(ours, key)}; "
                    "use a med config that matches the BERT checkpoint"
                )
    bert_state = _bert_state_dict(weights)
    is_lm = isinstance(module, MedLMHeadModel)
    state = {}
    for key, value in bert_state.items():
        if key.startswith("cls."):
            if is_lm and key.startswith("cls.predictions."):
                state[key] = value
            continue
        state[f"bert.{key}" if is_lm else key] = value

    report = LoadReport(source=source, format="bert")
    own = module.state_dict()
    for key in list(state):
        if key not in own:
            continue
        ours_shape, theirs = own[key].shape, state[key].shape
        vocab_growth = (
            key.endswith(("word_embeddings.weight", "predictions.bias", "predictions.decoder.weight",
                          "predictions.decoder.bias"))
            and len(theirs) == len(ours_shape) and theirs[0] < ours_shape[0] and theirs[1:] == ours_shape[1:]
        )
        if vocab_growth:
            merged = own[key].clone()
            merged[: theirs[0]] = state[key]
            state[key] = merged
        elif theirs != ours_shape:
            report.shape_mismatch.append((key, tuple(theirs), tuple(ours_shape)))
            del state[key]
    result = module.load_state_dict(state, strict=False)
    report.missing = sorted(result.missing_keys)
    report.unexpected = sorted(result.unexpected_keys)
    if is_lm:
        module.tie_weights()
    return report
