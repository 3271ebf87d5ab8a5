"""Benchmark the phantom generator: wall time, images/s and disk size for the demo-size dataset.

    python bench/bench_phantom.py [--num_train 3000 --num_val 200 --num_test 200 --workers 1 2 --repeats 3]

Prints a markdown table and writes it to docs/benchmarks/phantom.md. Each
configuration is generated ``--repeats`` times into a fresh temp folder; the
median wall time is reported (the machine may be shared, so single runs are noisy).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402

import numpy as np  # noqa: E402

from bench.machine import cpu_name, publish  # noqa: E402
from data.phantom import generate_phantom_dataset  # noqa: E402

importlib.import_module("models.tokenizer")  # imports transformers (~4 s) before timing: not generation work


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_train", type=int, default=3000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/phantom.md"))
    args = parser.parse_args()

    total_images = args.num_train + args.num_val + args.num_test
    load_before = os.getloadavg()[0]
    rows = []
    for workers in args.workers:
        times, size = [], 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "phantom"
                started = time.perf_counter()
                generate_phantom_dataset(out, num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
                                         image_size=args.image_size, workers=workers)
                times.append(time.perf_counter() - started)
                size = _disk_bytes(out)
        median = statistics.median(times)
        split_sizes = f"{args.num_train}/{args.num_val}/{args.num_test}"
        rows.append(f"| {total_images} ({split_sizes}) | {args.image_size} | {workers} | {median:.1f} "
                    f"| {min(times):.1f}-{max(times):.1f} | {total_images / median:.0f} | {size / 2**20:.1f} |")
        print(rows[-1], flush=True)

    header = ("| images (train/val/test) | px | workers | total s (median) | range s | images/s | disk MiB |\n"
              "| --- | --- | --- | --- | --- | --- | --- |")
    table = header + "\n" + "\n".join(rows)
    text = (
        "# Phantom generator benchmark\n\n"
        f"`python bench/bench_phantom.py` on {datetime.date.today().isoformat()}: {cpu_name()}, "
        f"{os.cpu_count()} logical CPUs shared with other jobs (1-min load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after the runs, so timings are noisy and 2 workers cannot double the speed), "
        f"Python {platform.python_version()}, numpy {np.__version__}. "
        f"Median of {args.repeats} runs, each into a fresh folder; total time covers rendering, PNG writing, "
        "JSON splits, metadata, tokenizer and manifest (the one-off ~4 s `transformers` import is excluded).\n\n"
        f"{table}\n"
    )
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
