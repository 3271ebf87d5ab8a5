"""BLIP's retrieval fine-tuning model and the scoring functions evaluation and visualisation use.

Positives are defined by image id (``idx``): captions of the same image are
all positives for ITC (uniform targets, also against ``idx_queue``) and are
never drawn as ITM hard negatives. ``negative_all_rank`` draws negatives from
every rank's batch (BLIP's COCO setting).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from models.blip_base import BlipBase
from models.losses import distilled_targets, itc_loss, similarity_logits
from engine.distributed import concat_all_gather

__all__ = ["BlipRetrieval", "itc_similarity", "itm_scores", "itm_probability"]


class BlipRetrieval(BlipBase):
    """ViT + fusion encoder with idx-aware ITC and ITM. See :class:`BlipBase` for arguments."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 35)
        super().__init__(**kwargs)
        self._create_momentum_copies(["visual_encoder", "vision_proj", "text_encoder", "text_proj"])
        embed_dim = self.vision_proj.out_features
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        self.register_buffer("idx_queue", torch.full((1, self.queue_size), -100, dtype=torch.long))
        self.register_buffer("ptr_queue", torch.zeros(1, dtype=torch.long))

    def _queues(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [self.image_queue, self.text_queue, self.idx_queue], self.ptr_queue

    def forward(
        self, image: torch.Tensor, text_ids: torch.Tensor, text_atts: torch.Tensor, alpha: float, idx: torch.Tensor,
        *, update_momentum: bool = True, defer_enqueue: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss_ita", "loss_itm"}``; ``idx`` holds each pair's image id (batch,).

        ``update_momentum`` / ``defer_enqueue``: as :meth:`BlipPretrain.forward`.
        """
        self.clamp_temperature()
        batch = image.shape[0]
        idx = idx.view(-1, 1).to(image.device)

        image_embeds = self.encode_image(image)
        image_feat = self.image_features(image_embeds)
        text_embeds = self.encode_text(text_ids, text_atts)
        text_feat = self.text_features(text_embeds)

        # ----- ITC: every caption of the same image is a positive -----
        idx_all = torch.cat([idx.t(), self.idx_queue.clone()], dim=1)
        positives = torch.eq(idx, idx_all).float()
        positives = positives / positives.sum(dim=1, keepdim=True)
        with torch.no_grad():
            if update_momentum:
                self.momentum_update()
            image_feat_m = self.image_features(self.encode_image(image, momentum=True), momentum=True)
            text_feat_m = self.text_features(self.encode_text(text_ids, text_atts, momentum=True), momentum=True)
            image_feat_m_all = torch.cat([image_feat_m.t(), self.image_queue.clone()], dim=1)
            text_feat_m_all = torch.cat([text_feat_m.t(), self.text_queue.clone()], dim=1)
            targets_i2t = distilled_targets(similarity_logits(image_feat_m, text_feat_m_all, self.temp), positives, alpha)
            targets_t2i = distilled_targets(similarity_logits(text_feat_m, image_feat_m_all, self.temp), positives, alpha)
        sim_i2t = similarity_logits(image_feat, text_feat_m_all, self.temp)
        sim_t2i = similarity_logits(text_feat, image_feat_m_all, self.temp)
        loss_ita = itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)

        world_idx = concat_all_gather(idx)
        self.enqueue([concat_all_gather(image_feat_m), concat_all_gather(text_feat_m), world_idx.view(-1)],
                     defer=defer_enqueue)

        # ----- ITM: hard negatives never share the image id -----
        with torch.no_grad():
            if self.negative_all_rank:
                neg_i2t = similarity_logits(image_feat, concat_all_gather(text_feat).t(), self.temp)
                neg_t2i = similarity_logits(text_feat, concat_all_gather(image_feat).t(), self.temp)
                exclude = torch.eq(idx, world_idx.t())
            else:
                neg_i2t = similarity_logits(image_feat, text_feat.t(), self.temp)
                neg_t2i = similarity_logits(text_feat, image_feat.t(), self.temp)
                exclude = torch.eq(idx, idx.t())
        loss_itm = self.hard_negative_itm_loss(
            image_embeds, text_ids, text_atts, neg_i2t, neg_t2i, exclude, smoothing=0.0,
            all_rank=self.negative_all_rank,
        )
        return {"loss_ita": loss_ita, "loss_itm": loss_itm}


@torch.no_grad()
def itc_similarity(model: BlipBase, images: torch.Tensor, captions: Sequence[str] | None = None,
                   text_ids: torch.Tensor | None = None, text_atts: torch.Tensor | None = None,
                   *, clean: bool = True) -> torch.Tensor:
    """Cosine similarity of projected [CLS] features: (num_images, num_texts), no temperature.

    Give either ``captions`` (raw text: cleaned with ``pre_caption`` as in
    training unless ``clean=False``, then tokenized with the model's tokenizer)
    or ``text_ids``/``text_atts``.
    """
    if captions is not None:
        text_ids, text_atts = model.tokenize(captions, images.device, clean=clean)
    elif text_ids is None or text_atts is None:
        raise ValueError("give captions, or text_ids and text_atts")
    image_feat = model.image_features(model.encode_image(images))
    text_feat = model.text_features(model.encode_text(text_ids, text_atts))
    return similarity_logits(image_feat, text_feat.t(), 1.0)


@torch.no_grad()
def itm_scores(model: BlipBase, image_embeds: torch.Tensor, text_ids: torch.Tensor,
               text_atts: torch.Tensor) -> torch.Tensor:
    """Raw ITM "match" logits (``itm_head[:, 1]``) for aligned rows, as BLIP's re-ranking uses them."""
    return model.itm_logits(image_embeds, text_ids, text_atts)[:, 1]


@torch.no_grad()
def itm_probability(model: BlipBase, images: torch.Tensor, captions: Sequence[str], *,
                    clean: bool = True) -> torch.Tensor:
    """P(match) for every (image, caption) pair: (num_images, num_captions).

    Captions are cleaned with ``pre_caption`` as in training unless ``clean=False``.
    """
    text_ids, text_atts = model.tokenize(captions, images.device, clean=clean)
    image_embeds = model.encode_image(images)
    num_images, num_texts = image_embeds.shape[0], text_ids.shape[0]
    rows = []
    for i in range(num_images):
        logits = model.itm_logits(image_embeds[i : i + 1].expand(num_texts, -1, -1), text_ids, text_atts)
        rows.append(logits.float().softmax(dim=-1)[:, 1])
    return torch.stack(rows)
