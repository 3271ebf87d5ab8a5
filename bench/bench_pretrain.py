"""Pretraining throughput and peak memory of the demo model on this machine, per precision and attention path.

Each variant runs ``pretrain.py``'s training loop (tasks.pretrain.run_pretraining) in its own process on the
first ``--steps`` batches of the phantom data, so peak RSS is that variant's own. Samples/s is taken from
``log.txt`` over the steps after the first logging interval (warm-up excluded).

    python -m data.phantom --out data/phantom_data --quiet   # if absent
    python bench/bench_pretrain.py [--config configs/pretrain_demo.yaml] [--steps 60] [--log_every 10]
    python bench/bench_pretrain.py --gpu      # BLIP-base shapes (ViT-B/16 at 224, BERT-base fusion) on CUDA

Prints a markdown table and writes it to docs/benchmarks/pretrain.md (``--gpu``: gpu_pretrain.md).
With ``--gpu`` the phantom images are read at 224 px and the phantom tokenizer stands in for
bert-base-uncased (nothing is downloaded); weights start random, which does not change the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import publish  # noqa: E402
from engine.config import load_config  # noqa: E402
from tasks.pretrain import PRETRAIN_SCHEMA  # noqa: E402

VARIANTS = [  # (label, overrides)
    ("fp32, SDPA", ["precision=fp32", "attn_impl=sdpa"]),
    ("fp32, eager attention", ["precision=fp32", "attn_impl=eager"]),
    ("bf16 autocast, SDPA", ["precision=bf16", "attn_impl=sdpa"]),
    ("fp32, SDPA, ViT grad checkpointing (all blocks)", ["precision=fp32", "attn_impl=sdpa",
                                                          "vit_grad_ckpt=true", "vit_ckpt_layer=-1"]),
]

GPU_VARIANTS = [  # BLIP-base shapes on CUDA
    ("bf16 autocast, SDPA (fused attention)", ["precision=bf16", "attn_impl=sdpa"]),
    ("bf16 autocast, eager attention", ["precision=bf16", "attn_impl=eager"]),
    ("fp32, SDPA", ["precision=fp32", "attn_impl=sdpa"]),
]
GPU_OVERRIDES = ["device=cuda", "tokenizer=data/phantom_data/tokenizer", "text_encoder=null", "vit_init=null",
                 "num_workers=8"]

CHILD = """
import json, resource, sys, time
import torch
sys.path.insert(0, {root!r})
from engine.config import load_config
from tasks.pretrain import PRETRAIN_SCHEMA, run_pretraining
config = load_config({config!r}, {overrides!r}, PRETRAIN_SCHEMA)
start = time.perf_counter()
result = run_pretraining(config)
cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
print(json.dumps({{"seconds": time.perf_counter() - start, "steps": result.global_step,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  "device": torch.cuda.get_device_name() if cuda else "cpu"}}))
"""


def _subset(train_file: Path, n: int, out: Path) -> Path:
    records = json.loads(train_file.read_text())
    if len(records) < n:
        raise SystemExit(f"{train_file}: {len(records)} records, the benchmark needs {n}")
    out.write_text(json.dumps(records[:n]))
    return out


def run_variant(config_path: Path, overrides: list[str], work: Path) -> dict:
    code = CHILD.format(root=str(ROOT), config=str(config_path), overrides=overrides)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise SystemExit(f"variant {overrides} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [json.loads(l) for l in (work / "log.txt").read_text().splitlines()]
    rates = [l["samples_per_sec"] for l in lines if "step" in l and "samples_per_sec" in l][1:]
    summary["samples_per_sec"] = sum(rates) / len(rates) if rates else float("nan")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pretrain_demo.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--gpu", action="store_true", help="BLIP-base shapes on CUDA (configs/pretrain.yaml)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.gpu:
        return gpu_main(args)
    args.out = args.out or str(ROOT / "docs" / "benchmarks" / "pretrain.md")

    base = load_config(ROOT / args.config, schema=PRETRAIN_SCHEMA)
    train_file = ROOT / base["train_file"][0]
    if not train_file.exists():
        raise SystemExit(f"{train_file} not found: run `python -m data.phantom --out data/phantom_data` first")
    batch = base["batch_size"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = _subset(train_file, batch * args.steps, Path(tmp) / "subset.json")
        for label, extra in VARIANTS:
            work = Path(tmp) / f"run{len(rows)}"
            overrides = [f"train_file=['{subset}']", f"image_root={train_file.parent}", "max_epoch=1",
                         "eval_file=null", "save_every=0", f"log_every={args.log_every}",
                         f"warmup_steps={args.steps}", f"output_dir={work}", *extra]
            result = run_variant(ROOT / args.config, overrides, work)
            rows.append((label, result))
            print(f"{label}: {result['samples_per_sec']:.1f} samples/s, peak RSS {result['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr)

    import torch

    header = (f"Demo-model pretraining on CPU (`{args.config}`: batch {batch}, image {base['image_size']} px; "
              f"{args.steps} steps per variant, the first {args.log_every} excluded from the rate; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
              f"{platform.machine()}; {time.strftime('%Y-%m-%d')})")
    table = ["| variant | samples/s | s/step | peak RSS (MiB) |", "| --- | ---: | ---: | ---: |"]
    for label, r in rows:
        table.append(f"| {label} | {r['samples_per_sec']:.1f} | {batch / r['samples_per_sec']:.2f} | "
                     f"{r['peak_rss_mib']:.0f} |")
    text = "\n".join([
        "# Pretraining benchmark", "", header, "", *table, "",
        "Peak RSS is the whole process (Python, torch, data). Timings on a shared 2-core machine are noisy.",
        f"CPU capability as torch sees it: {torch.backends.cpu.get_cpu_capability()}. Without AVX512-BF16/AMX,",
        "bf16 autocast on CPU is emulated and far slower than fp32: mixed precision is for GPUs.",
        "GPU figures (bf16 on A100/H100, NCCL) are not measured yet: no GPU was available.", "",
        f"Command: `python bench/bench_pretrain.py --config {args.config} --steps {args.steps}`", "",
    ])
    publish(text, args.out)
    return 0


def gpu_main(args: argparse.Namespace) -> int:
    """BLIP-base pretraining speed and peak GPU memory per precision / attention path."""
    config = "configs/pretrain.yaml"
    base = load_config(ROOT / config, GPU_OVERRIDES + ["train_file=x"], PRETRAIN_SCHEMA)
    train_file = ROOT / "data" / "phantom_data" / "pretrain.json"
    if not train_file.exists():
        raise SystemExit(f"{train_file} not found: run `python -m data.phantom --out data/phantom_data` first")
    batch, rows = base["batch_size"], []
    with tempfile.TemporaryDirectory() as tmp:
        subset = _subset(train_file, batch * args.steps, Path(tmp) / "subset.json")
        for label, extra in GPU_VARIANTS:
            work = Path(tmp) / f"run{len(rows)}"
            overrides = [*GPU_OVERRIDES, f"train_file=['{subset}']", f"image_root={train_file.parent}",
                         "max_epoch=1", "save_every=0", f"log_every={args.log_every}", f"warmup_steps={args.steps}",
                         f"output_dir={work}", *extra]
            rows.append((label, run_variant(ROOT / config, overrides, work)))
    device = rows[0][1]["device"]
    table = ["| variant | samples/s | s/step | peak GPU memory (GiB) |", "| --- | ---: | ---: | ---: |"]
    for label, r in rows:
        table.append(f"| {label} | {r['samples_per_sec']:.1f} | {batch / r['samples_per_sec']:.3f} | "
                     f"{r['peak_cuda_gib']:.1f} |")
    text = "\n".join([
        "# Pretraining benchmark, BLIP-base on one GPU", "",
        f"{device}; `{config}` (ViT-B/16 at 224, BERT-base fusion, batch {batch} per GPU, queue 57,600), "
        f"{args.steps} steps per variant, the first {args.log_every} excluded; {time.strftime('%Y-%m-%d')}.", "",
        *table, "", f"Command: `python bench/bench_pretrain.py --gpu --steps {args.steps}`", ""])
    publish(text, args.out or ROOT / "docs" / "benchmarks" / "gpu_pretrain.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
