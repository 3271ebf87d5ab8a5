"""The command line every training script shares: config + overrides in, a run or a config check out.

    python pretrain.py --config FILE [--output_dir DIR] [--resume] [key=value ...]
    python pretrain.py --config FILE --check [key=value ...]   # validate, print the resolved config
                                                               # (and, as comments, where each path was found)
    python pretrain.py --config_table                          # the README's key table

Problems a user can fix (:class:`utils.errors.MedVLPError`) end as one line
``script: error: ...`` and exit status 1; only bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.config import dump_config, read_config_sources, schema_markdown, validate_config
from engine.distributed import launch_rank
from engine.loop import RunResult, Trainer
from engine.task import Task
from utils.errors import ConfigError, MedVLPError

__all__ = ["build_parser", "run_cli", "load_cli_config", "finished_message"]


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (see configs/)")
    parser.add_argument("--output_dir", help="overrides output_dir of the config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoint_last.pth at the exact step (fresh start if none)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config (with overrides) and print it with every default filled in")
    parser.add_argument("--config_table", action="store_true", help="print the config key table (markdown)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, values read as YAML")
    return parser


def load_cli_config(task: Task, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The validated config and notes about where some of its values came from."""
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    raw, sources, origin = read_config_sources(args.config, overrides)
    path_notes: list[str] = []
    config = validate_config(raw, task.schema, sources=sources, origin=origin, config_file=args.config,
                             notes=path_notes)
    args.path_notes = path_notes  # --check prints them: which folder each relative path was found in
    notes = []
    eval_source = sources.get("eval_file", "")
    if (config.get("eval_file") and sources.get("train_file", "").startswith("command-line")
            and not eval_source.startswith("command-line")):
        notes.append(f"note: train_file was set on the command line but eval_file ({config['eval_file']}) comes "
                     f"from {eval_source or 'the defaults'}; set eval_file=... (or eval_file=null) if it does not "
                     "belong to your data")
    return config, notes


def _print_safely(text: str) -> None:
    """Print to stdout; a closed pipe (``... | head``) ends quietly instead of with a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stdout = None  # type: ignore[assignment]  # the interpreter must not flush it again at exit


def finished_message(result: RunResult) -> str:
    """The last line: how the run ended and the files it left (only those that exist)."""
    where = result.output_dir
    if result.already_finished:
        state = f"the run in {where} had already finished at epoch {result.epoch}, global step {result.global_step}"
        state += "; nothing to do (add max_epoch=N to train further)"
    else:
        state = ("stopped by signal" if result.stopped_by_signal else "finished")
        state += f" at epoch {result.epoch}, global step {result.global_step}"
    files = [("checkpoint", result.checkpoint or where / "checkpoint_last.pth"),
             ("best checkpoint", result.best_checkpoint), ("log", where / "log.txt"),
             ("plot", where / "loss_curves.png")]
    shown = [f"{name} {path}" for name, path in files if path is not None and Path(path).exists()]
    return state + ("; " + ", ".join(shown) if shown else "")


def run_cli(
    task: Task,
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    summary: Callable[[Task, dict[str, Any], RunResult], list[str]] | None = None,
    parser: argparse.ArgumentParser | None = None,
    instead_of_training: Callable[[argparse.Namespace, dict[str, Any]], bool] | None = None,
) -> int:
    """Parse ``argv``, then check the config or run the task; returns the exit status.

    ``summary``: extra lines printed (rank 0) after a run. ``instead_of_training``: a hook that
    may do the job itself and return True (``train_retrieval.py --evaluate``).
    """
    parser = parser or build_parser(prog, description)
    # intermixed: a flag may follow key=value overrides (``... pretrained=X --itc_only output_dir=Y``)
    args = parser.parse_intermixed_args(argv)
    if args.config_table:
        _print_safely(schema_markdown(task.schema))
        return 0
    if not args.config:
        parser.error("--config is required")
    try:
        config, notes = load_cli_config(task, args)
        if args.check:
            import io

            buffer = io.StringIO()
            buffer.writelines(f"# {note}\n" for note in args.path_notes)
            dump_config(config, buffer)
            _print_safely(buffer.getvalue())
            return 0
        main_rank = launch_rank() == 0
        if main_rank:
            for note in notes:
                print(note, flush=True)
        if instead_of_training is not None and instead_of_training(args, config):
            return 0
        result = Trainer(task, config, resume=args.resume).run()
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2 if args.check else 1
    except MedVLPError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if main_rank:
        if summary is not None and not result.stopped_by_signal:
            for line in summary(task, config, result):
                print(line)
        print(finished_message(result), flush=True)
    return 0
