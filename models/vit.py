"""Image encoder: a timm VisionTransformer whose state-dict keys are BLIP's ``visual_encoder.*`` keys.

timm's ViT has exactly BLIP's parameter names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``) once the classifier head is removed, so we use timm instead of a
copy of BLIP's ViT file. Two BLIP features are added on top:

* gradient checkpointing of only the last N blocks (BLIP's ``vit_ckpt_layer``),
  by swapping ``blocks`` for an ``nn.Sequential`` subclass (keys unchanged);
* bicubic interpolation of a checkpoint's position embedding to another image
  size (:func:`interpolate_pos_embed`), as BLIP's loader does.
"""

from __future__ import annotations

import difflib
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import timm
from timm.models.vision_transformer import VisionTransformer

__all__ = [
    "VIT_PRESETS",
    "CheckpointedBlocks",
    "build_vit",
    "interpolate_pos_embed",
    "load_timm_pretrained",
]

# BLIP's two encoders: ViT-B/16 and ViT-L/16, LayerNorm eps 1e-6, qkv bias, class token.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "large": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
}
# The keys of a shape mapping (tiny test models, ``vit: {...}`` in a config) and their types.
VIT_SHAPE_KEYS: dict[str, type] = {
    "patch_size": int, "embed_dim": int, "depth": int, "num_heads": int, "mlp_ratio": float, "qkv_bias": bool,
}
_REQUIRED_SHAPE_KEYS = ("patch_size", "embed_dim", "depth", "num_heads")


class CheckpointedBlocks(nn.Sequential):
    """The ViT's blocks; the last ``num_checkpointed`` recompute their activations in backward.

    Being an ``nn.Sequential`` of the same blocks, it keeps the ``blocks.N.*`` keys.
    Checkpointing only applies in training mode with gradients enabled.
    """

    def __init__(self, blocks: nn.Sequential, num_checkpointed: int):
        super().__init__(*blocks)
        self.num_checkpointed = num_checkpointed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = len(self) - self.num_checkpointed
        active = self.training and torch.is_grad_enabled()
        for i, block in enumerate(self):
            x = checkpoint(block, x, use_reentrant=False) if active and i >= first else block(x)
        return x


def build_vit(
    vit: str | Mapping[str, Any],
    image_size: int,
    *,
    grad_ckpt: bool = False,
    ckpt_layer: int = 0,
    drop_path_rate: float = 0.0,
) -> tuple[VisionTransformer, int]:
    """Build the image encoder and return it with its output width.

    ``vit`` is ``"base"``, ``"large"``, any timm ViT name (``"vit_small_patch16_224"``)
    or a mapping of shape keys (``patch_size, embed_dim, depth, num_heads``
    [, ``mlp_ratio``, ``qkv_bias``]) for tiny test models. Weights are random;
    load them with ``models.checkpoint`` or :func:`load_timm_pretrained`.

    ``grad_ckpt``: checkpoint the last ``ckpt_layer`` blocks, as BLIP's
    ``vit_ckpt_layer`` (0 checkpoints none, as in BLIP, and warns); -1 checkpoints
    every block.
    """
    problems = vit_config_problems(vit)
    if problems:
        raise ValueError("vit: " + "; ".join(problems))
    if isinstance(vit, Mapping):
        model = _blip_style_vit(dict(vit), image_size, drop_path_rate)
    elif vit in VIT_PRESETS:
        model = _blip_style_vit(VIT_PRESETS[vit], image_size, drop_path_rate)
    else:
        model = _timm_vit(vit, image_size, drop_path_rate)

    if grad_ckpt:
        depth = len(model.blocks)
        if not -1 <= ckpt_layer <= depth:
            raise ValueError(
                f"vit_ckpt_layer={ckpt_layer} is outside -1..{depth} (the ViT has {depth} blocks; -1 means all)"
            )
        if ckpt_layer == 0:
            warnings.warn("vit_grad_ckpt is on but vit_ckpt_layer is 0: no ViT block is checkpointed (BLIP's "
                          "meaning); set vit_ckpt_layer to N for the last N blocks or -1 for every block",
                          stacklevel=2)
        else:
            model.blocks = CheckpointedBlocks(model.blocks, depth if ckpt_layer == -1 else ckpt_layer)
    return model, model.embed_dim


def _type_problem(value: Any, wanted: type) -> str | None:
    if wanted is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {type(value).__name__} {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'an integer' if wanted is int else 'a number'}, got {type(value).__name__} {value!r}"
    if wanted is int and isinstance(value, float) and not value.is_integer():
        return f"must be an integer, got {value!r}"
    return None if value > 0 else f"must be > 0, got {value!r}"


