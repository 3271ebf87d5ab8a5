"""What BLIP's pretraining and retrieval models share: encoders, heads, momentum copies, queues, ITM.

Both models have the same ``visual_encoder``/``text_encoder``/``vision_proj``/
``text_proj``/``itm_head``/``temp`` (keys as in BLIP's checkpoints) and the same
momentum-encoder and feature-queue mechanics; only their losses' targets
differ. The feature helpers here (:meth:`BlipBase.encode_image`,
:meth:`BlipBase.itm_logits`, ...) are what evaluation, visualisation and users'
notebooks call.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from data.captions import pre_caption
from models.losses import itm_loss, sample_hard_negatives
from models.med import MedConfig, MedModel
from models.tokenizer import SpecialTokenIds
from models.vit import build_vit
from engine.distributed import all_gather_with_grad, concat_all_gather, get_rank

__all__ = ["BlipBase", "ring_enqueue"]


@torch.no_grad()
def ring_enqueue(queues: Sequence[torch.Tensor], values: Sequence[torch.Tensor], ptr: torch.Tensor,
                 ok: torch.Tensor | None = None) -> None:
    """Write ``values[i]`` (N rows) as columns of ``queues[i]`` (D x Q) at ``ptr``, wrapping around.

    Any N works (BLIP asserted ``queue_size % batch == 0``, issue #101). When
    N > Q only the last Q rows are kept. Nothing is written when the features are
    non-finite or ``ok`` (a 0-d bool tensor: the training step was finite) is False.
    Runs on device: no host sync.
    """
    size = queues[0].shape[1]
    count = values[0].shape[0]
    keep = min(count, size)
    # A step with non-finite features (it will be skipped) must not poison the queue for
    # good: then the old columns are written back and the pointer stays.
    checks = [torch.isfinite(v).all() for v in values if v.is_floating_point()]
    finite = torch.stack(checks).all() if checks else torch.ones((), dtype=torch.bool, device=ptr.device)
    if ok is not None:
        finite = finite & ok.to(device=ptr.device, dtype=torch.bool).reshape(())
    positions = (ptr + (count - keep) + torch.arange(keep, device=ptr.device)) % size
    for queue, value in zip(queues, values):
        value = value[count - keep:]
        if value.dim() == 1:
            value = value.unsqueeze(1)
        value = torch.where(finite, value.t().to(queue.dtype), queue[:, positions])
        queue.index_copy_(1, positions, value)
    ptr.copy_((ptr + count * finite.long()) % size)


class BlipBase(nn.Module):
    """ViT + fusion BERT + projections + ITM head, with BLIP's helper methods."""

    def __init__(
        self,
        *,
        med_config: MedConfig,
        special_tokens: SpecialTokenIds,
        vit: str | Mapping[str, Any] = "base",
        image_size: int = 224,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        vit_drop_path_rate: float = 0.0,
        embed_dim: int = 256,
        queue_size: int = 57600,
        momentum: float = 0.995,
        negative_all_rank: bool = False,
        max_length: int = 30,
        max_words: int = 30,
        attn_impl: str = "sdpa",
        tokenizer: Any = None,
    ):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.visual_encoder, vision_width = build_vit(
            vit, image_size, grad_ckpt=vit_grad_ckpt, ckpt_layer=vit_ckpt_layer, drop_path_rate=vit_drop_path_rate
        )
        vocab = med_config.vocab_size if med_config.vocab_size is not None else special_tokens.vocab_size
        if vocab < special_tokens.vocab_size:
            raise ValueError(
                f"the tokenizer has {special_tokens.vocab_size} tokens but med_config vocab_size is {vocab}; "
                "set vocab_size to at least the tokenizer's size (or null to take it from the tokenizer)"
            )
        self.med_config = replace(med_config, vocab_size=vocab, encoder_width=vision_width)
        self.text_encoder = MedModel(self.med_config, attn_impl)
        text_width = self.med_config.hidden_size
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.itm_head = nn.Linear(text_width, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.special_tokens = special_tokens
        self.tokenizer = tokenizer
        self.queue_size = queue_size
        self.momentum = momentum
        self.negative_all_rank = negative_all_rank
        self.max_length = max_length
        self.max_words = max_words
        self.image_size = image_size
        self._momentum_names: tuple[str, ...] = ()
        self._pending_enqueue: list[list[torch.Tensor]] = []

    # ----- momentum encoders -------------------------------------------------
    def _create_momentum_copies(self, names: Sequence[str]) -> None:
        """Add ``<name>_m`` frozen copies (BLIP's ``model_pairs``)."""
        for name in names:
            shadow = copy.deepcopy(getattr(self, name))
            shadow.requires_grad_(False)
            setattr(self, f"{name}_m", shadow)
        self._momentum_names = tuple(names)

    @torch.no_grad()
    def copy_params_to_momentum(self) -> None:
        """Make every momentum copy equal to its online module (after loading new weights)."""
        for name in self._momentum_names:
            for online, shadow in zip(getattr(self, name).parameters(), getattr(self, f"{name}_m").parameters()):
                shadow.copy_(online)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """shadow = momentum * shadow + (1 - momentum) * online, all tensors in one fused call."""
        online: list[torch.Tensor] = []
        shadow: list[torch.Tensor] = []
        for name in self._momentum_names:
            online.extend(p.detach() for p in getattr(self, name).parameters())
            shadow.extend(getattr(self, f"{name}_m").parameters())
        if shadow:
            torch._foreach_lerp_(shadow, online, 1.0 - self.momentum)

    # ----- feature queues ------------------------------------------------------
    def _queues(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(queue buffers in the order of the enqueued values, pointer buffer)."""
        raise NotImplementedError

    def enqueue(self, values: Sequence[torch.Tensor], defer: bool) -> None:
        """Enqueue this step's (world-gathered) momentum features now, or hold them for :meth:`commit_queue`.

        The training loop defers: whether a step was finite (losses and gradients) is known only
        after the backward pass, and a skipped step's features must not enter the queue.
        """
        if defer:
            self._pending_enqueue.append(list(values))
        else:
            queues, ptr = self._queues()
            ring_enqueue(queues, values, ptr)

    @torch.no_grad()
    def commit_queue(self, finite: torch.Tensor | None = None) -> None:
        """Enqueue the held features of the step's micro-batches, in order, if ``finite`` (on device)."""
        queues, ptr = self._queues()
        for values in self._pending_enqueue:
            ring_enqueue(queues, values, ptr, ok=finite)
        self._pending_enqueue.clear()

    # ----- features -----------------------------------------------------------
    def encode_image(self, image: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """All image tokens after the final norm: (batch, 1 + patches, vision_width)."""
        encoder = self.visual_encoder_m if momentum else self.visual_encoder
        return encoder.forward_features(image)

    def image_features(self, image_embeds: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """L2-normalised projected [CLS] image token, float32: (batch, embed_dim)."""
        proj = self.vision_proj_m if momentum else self.vision_proj
        return F.normalize(proj(image_embeds[:, 0, :]).float(), dim=-1)

    def encode_text(self, text_ids: torch.Tensor, text_atts: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """Unimodal text encoding (ids start with [CLS]): (batch, length, hidden)."""
        encoder = self.text_encoder_m if momentum else self.text_encoder
        return encoder(text_ids, text_atts).last_hidden_state

    def text_features(self, text_embeds: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        proj = self.text_proj_m if momentum else self.text_proj
        return F.normalize(proj(text_embeds[:, 0, :]).float(), dim=-1)

    def with_enc_token(self, text_ids: torch.Tensor) -> torch.Tensor:
        """BLIP's ITM input: the same ids with [ENC] instead of [CLS] at position 0."""
        ids = text_ids.clone()
        ids[:, 0] = self.special_tokens.enc
        return ids

    def itm_logits(
        self,
        image_embeds: torch.Tensor,
        text_ids: torch.Tensor,
        text_atts: torch.Tensor,
        image_atts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ITM head logits (batch, 2) for aligned (image, text) rows; ``text_ids`` start with [CLS] or [ENC]."""
        output = self.text_encoder(
            self.with_enc_token(text_ids), text_atts,
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
        )
        return self.itm_head(output.last_hidden_state[:, 0, :])

    def clean_captions(self, captions: Sequence[str]) -> list[str]:
        """Captions as training sees them: :func:`data.captions.pre_caption` with the model's ``max_words``.

        The one cleaning path of every text-taking API (scoring, evaluation,
        visualisation). A caption that cleans to nothing is an error naming it.
        """
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, got one string; pass [caption]")
        cleaned = [pre_caption(caption, self.max_words) for caption in captions]
        for index, (raw, text) in enumerate(zip(captions, cleaned)):
            if not text:
                raise ValueError(f"caption {index} ({raw!r}) is empty after cleaning (data.captions.pre_caption)")
        return cleaned

    def tokenize(self, captions: Sequence[str], device: torch.device | str | None = None, *, clean: bool = True):
        """Captions -> (ids, attention mask) exactly as training does: cleaned (:meth:`clean_captions`),
        padded to the longest, cut at ``max_length`` tokens.

        ``clean=False`` skips the cleaning, for text that already went through
        ``pre_caption`` (evaluation datasets clean at load) or on purpose.
        """
        if self.tokenizer is None:
            raise RuntimeError("this model was built without a tokenizer; pass token ids instead")
        texts = self.clean_captions(captions) if clean else list(captions)
        batch = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = device if device is not None else self.temp.device
        return batch.input_ids.to(device), batch.attention_mask.to(device)

    # ----- ITM with hard negatives -----------------------------------------------
    def _pad_text(self, ids: torch.Tensor, atts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to ``max_length`` so every rank's texts can be gathered into one tensor."""
        extra = self.max_length - ids.shape[1]
        if extra <= 0:
            return ids, atts
        return F.pad(ids, (0, extra), value=self.special_tokens.pad), F.pad(atts, (0, extra), value=0)

    def hard_negative_itm_loss(
        self,
        image_embeds: torch.Tensor,
        text_ids: torch.Tensor,
        text_atts: torch.Tensor,
        sim_i2t: torch.Tensor,
        sim_t2i: torch.Tensor,
        exclude: torch.Tensor,
        smoothing: float,
        all_rank: bool,
    ) -> torch.Tensor:
        """ITM loss on B positives, B (text, hard-negative image) and B (hard-negative text, image) pairs.

        ``sim_i2t``/``sim_t2i`` score this rank's images/texts against the
        candidates: this rank's batch, or (``all_rank``) the whole world's
        batch, whose image tokens are gathered with gradient. ``exclude`` marks
        candidates that are positives. The three groups run as one 3B forward.
        """
        enc_ids = self.with_enc_token(text_ids)
        if all_rank:
            enc_ids, text_atts = self._pad_text(enc_ids, text_atts)
            cand_images = all_gather_with_grad(image_embeds)
            cand_ids = concat_all_gather(enc_ids)
            cand_atts = concat_all_gather(text_atts)
        else:
            cand_images, cand_ids, cand_atts = image_embeds, enc_ids, text_atts
        neg_image, valid_image = sample_hard_negatives(sim_t2i, exclude, smoothing)
        neg_text, valid_text = sample_hard_negatives(sim_i2t, exclude, smoothing)
        images = torch.cat([image_embeds, cand_images[neg_image], image_embeds], dim=0)
        ids = torch.cat([enc_ids, enc_ids, cand_ids[neg_text]], dim=0)
        atts = torch.cat([text_atts, text_atts, cand_atts[neg_text]], dim=0)
        output = self.text_encoder(ids, atts, encoder_hidden_states=images)
        logits = self.itm_head(output.last_hidden_state[:, 0, :])
        return itm_loss(logits, valid_image, valid_text)

    def local_offset(self, batch: int) -> int:
        """Index of this rank's first sample in a world-gathered batch."""
        return get_rank() * batch

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        self.temp.clamp_(0.001, 0.5)
