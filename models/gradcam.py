"""Grad-CAM of the ITM head through one fusion layer's cross-attention, per word and for a caption.

The BLIP/ALBEF recipe (ALBEF's ``visualization.ipynb`` and ``Grounding.py``, BLIP's
``compute_gradcam``): run the image-grounded text encoder on (image, caption) with the
cross-attention of layer ``L`` keeping its probabilities, take the gradient of the ITM
"match" logit with respect to them, and form ``attention x max(gradient, 0)``, averaged
over heads. Row ``t`` of the result (one value per image patch) says where token ``t``
looked *and* where looking there raised the match score. Word-pieces are merged back
into the caption's words (mean of their rows); the caption map is the mean over all text
rows, [ENC] and [SEP] included and padding excluded (ALBEF's grounding map).

Only the chosen cross-attention runs the eager kernel (its ``save_attention`` switch);
everything else keeps the model's attention implementation, and no gradient flows into
the ViT (the image tokens are computed once without a graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.blip_base import BlipBase
from utils.errors import MedVLPError

__all__ = [
    "GradCam", "GradCamError", "check_layer", "compute_gradcam", "compute_gradcams", "default_layer", "fusion_depth",
    "gradcam_from_attention", "upsample_map",
]


class GradCamError(MedVLPError, ValueError):
    """A request Grad-CAM cannot serve (empty caption, layer out of range, no fusion encoder)."""


@dataclass
class GradCam:
    """Grad-CAM maps of one (image, caption) pair, at the ViT's patch-grid resolution.

    ``word_maps[i]`` belongs to ``words[i]``; ``token_maps[t]`` to ``tokens[t]`` (all
    positions, [ENC] and [SEP] included). Maps are non-negative; upsample with
    :func:`upsample_map` to any image size (the grid spans the whole image, which the
    model's transform resized to a square, so the overlay stretches back to the original
    aspect ratio).
    """

    caption: str                  # the cleaned caption the model saw
    words: list[str]              # its whitespace words that fit into the tokenizer's max_length
    dropped_words: list[str]      # words cut by truncation (no map)
    tokens: list[str]
    token_maps: np.ndarray        # (tokens, grid_h, grid_w)
    word_maps: np.ndarray         # (words, grid_h, grid_w)
    caption_map: np.ndarray       # (grid_h, grid_w)
    itm_probability: float        # P(match) from the ITM head
    layer: int

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.caption_map.shape)

    def stacked(self) -> np.ndarray:
        """Caption map then word maps: (1 + words, grid_h, grid_w), float32 (what ``vis.py`` saves as .npy)."""
        return np.concatenate([self.caption_map[None], self.word_maps], axis=0).astype(np.float32)

    def phrase_map(self, word_indices: list[int]) -> np.ndarray:
        """Mean map of some words (a phrase of the caption)."""
        if not word_indices:
            raise GradCamError("a phrase needs at least one word")
        return self.word_maps[word_indices].mean(axis=0)


def default_layer(depth: int) -> int:
    """The fusion layer at two thirds of the depth (BLIP's/ALBEF's layer 8 of 12, 0-based), never the last.

    In the last layer only the [ENC] row reaches the ITM head, so every word's gradient
    there is zero; words need at least one self-attention layer after the mapped one.
    """
    return max(0, min((2 * depth) // 3, depth - 2))


def fusion_depth(model: BlipBase) -> int:
    """Number of fusion layers that have cross-attention; 0 when the text encoder has none."""
    layers = model.text_encoder.encoder.layer
    return len(layers) if all(hasattr(layer, "crossattention") for layer in layers) else 0


def check_layer(model: BlipBase, layer: int) -> None:
    depth = fusion_depth(model)
    if depth == 0:
        raise GradCamError("the model's text encoder has no cross-attention (no fusion encoder): nothing to map")
    if not 0 <= layer < depth:
        raise GradCamError(f"--layer {layer} is out of range: the fusion encoder has {depth} layers (0..{depth - 1})")


def gradcam_from_attention(attention: torch.Tensor, gradients: torch.Tensor, grid: tuple[int, int],
                           num_prefix_tokens: int = 1) -> torch.Tensor:
    """``mean_heads(attention * max(gradients, 0))`` over the patch tokens: (tokens, grid_h, grid_w).

    ``attention``/``gradients``: (heads, text tokens, image tokens) of one sample; the
    first ``num_prefix_tokens`` image tokens ([CLS], registers) are not patches.
    """
    if attention.shape != gradients.shape or attention.dim() != 3:
        raise ValueError(f"attention {tuple(attention.shape)} and gradients {tuple(gradients.shape)} must be "
                         "equal (heads, text tokens, image tokens)")
    patches = attention.shape[-1] - num_prefix_tokens
    if patches != grid[0] * grid[1]:
        raise ValueError(f"{patches} patch tokens do not fill a {grid[0]} x {grid[1]} grid")
    cam = attention[..., num_prefix_tokens:] * gradients[..., num_prefix_tokens:].clamp(min=0)
    return cam.mean(dim=0).reshape(attention.shape[1], grid[0], grid[1])


def _word_spans(caption: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for word in caption.split(" "):
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return spans


def _tokenize_with_words(model: BlipBase, captions: list[str], device: torch.device):
    """Ids, mask (padded to the longest), and per caption its token strings and each token's word index
    (-1 for [CLS]/[SEP]/padding)."""
    encoded = model.tokenizer(captions, padding="longest", truncation=True, max_length=model.max_length,
                              return_offsets_mapping=True, return_tensors="pt")
    enc_token = model.tokenizer.convert_ids_to_tokens(model.special_tokens.enc)
    tokens, word_of_token = [], []
    for row, caption in enumerate(captions):
        spans = _word_spans(caption)
        words = []
        for (start, end), attended in zip(encoded.offset_mapping[row].tolist(), encoded.attention_mask[row].tolist()):
            if not attended or end <= start:
                words.append(-1)
            else:
                words.append(next((i for i, (lo, hi) in enumerate(spans) if lo <= start < hi), -1))
        length = int(encoded.attention_mask[row].sum())
        row_tokens = model.tokenizer.convert_ids_to_tokens(encoded.input_ids[row, :length].tolist())
        row_tokens[0] = enc_token  # itm_logits swaps [CLS] for [ENC]
        tokens.append(row_tokens)
        word_of_token.append(words[:length])
    return encoded.input_ids.to(device), encoded.attention_mask.to(device), tokens, word_of_token


def compute_gradcam(model: BlipBase, image: torch.Tensor, caption: str, layer: int) -> GradCam:
    """Grad-CAM of ``caption`` (already cleaned with ``data.captions.pre_caption``) over ``image``.

    ``image``: one transformed image, (3, S, S) or (1, 3, S, S). The model is put in eval
    mode; its parameters get no gradients.
    """
    return compute_gradcams(model, image, [caption], layer)[0]


def compute_gradcams(model: BlipBase, image: torch.Tensor, captions: list[str], layer: int) -> list[GradCam]:
    """:func:`compute_gradcam` for several captions of one image in one batch (the image is encoded once).

    In eval mode the samples of a batch do not interact, so each caption's maps equal
    those of a batch of one.
    """
    captions = [caption.strip() for caption in captions]
    empty = [i for i, caption in enumerate(captions) if not caption]
    if not captions or empty:
        raise GradCamError(f"caption {empty[0] if empty else 0} is empty (after cleaning): there is no word to map")
    check_layer(model, layer)
    if model.tokenizer is None:
        raise GradCamError("the model has no tokenizer; build it with build_model(...) or build_from_checkpoint(...)")
    model.eval()
    image = image.unsqueeze(0) if image.dim() == 3 else image
    device = next(model.parameters()).device
    ids, atts, tokens, word_of_token = _tokenize_with_words(model, captions, device)
    for caption, words in zip(captions, word_of_token):
        if not any(w >= 0 for w in words):
            raise GradCamError(f"the caption {caption!r} gives no word-piece tokens")
    attention_module = model.text_encoder.encoder.layer[layer].crossattention.self
    vit = model.visual_encoder
    grid = tuple(int(g) for g in vit.patch_embed.grid_size)
    attention_module.save_attention = True
    try:
        with torch.no_grad():
            image_embeds = model.encode_image(image.to(device))
        image_embeds = image_embeds.expand(len(captions), -1, -1).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.itm_logits(image_embeds, ids, atts)
            attention = attention_module.get_attention_map()
            (gradients,) = torch.autograd.grad(logits[:, 1].sum(), attention)
    finally:
        attention_module.save_attention = False
        attention_module.attention_map = None
        attention_module.attn_gradients = None
    probabilities = logits.detach().float().softmax(dim=-1)[:, 1].tolist()
    results = []
    for row, caption in enumerate(captions):
        with torch.no_grad():
            token_maps = gradcam_from_attention(attention[row].detach().float(), gradients[row].float(), grid,
                                                num_prefix_tokens=vit.num_prefix_tokens)
        length = len(tokens[row])
        token_maps = token_maps[:length].cpu().numpy()
        word_of = word_of_token[row]
        words = caption.split(" ")
        kept = sorted({w for w in word_of if w >= 0})
        word_maps = np.stack([token_maps[[t for t, w in enumerate(word_of) if w == k]].mean(axis=0) for k in kept])
        results.append(GradCam(
            caption=caption,
            words=[words[k] for k in kept],
            dropped_words=words[kept[-1] + 1:],
            tokens=tokens[row],
            token_maps=token_maps,
            word_maps=word_maps,
            caption_map=token_maps.mean(axis=0),
            itm_probability=float(probabilities[row]),
            layer=layer,
        ))
    return results


def upsample_map(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (grid_h, grid_w) or (n, grid_h, grid_w) map to ``size`` = (height, width).

    The grid covers the whole image, so each cell lands on its own region of the original
    picture whatever the aspect ratio. Bilinear keeps values non-negative.
    """
    tensor = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))
    squeeze = tensor.dim() == 2
    tensor = tensor[None, None] if squeeze else tensor[None]
    out = F.interpolate(tensor, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[0]
    return (out[0] if squeeze else out).numpy()
