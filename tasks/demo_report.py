"""The end of ``make demo``: zero-shot and fine-tuned retrieval on the phantom test split, next to chance.

    python -m tasks.demo_report --zero_shot output/zero_shot_demo/evaluate.json \
        --fine_tuned output/retrieval_demo/results.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = ["report", "main"]


def _split(results: dict, prefix: str) -> tuple[dict, dict]:
    metrics = {k[len(prefix) + 1:]: v for k, v in results.items() if k.startswith(f"{prefix}_")}
    chance = {k[len(prefix) + 8:]: v for k, v in results.items() if k.startswith(f"chance_{prefix}_")}
    return metrics, chance


def _itc(metrics: dict) -> dict:
    """The ``itc_*`` metrics (the ranking before ITM re-ranking), without the prefix."""
    return {k[4:]: v for k, v in metrics.items() if k.startswith("itc_")}


def report(zero_shot: dict, fine_tuned: dict) -> list[str]:
    """A table: R@1/5/10 both ways and r_mean, for chance, zero-shot and fine-tuned (test split)."""
    zs, chance = _split(zero_shot["test"], "test")
    ft, _ = _split(fine_tuned["test"], "test")
    rows = ["phantom test split, BLIP's evaluation (ITC ranking, then the top k_test re-ranked by ITM + ITC);",
            "'ITC only': the same features ranked by cosine alone, before the re-ranking:",
            f"  {'':22}{'txt R@1':>9}{'R@5':>7}{'R@10':>7}{'img R@1':>9}{'R@5':>7}{'R@10':>7}{'r_mean':>8}"]
    sources = [("chance", chance), ("zero-shot", zs), ("zero-shot, ITC only", _itc(zs)),
               ("fine-tuned", ft), ("fine-tuned, ITC only", _itc(ft))]
    for label, values in sources:
        if not values:
            continue
        cells = [values.get(f"{d}_r{k}") for d in ("txt", "img") for k in (1, 5, 10)]
        r_mean = values.get("r_mean")
        if r_mean is None and all(c is not None for c in cells):
            r_mean = sum(cells) / 6
        text = "".join(f"{c:{9 if i % 3 == 0 else 7}.1f}" for i, c in enumerate(cells))
        rows.append(f"  {label:<22}{text}{r_mean:8.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.demo_report", description=__doc__.splitlines()[0])
    parser.add_argument("--zero_shot", required=True, type=Path)
    parser.add_argument("--fine_tuned", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        zero_shot = read_json_file(args.zero_shot, what="zero-shot results", error=DatasetError, missing=DatasetError)
        fine_tuned = read_json_file(args.fine_tuned, what="fine-tuning results", error=DatasetError,
                                    missing=DatasetError)
    except DatasetError as exc:
        print(f"demo_report: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report(zero_shot, fine_tuned)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
