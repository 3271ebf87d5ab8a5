"""Data pipeline throughput: samples/s of PretrainDataset (decode + BLIP train transform) and the sampler.

Shows whether data loading can feed the GPU: ``num_workers`` per GPU should be at least the training rate
(samples/s per GPU, printed by pretrain.py) divided by the single-process rate below.

    python bench/bench_data_pipeline.py [--images 200] [--size 512] [--repeats 3]

Prints a markdown table and writes it to docs/benchmarks/data_pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import median_rate, publish  # noqa: E402
from data.pretrain_dataset import PretrainDataset, build_pretrain_loader  # noqa: E402
from data.sampler import ResumableDistributedSampler  # noqa: E402
from data.transforms import build_image_transform  # noqa: E402


def _make_images(folder: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        # smooth grayscale "scan" + noise, saved as JPEG like most figures
        y, x = np.mgrid[0:size, 0:size] / size
        arr = 128 + 100 * np.sin(6 * x + i) * np.cos(4 * y) + rng.normal(0, 12, (size, size))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
        name = f"img{i:04d}.jpg"
        img.save(folder / name, quality=90)
        records.append({"image": name, "caption": f"axial ct slice {i} with a lesion in the left lobe"})
    ann = folder / "data.json"
    ann.write_text(json.dumps(records))
    return ann


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="docs/benchmarks/data_pipeline.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ann = _make_images(Path(tmp), args.images, args.size)
        for label, kind, randaug in (
            ("test transform (resize)", "test", False),
            ("train: crop only", "pretrain", False),
            ("train: crop + RandomAugment(2,5)", "pretrain", True),
        ):
            ds = PretrainDataset(ann, build_image_transform(kind, args.image_size, randaugment=randaug))
            rate = median_rate(lambda: [ds[(i, 0)] for i in range(len(ds))], len(ds), args.repeats)
            rows.append((f"{label}, 1 process", f"{rate:.0f}"))
        ds = PretrainDataset(ann, build_image_transform("pretrain", args.image_size))
        loader = build_pretrain_loader(ds, batch_size=20, num_workers=args.workers, seed=0)
        loader.set_epoch(0)
        list(loader)  # start the persistent workers
        n = len(loader) * 20

        def epoch() -> None:
            for _ in loader:
                pass

        rate = median_rate(epoch, n, args.repeats)
        rows.append((f"DataLoader, {args.workers} workers, batch 20, full train transform", f"{rate:.0f}"))

    big = ResumableDistributedSampler(14_000_000, num_replicas=8, rank=0, with_epoch=True)
    rate = median_rate(lambda: sum(1 for _ in big), len(big), 1)
    rows.append(("sampler: 14M records / 8 ranks, indices per second per rank", f"{rate / 1e6:.1f} M"))

    header = (
        f"Data pipeline throughput ({args.images} JPEG {args.size}x{args.size} grayscale images -> "
        f"{args.image_size}px tensors; median of {args.repeats}; torch threads 1; {os.cpu_count()} CPU cores, "
        f"{platform.processor() or platform.machine()}; shared machine, timings noisy)"
    )
    table = "| pipeline | samples/s |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
    text = f"# Data pipeline benchmark\n\n{header}\n\n{table}\nCommand: `python bench/bench_data_pipeline.py`\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
