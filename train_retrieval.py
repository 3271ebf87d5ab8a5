"""BLIP retrieval fine-tuning and evaluation (ITC ranking, ITM re-ranking, recall@K).

    python train_retrieval.py --config configs/retrieval_demo.yaml                  # fine-tune, then test
    torchrun --nproc_per_node=8 train_retrieval.py --config configs/retrieval_coco.yaml
    python train_retrieval.py --config FILE --evaluate pretrained=CHECKPOINT        # BLIP's metric dict, no training
    python train_retrieval.py --config FILE --evaluate --itc_only ...               # ITC ranking only (quick)

BLIP's configs/retrieval_coco.yaml and retrieval_flickr.yaml run unchanged (ann_root + dataset + image_root).
Every config key: README.md, section Retrieval.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli import build_parser, run_cli
from engine.distributed import launch_rank
from engine.loop import RunResult
from models.retrieval_eval import describe
from tasks.retrieval import RetrievalTask, evaluate_checkpoint


def _print_results(results: dict[str, dict[str, float]]) -> None:
    for split, metrics in results.items():
        model = {k[len(split) + 1:]: v for k, v in metrics.items() if k.startswith(f"{split}_")}
        chance = {k[len(split) + 8:]: v for k, v in metrics.items() if k.startswith(f"chance_{split}_")}
        blip_keys = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean",
                     "r_mean")
        print(f"{split}: {{{', '.join(f'{k!r}: {model[k]}' for k in blip_keys)}}}")
        for line in describe(model, chance):
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("train_retrieval.py", __doc__)
    parser.add_argument("--evaluate", action="store_true", help="evaluate pretrained= on val/test; no training")
    parser.add_argument("--itc_only", action="store_true", help="with --evaluate: ITC ranking only, no ITM re-ranking")

    def evaluate_only(args: argparse.Namespace, config: dict[str, Any]) -> bool:
        if not args.evaluate:
            return False
        results = evaluate_checkpoint(config, itc_only=args.itc_only)
        if launch_rank() == 0:
            _print_results(results)
            print(f"results: {config['output_dir']}/evaluate.json, {config['output_dir']}/evaluate_recall.png")
        return True

    return run_cli(RetrievalTask(), argv, prog="train_retrieval.py", description=__doc__, parser=parser,
                   summary=test_summary, instead_of_training=evaluate_only)


def test_summary(task: RetrievalTask, config: dict[str, Any], result: RunResult) -> list[str]:
    """The test split's numbers (already in the log) as BLIP's dict, for the console."""
    if not result.final_metrics:
        return []
    metrics = {k: v for k, v in result.final_metrics.items() if k.startswith(("test_", "chance_test_"))}
    return [f"test: {{{', '.join(f'{k[5:]!r}: {v:.2f}' for k, v in metrics.items() if k.startswith('test_') and 'rank' not in k)}}}"]


if __name__ == "__main__":
    sys.exit(main())
