"""Command line for the splitter, shared by ``python -m data.subfigure`` and ``scrape.py split``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data.subfigure.dataset import REPORT_FILE, SUBFIGURES_FILE, split_dataset

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the splitter's options to ``parser`` (scrape.py's ``split`` subcommand reuses them)."""
    parser.add_argument("--input", required=True, help="BLIP-format JSON list of {'image', 'caption', ...} records")
    parser.add_argument("--out", required=True, help="output folder for crops/, subfigures.json and split_report.json")
    parser.add_argument("--image_root", default=None, help="folder relative image paths resolve against "
                        "(default: the input file's folder)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one OCR engine and one thread each)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a split from parsed arguments; print the report. Returns the exit status."""
    if args.workers < 1:
        print(f"--workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        report = split_dataset(
            args.input, args.out, image_root=args.image_root, workers=args.workers, progress=not args.no_progress
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k != "skipped_examples"}, indent=1))
    for line in report["skipped_examples"]:
        print(f"skipped {line}", file=sys.stderr)
    print(f"wrote {args.out}/{SUBFIGURES_FILE} and {args.out}/{REPORT_FILE}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m data.subfigure",
        description="Split compound figures into panels with subcaptions (BLIP-format in, BLIP-format out).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
