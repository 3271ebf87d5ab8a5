"""BLIP's retrieval evaluation written out plainly, per query, as its train_retrieval.py does it.

The independent reference the fast evaluation (``models/retrieval_eval.py``) is tested and
benchmarked against: features once, then for every image its top-k texts and for every text its
top-k images re-scored one query at a time, two matrices, ranks from ``np.argsort``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def blip_reference(model, dataset, k_test: int, batch_size: int = 64):
    """BLIP's evaluation() + itm_eval() written out plainly: per query, argsort ranks, two matrices."""
    texts = dataset.texts
    tok = model.tokenizer(texts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        text_embeds = torch.cat([
            F.normalize(model.text_proj(model.text_encoder(tok.input_ids[s:s + batch_size],
                                                           tok.attention_mask[s:s + batch_size])
                                        .last_hidden_state[:, 0, :]), dim=-1)
            for s in range(0, len(texts), batch_size)])
        text_ids = tok.input_ids.clone()
        text_ids[:, 0] = model.special_tokens.enc
        image_feats = torch.cat([
            model.visual_encoder.forward_features(torch.stack([dataset[i][0] for i in range(s, min(s + batch_size,
                                                                                                len(dataset)))]))
            for s in range(0, len(dataset), batch_size)])
        image_embeds = F.normalize(model.vision_proj(image_feats[:, 0, :]), dim=-1)
        sims = image_embeds @ text_embeds.t()
        i2t = torch.full((len(dataset), len(texts)), -100.0)
        for i, row in enumerate(sims):
            topk_sim, topk_idx = row.topk(k=min(k_test, len(texts)))
            out = model.text_encoder(text_ids[topk_idx], tok.attention_mask[topk_idx],
                                     encoder_hidden_states=image_feats[i].repeat(len(topk_idx), 1, 1))
            i2t[i, topk_idx] = model.itm_head(out.last_hidden_state[:, 0, :])[:, 1] + topk_sim
        t2i = torch.full((len(texts), len(dataset)), -100.0)
        for t, row in enumerate(sims.t()):
            topk_sim, topk_idx = row.topk(k=min(k_test, len(dataset)))
            out = model.text_encoder(text_ids[t].repeat(len(topk_idx), 1), tok.attention_mask[t].repeat(len(topk_idx), 1),
                                     encoder_hidden_states=image_feats[topk_idx])
            t2i[t, topk_idx] = model.itm_head(out.last_hidden_state[:, 0, :])[:, 1] + topk_sim
    i2t, t2i = i2t.numpy(), t2i.numpy()
    ranks = np.zeros(i2t.shape[0])
    for index, score in enumerate(i2t):
        inds = np.argsort(score)[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in dataset.img2txt[index])
    tr = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    ranks = np.zeros(t2i.shape[0])
    for index, score in enumerate(t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == dataset.txt2img[index])[0][0]
    ir = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    result = dict(zip(["txt_r1", "txt_r5", "txt_r10"], tr), **dict(zip(["img_r1", "img_r5", "img_r10"], ir)))
    result["txt_r_mean"], result["img_r_mean"] = sum(tr) / 3, sum(ir) / 3
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return result, i2t, t2i
