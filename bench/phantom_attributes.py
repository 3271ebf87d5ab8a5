"""What a retrieval model has learned of the phantom figures: attribute by attribute, against chance.

Recall@1 on the phantom test split needs every attribute of a figure right at once (modality,
lesion count, hemisphere, lobe, size, shape, intensity). This looks at the top-1 ITC match of
each test image (image->text) and each caption (text->image) and reports, per attribute, how often
the match agrees with the query's ground truth (``data/phantom_data/metadata.json``), beside the
agreement of a random match. It also states the ceiling: the recall@1 a model reaches if it gets
every attribute right except some it cannot see (e.g. shape and size at a low resolution).

    python bench/phantom_attributes.py --config configs/retrieval_demo.yaml \\
        --checkpoint output/pretrain_demo/checkpoint_last.pth --checkpoint output/retrieval_demo/checkpoint_best.pth

Prints a markdown table and writes it to docs/benchmarks/phantom_attributes.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.machine import publish  # noqa: E402

LESION_ATTRIBUTES = ("hemisphere", "lobe", "size", "shape", "intensity")
ATTRIBUTES = ("modality", "count") + LESION_ATTRIBUTES


def figure_facts(record: Mapping[str, Any]) -> dict[str, Any]:
    """A figure's attributes as comparable values (lesion attributes as sorted tuples: order-free)."""
    facts: dict[str, Any] = {"modality": record["modality"], "count": record["num_lesions"]}
    for name in LESION_ATTRIBUTES:
        facts[name] = tuple(sorted(lesion[name] for lesion in record["lesions"]))
    return facts


def agreement(queries: Sequence[dict], matches: Sequence[dict]) -> dict[str, float]:
    """Per attribute, and for all at once: the fraction of queries whose match has the same value."""
    n = len(queries)
    scores = {name: sum(q[name] == m[name] for q, m in zip(queries, matches)) / n for name in ATTRIBUTES}
    scores["all"] = sum(q == m for q, m in zip(queries, matches)) / n
    return scores


def chance_agreement(figures: Sequence[dict]) -> dict[str, float]:
    """Expected agreement of a uniformly random figure of the split (the query itself included)."""
    n = len(figures)
    scores = {}
    for name in ATTRIBUTES + ("all",):
        counts = Counter(repr(f) if name == "all" else f[name] for f in figures)
        scores[name] = sum(c * c for c in counts.values()) / (n * n)
    return scores


def ceiling_recall(figures: Sequence[dict], unseen: Sequence[str]) -> float:
    """Expected R@1 (image->text) of a model right on every attribute but ``unseen`` (ties: a fair draw)."""
    keys = [tuple((k, v) for k, v in f.items() if k not in unseen) for f in figures]
    counts = Counter(keys)
    return sum(1 / counts[k] for k in keys) / len(keys)


def top1_matches(checkpoint: str, config_path: str, overrides: Sequence[str]) -> tuple[list[int], list[int], Any]:
    """Top-1 ITC text of each test image and top-1 image of each test caption, and the dataset."""
    from engine.config import load_config
    from models.retrieval_eval import compute_features
    from tasks.common import build_task_model
    from tasks.retrieval import RETRIEVAL_SCHEMA, _eval_dataset

    config = load_config(config_path, [f"pretrained={checkpoint}", "device=cpu", *overrides], RETRIEVAL_SCHEMA)
    dataset = _eval_dataset(config, config["test_file"])
    model = build_task_model("retrieval", config, torch.device("cpu")).eval()
    with torch.no_grad():
        sims = compute_features(model, dataset, batch_size=config["batch_size_test"],
                                max_length=config["max_length"]).sims()
    return sims.argmax(dim=1).tolist(), sims.argmax(dim=0).tolist(), dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/retrieval_demo.yaml")
    parser.add_argument("--checkpoint", action="append", required=True, help="repeat to compare checkpoints")
    parser.add_argument("--metadata", default="data/phantom_data/metadata.json")
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/phantom_attributes.md"))
    parser.add_argument("overrides", nargs="*", help="config key=value (e.g. image_size=96)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    by_image = {r["image"]: r for r in json.loads(Path(args.metadata).read_text())["images"]}
    rows, figures = [], None
    for checkpoint in args.checkpoint:
        text_of_image, image_of_text, dataset = top1_matches(checkpoint, args.config, args.overrides)
        test = json.loads(Path(dataset.path).read_text())
        figures = [figure_facts(by_image[record["image"]]) for record in test]
        caption_figures = [figures[i] for i in dataset.txt2img]
        rows.append((f"{checkpoint} image->text", agreement(figures, [caption_figures[j] for j in text_of_image])))
        rows.append((f"{checkpoint} text->image", agreement(caption_figures, [figures[i] for i in image_of_text])))
    rows.append(("chance (a random match)", chance_agreement(figures)))

    lines = [f"# What the model has learned of the phantom figures, attribute by attribute",
             "", f"`python bench/phantom_attributes.py --config {args.config} "
             + " ".join(f"--checkpoint {c}" for c in args.checkpoint) + (" " + " ".join(args.overrides) if
                                                                           args.overrides else "") + "`",
             "", f"Test split: {len(figures)} figures, {len(caption_figures)} captions. Each cell: the fraction "
             "of queries whose top-1 ITC match has the query's value of that attribute (lesion attributes "
             "compared as sets over the figure's lesions); `all` is every attribute at once, i.e. a match "
             "as good as the right one.", "",
             "| model, direction | " + " | ".join(ATTRIBUTES) + " | all |",
             "| --- |" + " ---: |" * (len(ATTRIBUTES) + 1)]
    for name, scores in rows:
        lines.append(f"| {name} | " + " | ".join(f"{scores[a]:.3f}" for a in ATTRIBUTES + ("all",)) + " |")
    lines += ["", "Ceiling: image->text R@1 of a model right on every attribute except those it cannot see "
              "(ties broken by a fair draw).", "", "| unseen | R@1 ceiling |", "| --- | ---: |"]
    for unseen in [(), ("shape",), ("size",), ("shape", "size"), ("shape", "size", "intensity"),
                   ("hemisphere", "lobe")]:
        lines.append(f"| {', '.join(unseen) or 'none'} | {ceiling_recall(figures, unseen):.3f} |")
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