def vit_config_problems(vit: Any) -> list[str]:
    """What is wrong with a ``vit`` value (a preset, a timm model name or a shape mapping); [] when usable.

    Every problem is listed, unknown names and keys with the closest known ones.
    """
    if isinstance(vit, str):
        if vit in VIT_PRESETS or timm.is_model(vit):
            return []
        close = difflib.get_close_matches(vit, list(VIT_PRESETS), n=1, cutoff=0.6)
        similar = (timm.list_models(f"vit*{vit}*") or timm.list_models(f"*{vit}*"))[:5] if vit else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        hint += f"; timm models named like it: {', '.join(similar)}" if similar else ""
        return [f"{vit!r} is not 'base', 'large', a timm model name or a shape mapping{hint}"]
    if not isinstance(vit, Mapping):
        return [f"must be 'base', 'large', a timm model name or a shape mapping, got {type(vit).__name__} {vit!r}"]
    problems = []
    for name, value in vit.items():
        if name not in VIT_SHAPE_KEYS:
            close = difflib.get_close_matches(str(name), list(VIT_SHAPE_KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (shape keys: {', '.join(VIT_SHAPE_KEYS)})"
            problems.append(f"unknown shape key {name!r}{hint}")
        elif (problem := _type_problem(value, VIT_SHAPE_KEYS[name])) is not None:
            problems.append(f"{name!r} {problem}")
    missing = [name for name in _REQUIRED_SHAPE_KEYS if name not in vit]
    if missing:
        problems.append(f"the shape mapping lacks {', '.join(map(repr, missing))}")
    if not problems and vit["embed_dim"] % vit["num_heads"]:
        problems.append(f"embed_dim {vit['embed_dim']} is not a multiple of num_heads {vit['num_heads']}")
    return problems


def _blip_style_vit(shape: dict[str, Any], image_size: int, drop_path_rate: float) -> VisionTransformer:
    return VisionTransformer(
        img_size=image_size,
        patch_size=shape["patch_size"],
        embed_dim=shape["embed_dim"],
        depth=shape["depth"],
        num_heads=shape["num_heads"],
        mlp_ratio=shape.get("mlp_ratio", 4.0),
        qkv_bias=shape.get("qkv_bias", True),
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0,
        global_pool="",
        drop_path_rate=drop_path_rate,
    )


def _timm_vit(name: str, image_size: int, drop_path_rate: float) -> VisionTransformer:
    requirement = (
        "BLIP's heads read the [CLS] image token, so the image encoder must be a timm "
        "VisionTransformer with class_token=True"
    )
    try:
        model = timm.create_model(
            name, pretrained=False, num_classes=0, global_pool="", img_size=image_size, drop_path_rate=drop_path_rate
        )
    except TypeError as exc:  # CNNs and others take no img_size
        raise ValueError(f"vit: {name!r} is not a VisionTransformer ({exc}); {requirement}") from None
    if not isinstance(model, VisionTransformer) or getattr(model, "cls_token", None) is None:
        raise ValueError(f"vit: {name!r} is a {type(model).__name__} without a class token; {requirement}")
    return model


def load_timm_pretrained(model: VisionTransformer, source: str) -> list[str]:
    """Initialise ``model`` from timm pretrained weights (a timm name, or a file timm can read).

    A timm name's weights come from its hub repo (``timm/<name>``) through
    :func:`models.sources.resolve_source`: the hub cache when the hub is
    unreachable, a clear error when neither has them. Returns the keys that did
    not load (head weights are expected there). Position embeddings are
    resampled to the model's grid.
    """
    from models.sources import resolve_source, source_file

    weight_files = ("model.safetensors", "pytorch_model.bin")
    local = Path(source).expanduser()
    if local.exists():  # a weights file, or a folder holding one (a downloaded timm hub repo)
        weights = local if local.is_file() else source_file(local, weight_files, what="vit_init", error=ValueError)
        state = timm.models.load_state_dict(str(weights), weights_only=True)
    elif timm.is_model(source):
        overlay = {}
        pretrained = timm.models.get_pretrained_cfg(source)
        hub_id = getattr(pretrained, "hf_hub_id", None)
        if hub_id:
            resolved = resolve_source(hub_id, what="vit_init", error=ValueError, written=source)
            if isinstance(resolved, Path):  # the hub cache's copy: timm reads the file, no network
                weights = source_file(resolved, weight_files, what=f"vit_init {source!r}", error=ValueError)
                overlay = {"file": str(weights)}
        donor = timm.create_model(source, pretrained=True, num_classes=0, global_pool="",
                                  pretrained_cfg_overlay=overlay or None)
        state = donor.state_dict()
    else:
        raise ValueError(f"vit_init {source!r}: not a weights file (no such file relative to the current folder "
                         f"{Path.cwd()}) and not a timm model name")
    if "pos_embed" in state:
        state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], model)
    result = model.load_state_dict(state, strict=False)
    return sorted(set(result.missing_keys) | set(result.unexpected_keys))


def interpolate_pos_embed(pos_embed: torch.Tensor, model: VisionTransformer) -> torch.Tensor:
    """Resample a checkpoint's position embedding to ``model``'s patch grid (BLIP's rule).

    Bicubic on the square patch grid, ``align_corners=False``, no antialiasing;
    class/register tokens kept as they are.
    """
    num_extra = model.num_prefix_tokens if not getattr(model, "no_embed_class", False) else 0
    target = model.pos_embed
    if pos_embed.shape == target.shape:
        return pos_embed
    old_patches = pos_embed.shape[1] - num_extra
    new_grid = model.patch_embed.grid_size
    old_side = int(round(old_patches**0.5))
    if old_side * old_side != old_patches:
        raise ValueError(f"pos_embed with {old_patches} patch positions is not a square grid")
    extra, grid = pos_embed[:, :num_extra], pos_embed[:, num_extra:]
    dim = pos_embed.shape[-1]
    grid = grid.reshape(1, old_side, old_side, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([extra, grid], dim=1)
