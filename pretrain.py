"""BLIP pretraining (ITC + ITM + LM) of a ViT + BERT fusion model.

    python pretrain.py --config configs/pretrain_demo.yaml                 # one process, CPU or one GPU
    torchrun --nproc_per_node=8 pretrain.py --config configs/pretrain.yaml # DDP
    python pretrain.py --config FILE --output_dir DIR --resume key=value ...
    python pretrain.py --config FILE --check key=value ...                 # validate and print the config

Every config key, launch lines for multi-node and SLURM: README.md, section Pretraining.
"""

from __future__ import annotations

import sys
from typing import Any

from engine.cli import run_cli
from engine.logger import read_log
from engine.loop import RunResult
from tasks.pretrain import PretrainTask


def retrieval_summary(task: PretrainTask, config: dict[str, Any], result: RunResult) -> list[str]:
    """The zero-shot ITC recall of the last epoch next to the chance level, as a small table."""
    _, epochs = read_log(result.output_dir / "log.txt")
    if not config.get("eval_file") or not epochs or "eval_txt_r1" not in epochs[-1]:
        return []
    line = epochs[-1]
    rows = [f"zero-shot ITC retrieval on {config['eval_file']} (after epoch {line.get('epoch')}):",
            f"  {'':22}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
    for direction, key in (("image -> text", "txt"), ("text -> image", "img")):
        for source, label in (("eval", "model"), ("chance", "chance")):
            values = [line.get(f"{source}_{key}_r{k}") for k in (1, 5, 10)]
            cells = "".join(f"{v:7.1f}%" if v is not None else f"{'-':>8}" for v in values)
            rows.append(f"  {direction:<14}{label:<8}{cells}")
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_cli(PretrainTask(), argv, prog="pretrain.py", description=__doc__, summary=retrieval_summary)


if __name__ == "__main__":
    sys.exit(main())
