"""Retrieval evaluation: ITC similarity matrix and BLIP's recall@K metrics.

``itc_similarity_matrix`` embeds every image and caption of a split once and
returns the full (images x texts) cosine matrix; ``recall_at_k`` turns a score
matrix into BLIP's ``txt_r1 ... r_mean`` (percent). The ITM re-ranking of the
top-k candidates (BLIP's full procedure) builds on the same matrix.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.retrieval_dataset import RetrievalEvalDataset
from models.blip_base import BlipBase

__all__ = ["itc_similarity_matrix", "recall_at_k", "chance_recall"]


@torch.no_grad()
def itc_similarity_matrix(
    model: BlipBase,
    dataset: RetrievalEvalDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(num_images, num_texts) cosine similarities of projected [CLS] features, float32 on CPU."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    text_feats = []
    with amp:
        for captions in dataset.text_batches(batch_size):
            ids, atts = model.tokenize(captions, device)
            text_feats.append(model.text_features(model.encode_text(ids, atts)))
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        image_feats = []
        for images, _ in loader:
            image_feats.append(model.image_features(model.encode_image(images.to(device))))
    model.train(was_training)
    return (torch.cat(image_feats) @ torch.cat(text_feats).t()).float().cpu()


def recall_at_k(
    scores_i2t: torch.Tensor | np.ndarray,
    img2txt: Sequence[Sequence[int]],
    txt2img: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """BLIP's ``itm_eval``: an image's text rank is the best rank of any of its captions.

    Returns percentages ``txt_r{k}``, ``img_r{k}``, their means and ``r_mean``.
    """
    scores = torch.as_tensor(scores_i2t, dtype=torch.float32)
    num_images, num_texts = scores.shape
    # rank of each text for each image: position in the descending order
    order = scores.argsort(dim=1, descending=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(num_texts).expand(num_images, -1).contiguous())
    txt_rank = torch.tensor([int(position[i, img2txt[i]].min()) for i in range(num_images)])
    order_t = scores.t().argsort(dim=1, descending=True)
    pos_t = torch.empty_like(order_t)
    pos_t.scatter_(1, order_t, torch.arange(num_images).expand(num_texts, -1).contiguous())
    img_rank = pos_t[torch.arange(num_texts), torch.as_tensor(txt2img)]
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"txt_r{k}"] = 100.0 * float((txt_rank < k).float().mean())
    for k in ks:
        metrics[f"img_r{k}"] = 100.0 * float((img_rank < k).float().mean())
    metrics["txt_r_mean"] = sum(metrics[f"txt_r{k}"] for k in ks) / len(ks)
    metrics["img_r_mean"] = sum(metrics[f"img_r{k}"] for k in ks) / len(ks)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    return metrics


def chance_recall(img2txt: Sequence[Sequence[int]], num_texts: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Expected recall@K (percent) of a random ranking, for comparison with :func:`recall_at_k`.

    Text retrieval: P(at least one of an image's c captions in the top K of T) =
    1 - C(T-c, K) / C(T, K), averaged over images; image retrieval: K / N.
    """
    num_images = len(img2txt)
    out = {}
    for k in ks:
        hits = [1.0 - math.comb(num_texts - len(c), k) / math.comb(num_texts, k) if k <= num_texts else 1.0
                for c in img2txt]
        out[f"txt_r{k}"] = 100.0 * sum(hits) / num_images
    for k in ks:
        out[f"img_r{k}"] = 100.0 * min(1.0, k / num_images)
    return out
