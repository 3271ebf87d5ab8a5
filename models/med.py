"""BLIP's MED text side: BERT with cross-attention to image tokens in every layer.

One module serves three BLIP roles, chosen per call rather than per class:

* unimodal text encoder (ITC): ``MedModel(ids, mask)``;
* image-grounded text encoder (ITM): ``MedModel(ids, mask, encoder_hidden_states=image_embeds)``;
* image-grounded text decoder (LM): :class:`MedLMHeadModel` (causal self-attention,
  cross-attention, LM head, KV cache).

transformers' ``BertModel`` refuses cross-attention without a causal mask, and
BLIP's own copy of it broke with new transformers releases, so this is a compact
re-implementation with the same parameter names as BLIP's checkpoints
(``embeddings.*``, ``encoder.layer.N.{attention,crossattention,intermediate,output}.*``,
``cls.predictions.*``). Attention runs through ``F.scaled_dot_product_attention``
by default; the eager path (``attn_impl="eager"``, or any module with
``save_attention=True``) materialises the probabilities, which Grad-CAM reads
together with their gradients.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.json_file import read_json_file

__all__ = [
    "MedConfig",
    "MedModel",
    "MedLMHeadModel",
    "MedOutput",
    "LMOutput",
    "LayerCache",
    "ImageKV",
    "set_attention_impl",
    "med_config_problems",
]

ATTN_IMPLS = ("sdpa", "eager")

# Keys of BERT/BLIP config files that do not change the architecture we build.
_IGNORED_CONFIG_KEYS = {
    "architectures", "model_type", "type_vocab_size", "position_embedding_type", "use_cache",
    "classifier_dropout", "transformers_version", "torch_dtype", "dtype", "gradient_checkpointing",
    "is_decoder", "bos_token_id", "eos_token_id", "sep_token_id", "tie_word_embeddings", "id2label",
    "label2id", "output_past", "directionality", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "projection_dim", "encoder_hidden_size",
    "chunk_size_feed_forward", "add_pooling_layer", "name_or_path", "_name_or_path", "problem_type",
}


@dataclass
class MedConfig:
    """Text-side shapes, read from BLIP's ``med_config.json`` (or a BERT ``config.json``).

    ``vocab_size=None`` means "as many as the tokenizer has" (resolved by the
    model builder). ``encoder_width`` is the image encoder's width (768 for
    ViT-B, 1024 for ViT-L) and may differ from ``hidden_size``.
    """

    vocab_size: int | None = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    encoder_width: int = 768
    add_cross_attention: bool = True
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"med config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"med config: hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "med config") -> "MedConfig":
        problems = med_config_problems(values)
        if problems:
            raise ValueError(f"{source}: " + "; ".join(problems))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> "MedConfig":
        path = Path(path)
        values = read_json_file(path, what="med config file")
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of config keys")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value_problem(value: Any, annotation: str) -> str | None:
    """``value`` against a MedConfig field annotation (``int``, ``float``, ``str``, ``bool``, ``int | None``)."""
    if annotation.endswith("| None"):
        if value is None:
            return None
        annotation = annotation[: -len("| None")].strip()
    if annotation == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {type(value).__name__} {value!r}"
    if annotation == "str":
        return None if isinstance(value, str) else f"must be a string, got {type(value).__name__} {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {'an integer' if annotation == 'int' else 'a number'}, got {type(value).__name__} {value!r}"
    if annotation == "int" and isinstance(value, float) and not value.is_integer():
        return f"must be an integer, got {value!r}"
    return None


def med_config_problems(values: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a med_config mapping (unknown keys with the closest known one, types, shape rules)."""
    known = {f.name: f.type for f in fields(MedConfig)}
    problems = []
    for name, value in values.items():
        if name in _IGNORED_CONFIG_KEYS:
            continue
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
            problems.append(f"unknown key {name!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                        f" (known keys: {', '.join(known)})"))
        elif (problem := _value_problem(value, str(known[name]))) is not None:
            problems.append(f"{name!r} {problem}")
    if not problems:
        try:
            MedConfig(**{k: v for k, v in values.items() if k in known})
        except ValueError as exc:
            problems.append(str(exc).removeprefix("med config: "))
    return problems


_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
}


