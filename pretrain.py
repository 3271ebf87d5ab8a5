"""BLIP pretraining (ITC + ITM + LM) of a ViT + BERT fusion model.

    python pretrain.py --config configs/pretrain_demo.yaml                 # one process, CPU or one GPU
    torchrun --nproc_per_node=8 pretrain.py --config configs/pretrain.yaml # DDP
    python pretrain.py --config FILE --output_dir DIR --resume key=value ...

Every config key, launch lines for multi-node and SLURM: README.md, section Pretraining.
"""

from __future__ import annotations

import argparse
import sys

from data.pretrain_dataset import DatasetError
from models import CheckpointError, TokenizerError
from utils.checkpointing import CheckpointError as ResumeError
from utils.config import ConfigError, load_config
from utils.logger import read_log
from utils.trainer import TrainingError, run_pretraining


def retrieval_summary(epoch_line: dict, eval_file: str) -> str:
    """The zero-shot ITC recall of the last epoch next to the chance level, as a small table."""
    rows = [f"zero-shot ITC retrieval on {eval_file} (after epoch {epoch_line.get('epoch')}):",
            f"  {'':22}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
    for direction, key in (("image -> text", "txt"), ("text -> image", "img")):
        for source, label in (("eval", "model"), ("chance", "chance")):
            values = [epoch_line.get(f"{source}_{key}_r{k}") for k in (1, 5, 10)]
            cells = "".join(f"{v:7.1f}%" if v is not None else f"{'-':>8}" for v in values)
            rows.append(f"  {direction:<14}{label:<8}{cells}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--output_dir", help="overrides output_dir of the config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoint_last.pth at the exact step (fresh start if none)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, values read as YAML")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        config = load_config(args.config, overrides)
        result = run_pretraining(config, resume=args.resume)
    except (ConfigError, DatasetError, CheckpointError, ResumeError, TokenizerError, TrainingError) as exc:
        print(f"pretrain.py: error: {exc}", file=sys.stderr)
        return 1
    where = result.output_dir
    _, epochs = read_log(where / "log.txt")
    if config.get("eval_file") and epochs and "eval_txt_r1" in epochs[-1] and not result.stopped_by_signal:
        print(retrieval_summary(epochs[-1], config["eval_file"]))
    state = "stopped by signal" if result.stopped_by_signal else "finished"
    print(f"{state} at epoch {result.epoch}, global step {result.global_step}; "
          f"checkpoint {result.checkpoint or where / 'checkpoint_last.pth'}, log {where / 'log.txt'}, "
          f"plot {where / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
