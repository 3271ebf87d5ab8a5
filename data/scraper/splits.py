"""Training lists from the cleaned figures: BLIP pretrain list + retrieval split by article.

The retrieval split is by *article* (PMCID): panels and figures of one paper
share authors, style and wording, so letting them straddle train and test
would inflate retrieval scores. Articles are shuffled with a fixed seed and
cut by count; with at least three articles, val and test get at least one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from utils.atomic import atomic_write_json
from utils.json_file import read_json_file

__all__ = ["load_records", "rebase_records", "split_by_article", "retrieval_lists", "write_lists", "article_key"]


def load_records(path: Path) -> list[dict[str, Any]]:
    """A BLIP-format JSON list; clear error naming the file and the bad record."""
    data = read_json_file(path, what="record list")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, record in enumerate(data):
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("image"), str)
            or not isinstance(record.get("caption"), str)
        ):
            raise ValueError(f"{path}: record {index} needs string 'image' and 'caption' fields, got {record!r:.200}")
    return data


def rebase_records(records: list[dict[str, Any]], from_dir: Path, to_dir: Path) -> list[dict[str, Any]]:
    """Rewrite relative ``image`` paths written for ``from_dir`` so they resolve from ``to_dir``."""
    out = []
    for record in records:
        image = record["image"]
        if not os.path.isabs(image):
            image = os.path.relpath(os.path.normpath(from_dir / image), to_dir)
        out.append({**record, "image": Path(image).as_posix()})
    return out


def article_key(record: dict[str, Any]) -> str:
    """What ties records to one article: PMCID, else DOI, else the parent or own image."""
    return str(record.get("pmcid") or record.get("doi") or record.get("parent") or record["image"])


def split_by_article(
    records: list[dict[str, Any]], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Partition records into train/val/test so that no article is in two parts."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    train_r, val_r, test_r = (r / total for r in ratios)
    articles = sorted({article_key(r) for r in records})
    random.Random(seed).shuffle(articles)
    n = len(articles)
    n_test = round(n * test_r)
    n_val = round(n * val_r)
    if n >= 3:
        n_test = max(n_test, 1) if test_r > 0 else 0
        n_val = max(n_val, 1) if val_r > 0 else 0
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    test_ids = set(articles[:n_test])
    val_ids = set(articles[n_test : n_test + n_val])
    train, val, test = [], [], []
    for record in records:
        key = article_key(record)
        (test if key in test_ids else val if key in val_ids else train).append(record)
    return train, val, test


def _image_id(record: dict[str, Any]) -> str:
    return Path(record["image"]).with_suffix("").as_posix()


def retrieval_lists(
    records: list[dict[str, Any]], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """BLIP Karpathy format: train ``{image, caption, image_id}``, val/test ``{image, caption: [...]}``.

    Records sharing an image (several captions) are merged in val/test.
    ``pmcid`` is kept on every entry for traceability.
    """
    train, val, test = split_by_article(records, ratios, seed)
    train_out = [
        {"image": r["image"], "caption": r["caption"], "image_id": _image_id(r), "pmcid": r.get("pmcid", "")}
        for r in train
    ]

    def grouped(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_image: dict[str, dict[str, Any]] = {}
        for r in part:
            entry = by_image.setdefault(r["image"], {"image": r["image"], "caption": [], "pmcid": r.get("pmcid", "")})
            if r["caption"] not in entry["caption"]:
                entry["caption"].append(r["caption"])
        return list(by_image.values())

    return {"train": train_out, "val": grouped(val), "test": grouped(test)}


def write_lists(
    out_dir: Path,
    records: list[dict[str, Any]],
    *,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, int]:
    """Write ``pretrain.json`` and ``retrieval_{train,val,test}.json`` atomically; return sizes."""
    atomic_write_json(out_dir / "pretrain.json", records, indent=1)
    parts = retrieval_lists(records, ratios, seed)
    for name, part in parts.items():
        atomic_write_json(out_dir / f"retrieval_{name}.json", part, indent=1)
    return {
        "pretrain": len(records),
        **{name: len(part) for name, part in parts.items()},
        "articles": len({article_key(r) for r in records}),
    }