class LayerCache(NamedTuple):
    """Keys/values a decoder layer reuses while generating: self-attention grows, cross stays."""

    self_key: torch.Tensor
    self_value: torch.Tensor
    cross_key: torch.Tensor | None
    cross_value: torch.Tensor | None


class ImageKV(NamedTuple):
    """Per-layer cross-attention keys/values of a few images, and how many consecutive text rows attend to each.

    Rows ``0 .. counts[0]-1`` attend to image 0, the next ``counts[1]`` to image 1, and so on. The counts
    are host integers, planned before the forward, so attending never waits on the device.
    """

    keys: list[torch.Tensor]  # per layer: (n_images, heads, tokens, head_dim)
    values: list[torch.Tensor]
    counts: tuple[int, ...]


class MedOutput(NamedTuple):
    last_hidden_state: torch.Tensor
    past_key_values: list[LayerCache] | None


class LMOutput(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor | None
    past_key_values: list[LayerCache] | None


class MedSelfAttention(nn.Module):
    """Query/key/value projections and attention (BLIP's ``BertSelfAttention``)."""

    def __init__(self, config: MedConfig, is_cross_attention: bool, attn_impl: str = "sdpa"):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        kv_width = config.encoder_width if is_cross_attention else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.is_cross_attention = is_cross_attention
        self.attn_impl = attn_impl
        # Grad-CAM (BLIP's interface): set save_attention=True on a cross-attention module,
        # run forward + backward, then read get_attention_map() / get_attn_gradients().
        self.save_attention = False
        self.attention_map: torch.Tensor | None = None
        self.attn_gradients: torch.Tensor | None = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def save_attn_gradients(self, gradients: torch.Tensor) -> None:
        self.attn_gradients = gradients

    def get_attn_gradients(self) -> torch.Tensor | None:
        return self.attn_gradients

    def get_attention_map(self) -> torch.Tensor | None:
        return self.attention_map

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        kv_states: torch.Tensor | None = None,
        past_key: torch.Tensor | None = None,
        past_value: torch.Tensor | None = None,
        kv_counts: tuple[int, ...] | None = None,
        query_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mask``: bool, broadcastable to (batch, heads, query, key), True = attend.

        ``kv_counts`` (cross-attention with ``past_key``/``past_value`` of one entry per image): the
        batch's rows attend to the images in consecutive runs of these lengths (:class:`ImageKV`).
        ``query_states``: queries from these rows only (default: all of ``hidden_states``); keys and
        values still come from every row. Returns the context and the key/value tensors to cache.
        """
        query = self._split_heads(self.query(hidden_states if query_states is None else query_states))
        if self.is_cross_attention and past_key is not None:
            key, value = past_key, past_value  # image keys/values do not change while decoding
        else:
            source = kv_states if self.is_cross_attention else hidden_states
            key = self._split_heads(self.key(source))
            value = self._split_heads(self.value(source))
            if past_key is not None:
                key = torch.cat([past_key, key], dim=2)
                value = torch.cat([past_value, value], dim=2)

        dropout_p = self.dropout_p if self.training else 0.0
        if kv_counts is not None and (self.attn_impl == "eager" or self.save_attention or mask is not None
                                      or dropout_p > 0):
            index = torch.repeat_interleave(torch.arange(len(kv_counts), device=key.device),
                                            torch.tensor(kv_counts, device=key.device))
            key, value, kv_counts = key[index], value[index], None  # one copy per row: the general path
        if kv_counts is not None:
            context = _attend_in_groups(query, key, value, kv_counts)
        elif self.attn_impl == "eager" or self.save_attention:
            scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            if self.save_attention:
                self.attention_map = probs
                if probs.requires_grad:
                    probs.register_hook(self.save_attn_gradients)
            probs = F.dropout(probs, p=dropout_p, training=self.training)
            context = torch.matmul(probs, value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return context, key, value


def _attend_in_groups(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      counts: tuple[int, ...]) -> torch.Tensor:
    """Unmasked attention of query rows (batch, heads, length, dim) to per-image keys/values (n_images, ...).

    The rows of one image are stacked into one long query against that image's keys, so no copy of
    the keys is made per row (at BLIP-base, 577 image tokens against ~16 text tokens: the copies cost
    more than the attention itself). Each query row's softmax is over the same keys as before.
    """
    batch, heads, length, dim = query.shape
    context = torch.empty_like(query)
    start = 0
    for image, count in enumerate(counts):
        rows = query[start:start + count].transpose(0, 1).reshape(1, heads, count * length, dim)
        out = F.scaled_dot_product_attention(rows, key[image:image + 1], value[image:image + 1])
        context[start:start + count] = out.view(heads, count, length, dim).transpose(0, 1)
        start += count
    return context


class MedSelfOutput(nn.Module):
    """Projection + dropout + residual LayerNorm after attention."""

    def __init__(self, config: MedConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class MedAttention(nn.Module):
    def __init__(self, config: MedConfig, is_cross_attention: bool, attn_impl: str):
        super().__init__()
        self.self = MedSelfAttention(config, is_cross_attention, attn_impl)
        self.output = MedSelfOutput(config)

    def forward(self, hidden_states, mask, kv_states=None, past_key=None, past_value=None, kv_counts=None,
                query_states=None):
        context, key, value = self.self(hidden_states, mask, kv_states, past_key, past_value, kv_counts,
                                        query_states)
        return self.output(context, hidden_states if query_states is None else query_states), key, value


class MedIntermediate(nn.Module):
    def __init__(self, config: MedConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = _ACTIVATIONS[config.hidden_act]()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class MedOutputBlock(nn.Module):
    def __init__(self, config: MedConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class MedLayer(nn.Module):
    """Self-attention, cross-attention to image tokens (when given), feed-forward."""

    def __init__(self, config: MedConfig, attn_impl: str):
        super().__init__()
        self.attention = MedAttention(config, is_cross_attention=False, attn_impl=attn_impl)
        if config.add_cross_attention:
            self.crossattention = MedAttention(config, is_cross_attention=True, attn_impl=attn_impl)
        self.intermediate = MedIntermediate(config)
        self.output = MedOutputBlock(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        cross_mask: torch.Tensor | None,
        past: LayerCache | None,
        kv_counts: tuple[int, ...] | None = None,
        first_row_only: bool = False,
    ) -> tuple[torch.Tensor, LayerCache]:
        """``first_row_only``: only row 0 ([CLS]) goes on after self-attention (which still reads every row)."""
        hidden_states, self_key, self_value = self.attention(
            hidden_states, self_mask, past_key=past.self_key if past else None,
            past_value=past.self_value if past else None,
            query_states=hidden_states[:, :1] if first_row_only else None,
        )
        cross_key = cross_value = None
        if encoder_hidden_states is not None or (past is not None and past.cross_key is not None):
            if not hasattr(self, "crossattention"):
                raise ValueError("image features were given but this text model has add_cross_attention=False")
            hidden_states, cross_key, cross_value = self.crossattention(
                hidden_states, cross_mask, kv_states=encoder_hidden_states,
                past_key=past.cross_key if past else None, past_value=past.cross_value if past else None,
                kv_counts=kv_counts,
            )
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, LayerCache(self_key, self_value, cross_key, cross_value)


class MedEncoder(nn.Module):
    def __init__(self, config: MedConfig, attn_impl: str):
        super().__init__()
        self.layer = nn.ModuleList([MedLayer(config, attn_impl) for _ in range(config.num_hidden_layers)])


class MedEmbeddings(nn.Module):
    """Word + absolute position embeddings (BLIP uses no token-type embeddings)."""

    def __init__(self, config: MedConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Persistent: BLIP's checkpoints store it.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        length = input_ids.shape[1]
        if past_length + length > self.position_ids.shape[1]:
            raise ValueError(
                f"text of {past_length + length} tokens exceeds max_position_embeddings={self.position_ids.shape[1]}"
            )
        positions = self.position_ids[:, past_length : past_length + length]
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(embeddings))


def _init_bert_weights(module: nn.Module, std: float) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def _padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) 1/0 -> bool (batch, 1, 1, keys)."""
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


def _causal_mask(attention_mask: torch.Tensor | None, query_len: int, key_len: int, device) -> torch.Tensor:
    """Bool (batch|1, 1, query, key): query i (at absolute position key_len-query_len+i) sees keys <= itself."""
    offset = key_len - query_len
    keys = torch.arange(key_len, device=device)
    queries = torch.arange(query_len, device=device) + offset
    mask = (keys[None, :] <= queries[:, None])[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].bool()
    return mask


class MedModel(nn.Module):
    """BLIP's ``BertModel(add_pooling_layer=False)``: embeddings + fusion layers."""

    def __init__(self, config: MedConfig, attn_impl: str = "sdpa"):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("med config: vocab_size is unresolved (None); the model builder sets it from the tokenizer")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.config = config
        self.embeddings = MedEmbeddings(config)
        self.encoder = MedEncoder(config, attn_impl)
        _init_bert_weights(self, config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        is_decoder: bool = False,
        past_key_values: list[LayerCache] | None = None,
        use_cache: bool = False,
        image_kv: "ImageKV | None" = None,
        cls_only: bool = False,
    ) -> MedOutput:
        """Text-only when ``encoder_hidden_states`` is None, image-grounded otherwise.

        ``attention_mask`` covers past + current tokens when decoding with a cache.
        ``encoder_attention_mask=None`` means every image token is valid (the
        fast path: no mask reaches the fused kernel). ``image_kv`` (from
        :meth:`image_key_values`) replaces ``encoder_hidden_states`` when many
        rows share few images: each image's cross-attention keys/values are
        projected once instead of once per row (retrieval re-ranking). ``cls_only``: the last layer
        computes the [CLS] row alone (its self-attention still reads every token), for heads that read
        nothing else (ITM); ``last_hidden_state`` is then (batch, 1, width).
        """
        past_length = past_key_values[0].self_key.shape[2] if past_key_values else 0
        if image_kv is not None and (encoder_hidden_states is not None or past_key_values):
            raise ValueError("give image_kv or encoder_hidden_states/past_key_values, not both")
        if image_kv is not None and sum(image_kv.counts) != input_ids.shape[0]:
            raise ValueError(f"image_kv counts cover {sum(image_kv.counts)} rows, the batch has {input_ids.shape[0]}")
        if cls_only and (is_decoder or use_cache):
            raise ValueError("cls_only is for the bidirectional encoder without a cache")
        hidden = self.embeddings(input_ids, past_length)
        query_len = input_ids.shape[1]
        if is_decoder:
            self_mask = _causal_mask(attention_mask, query_len, past_length + query_len, input_ids.device)
        else:
            self_mask = _padding_mask(attention_mask)
        cross_mask = _padding_mask(encoder_attention_mask)
        present: list[LayerCache] = []
        last = len(self.encoder.layer) - 1
        for i, layer in enumerate(self.encoder.layer):
            past = past_key_values[i] if past_key_values else None
            if image_kv is not None:  # one key/value entry per image, attended by runs of rows
                past = LayerCache(None, None, image_kv.keys[i], image_kv.values[i])
            hidden, cache = layer(hidden, self_mask, encoder_hidden_states, cross_mask, past,
                                  kv_counts=image_kv.counts if image_kv is not None else None,
                                  first_row_only=cls_only and i == last)
            if use_cache:
                present.append(cache)
        return MedOutput(hidden, present if use_cache else None)


    @torch.no_grad()
    def image_key_values(self, image_embeds: torch.Tensor, counts: Sequence[int]) -> "ImageKV":
        """Cross-attention keys/values of ``image_embeds`` (n_images, tokens, width) for every layer.

        ``counts[j]``: how many consecutive text rows of the next forward attend to image j. Inference
        only: the projections are the same ones ``encoder_hidden_states`` would go through.
        """
        counts = tuple(int(c) for c in counts)
        if len(counts) != image_embeds.shape[0] or min(counts, default=1) < 1:
            raise ValueError(f"counts must give a positive row count for each of the {image_embeds.shape[0]} images, "
                             f"got {counts}")
        keys, values = [], []
        for layer in self.encoder.layer:
            attention = layer.crossattention.self
            keys.append(attention._split_heads(attention.key(image_embeds)))
            values.append(attention._split_heads(attention.value(image_embeds)))
        return ImageKV(keys, values, counts)


class MedPredictionHeadTransform(nn.Module):
    def __init__(self, config: MedConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = _ACTIVATIONS[config.hidden_act]()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class MedLMPredictionHead(nn.Module):
    def __init__(self, config: MedConfig):
        super().__init__()
        self.transform = MedPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one tensor, stored under both names as in BLIP

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class MedOnlyMLMHead(nn.Module):
    def __init__(self, config: MedConfig):
        super().__init__()
        self.predictions = MedLMPredictionHead(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden_states)


class MedLMHeadModel(nn.Module):
    """Image-grounded causal text decoder with an LM head tied to the word embeddings."""

    def __init__(self, config: MedConfig, attn_impl: str = "sdpa"):
        super().__init__()
        self.config = config
        self.bert = MedModel(config, attn_impl)
        self.cls = MedOnlyMLMHead(config)
        _init_bert_weights(self.cls, config.initializer_range)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: str = "mean",
        past_key_values: list[LayerCache] | None = None,
        use_cache: bool = False,
    ) -> LMOutput:
        """Next-token logits; with ``labels`` (-100 = ignore) also BLIP's LM loss.

        The loss compares position t's logits with label t+1, uses label
        smoothing ``config.label_smoothing`` (0.1 in BLIP) and is the mean over
        non-ignored tokens (``reduction="mean"``) or, BLIP's ``"none"``, the sum
        per sequence.
        """
        output = self.bert(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask,
            is_decoder=True, past_key_values=past_key_values, use_cache=use_cache,
        )
        logits = self.cls(output.last_hidden_state)
        loss = None
        if labels is not None:
            loss = lm_loss(logits, labels, self.config.label_smoothing, reduction)
        return LMOutput(logits, loss, output.past_key_values)

    @torch.no_grad()
    def generate(
        self,
        encoder_hidden_states: torch.Tensor,
        bos_token_id: int,
        eos_token_id: int,
        pad_token_id: int,
        max_length: int = 30,
        min_length: int = 1,
        top_p: float | None = None,
        prompt_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Greedy (``top_p=None``) or nucleus-sampled captions, decoded with the KV cache.

        Returns token ids (batch, <= max_length) starting with ``bos_token_id``
        (and the prompt), padded with ``pad_token_id`` after ``eos_token_id``.
        """
        batch = encoder_hidden_states.shape[0]
        device = encoder_hidden_states.device
        ids = torch.full((batch, 1), bos_token_id, dtype=torch.long, device=device)
        if prompt_ids is not None:
            ids = torch.cat([ids, prompt_ids.to(device).expand(batch, -1)], dim=1)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        past = None
        step_input = ids
        while ids.shape[1] < max_length:
            out = self.forward(step_input, encoder_hidden_states=encoder_hidden_states,
                               past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_logits = out.logits[:, -1, :].float()
            if ids.shape[1] < min_length:
                next_logits[:, eos_token_id] = float("-inf")
            if top_p is None:
                next_token = next_logits.argmax(dim=-1)
            else:
                next_token = _nucleus_sample(next_logits, top_p, generator)
            next_token = torch.where(finished, torch.full_like(next_token, pad_token_id), next_token)
            ids = torch.cat([ids, next_token[:, None]], dim=1)
            finished |= next_token == eos_token_id
            step_input = next_token[:, None]
            if bool(finished.all()):  # one host sync per generated token; generation only
                break
        return ids


def _nucleus_sample(logits: torch.Tensor, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
    sorted_probs = sorted_probs * keep
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float, reduction: str = "mean") -> torch.Tensor:
    """Shifted cross-entropy with label smoothing; -100 labels ignored (BLIP's LM loss)."""
    shifted = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    if reduction == "mean":
        return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                               ignore_index=-100, label_smoothing=label_smoothing)
    if reduction == "none":
        per_token = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=-100,
                                    label_smoothing=label_smoothing, reduction="none")
        return per_token.sum(dim=1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def set_attention_impl(model: nn.Module, attn_impl: str) -> None:
    """Switch every MED attention module (and timm ViT blocks) between "sdpa" and "eager"."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    for module in model.modules():
        if isinstance(module, MedSelfAttention):
            module.attn_impl = attn_impl
        elif hasattr(module, "fused_attn"):
            module.fused_attn = attn_impl == "sdpa"
