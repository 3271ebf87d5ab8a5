"""BLIP's pretraining model: ITC with momentum distillation + ITM with hard negatives + LM.

Losses follow BLIP's ``BLIP_Pretrain.forward`` exactly (targets, queues,
sampling weights, ``[ENC]``/``[DEC]`` handling), with its faults fixed: hard
negatives cannot crash on degenerate weights, any queue size works, and no
process group is needed. The decoder shares every weight with the text encoder
except self-attention (BLIP's ``tie_encoder_decoder_weights``); shared tensors
appear under both names in the state dict, as in BLIP's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.blip_base import BlipBase
from models.losses import distilled_targets, itc_loss, similarity_logits
from models.med import MedLMHeadModel, MedModel
from engine.distributed import concat_all_gather

__all__ = ["BlipPretrain", "tie_encoder_decoder"]


def tie_encoder_decoder(encoder: MedModel, decoder: MedModel) -> None:
    """Make ``decoder`` use ``encoder``'s modules everywhere except its self-attention."""
    if len(encoder.encoder.layer) != len(decoder.encoder.layer):
        raise ValueError("encoder and decoder must have the same number of layers to share weights")
    decoder.embeddings = encoder.embeddings
    for enc_layer, dec_layer in zip(encoder.encoder.layer, decoder.encoder.layer):
        dec_layer.crossattention = enc_layer.crossattention
        dec_layer.intermediate = enc_layer.intermediate
        dec_layer.output = enc_layer.output


class BlipPretrain(BlipBase):
    """ViT + fusion encoder + decoder with ITC/ITM/LM losses. See :class:`BlipBase` for arguments."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.text_decoder = MedLMHeadModel(self.med_config, self.text_encoder.encoder.layer[0].attention.self.attn_impl)
        tie_encoder_decoder(self.text_encoder, self.text_decoder.bert)
        self.text_decoder.tie_weights()
        self._create_momentum_copies(["visual_encoder", "vision_proj", "text_encoder", "text_proj"])
        embed_dim = self.vision_proj.out_features
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def _queues(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [self.image_queue, self.text_queue], self.queue_ptr

    def forward(
        self, image: torch.Tensor, text_ids: torch.Tensor, text_atts: torch.Tensor, alpha: float,
        *, update_momentum: bool = True, defer_enqueue: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss_ita", "loss_itm", "loss_lm"}`` for a batch.

        ``text_ids`` start with [CLS] and are padded with [PAD] (``text_atts`` 0).
        ``update_momentum``: take the momentum encoders' EMA step first (BLIP: every call; the
        training loop: once per optimizer step). ``defer_enqueue``: hold this batch's momentum
        features until :meth:`commit_queue` (the loop enqueues only finite steps).
        """
        self.clamp_temperature()
        batch = image.shape[0]

        image_embeds = self.encode_image(image)
        image_feat = self.image_features(image_embeds)
        text_embeds = self.encode_text(text_ids, text_atts)
        text_feat = self.text_features(text_embeds)

        # ----- ITC with momentum distillation -----
        with torch.no_grad():
            if update_momentum:
                self.momentum_update()
            image_feat_m = self.image_features(self.encode_image(image, momentum=True), momentum=True)
            text_feat_m = self.text_features(self.encode_text(text_ids, text_atts, momentum=True), momentum=True)
            image_feat_all = torch.cat([image_feat_m.t(), self.image_queue.clone()], dim=1)
            text_feat_all = torch.cat([text_feat_m.t(), self.text_queue.clone()], dim=1)
            positives = torch.zeros(batch, image_feat_all.shape[1], device=image.device)
            positives.fill_diagonal_(1)
            targets_i2t = distilled_targets(similarity_logits(image_feat_m, text_feat_all, self.temp), positives, alpha)
            targets_t2i = distilled_targets(similarity_logits(text_feat_m, image_feat_all, self.temp), positives, alpha)

        sim_i2t = similarity_logits(image_feat, text_feat_all, self.temp)
        sim_t2i = similarity_logits(text_feat, image_feat_all, self.temp)
        loss_ita = itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
        self.enqueue([concat_all_gather(image_feat_m), concat_all_gather(text_feat_m)], defer=defer_enqueue)

        # ----- ITM with one hard negative image per text and text per image -----
        with torch.no_grad():
            if self.negative_all_rank:
                world_image_feat = concat_all_gather(image_feat)
                world_text_feat = concat_all_gather(text_feat)
                neg_i2t = similarity_logits(image_feat, world_text_feat.t(), self.temp)
                neg_t2i = similarity_logits(text_feat, world_image_feat.t(), self.temp)
                own = torch.arange(batch, device=image.device) + self.local_offset(batch)
                exclude = own[:, None] == torch.arange(neg_i2t.shape[1], device=image.device)[None, :]
            else:
                # BLIP samples from the batch columns of the ITC similarities (momentum text/image features).
                neg_i2t, neg_t2i = sim_i2t[:, :batch], sim_t2i[:, :batch]
                exclude = torch.eye(batch, dtype=torch.bool, device=image.device)
        loss_itm = self.hard_negative_itm_loss(
            image_embeds, text_ids, text_atts, neg_i2t, neg_t2i, exclude, smoothing=1e-4,
            all_rank=self.negative_all_rank,
        )

        # ----- LM: [DEC] replaces [CLS]; padding ignored -----
        decoder_ids = text_ids.clone()
        decoder_ids[:, 0] = self.special_tokens.bos
        labels = decoder_ids.masked_fill(decoder_ids == self.special_tokens.pad, -100)
        loss_lm = self.text_decoder(decoder_ids, text_atts, encoder_hidden_states=image_embeds, labels=labels).loss

        return {"loss_ita": loss_ita, "loss_itm": loss_itm, "loss_lm": loss_lm}
