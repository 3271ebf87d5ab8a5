"""Retrieval evaluation: the fast exact path against BLIP's per-query procedure, same model, same data.

Both compute the same numbers (tests/test_retrieval_eval.py checks that); this measures the time
and peak memory of each, on the phantom test split (images x 5 captions) with a demo-sized model
(random weights, or --checkpoint for a trained one: the overlap of image->text and text->image
candidates, which the fast path scores once, grows as a model learns).

    python bench/bench_retrieval_eval.py [--images 200] [--k_test 128] [--checkpoint CKPT]
    python bench/bench_retrieval_eval.py --model base --images 32 --k_test 16   # BLIP-base shapes, random weights
    python bench/bench_retrieval_eval.py --model base --images 32 --k_test 16 --max_words 12   # COCO-length captions
    python bench/bench_retrieval_eval.py --synthetic 5000x25000 --k_test 256 --device cuda   # GPU scale

``--synthetic IxT`` skips images and the ViT: random unit ITC features and random image tokens
(the ViT-B/16 at 384 shape, 577 x 768) with a BERT-base fusion encoder, to time the re-ranking at
the scale of COCO's 5k test split. Prints a markdown table and writes it to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name, publish  # noqa: E402

CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from bench.bench_retrieval_eval import build, run_fast, run_reference
model, dataset = build({args!r})
start, cpu_start = time.perf_counter(), time.process_time()
metrics = run_{which}(model, dataset, {args!r})
print(json.dumps({{"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                  "metrics": metrics,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def build(args: dict):
    """The model and the evaluation split of one run (in the child process)."""
    import torch

    from data.retrieval_dataset import RetrievalEvalDataset
    from data.transforms import build_image_transform
    from engine.config import load_config
    from models import build_model, load_checkpoint
    from tasks.retrieval import RETRIEVAL_SCHEMA

    torch.manual_seed(0)
    config = load_config(ROOT / "configs" / "retrieval_demo.yaml", [], RETRIEVAL_SCHEMA)
    if args.get("model") == "base":  # BLIP-base shapes: ViT-B/16 at 384 px (577 tokens), 12-layer BERT-base fusion
        config.update(vit="base", image_size=384, med_config=str(ROOT / "configs" / "med_config.json"),
                      embed_dim=256)
    model = build_model("retrieval", {**config, "pretrained": None}).eval()
    if args["checkpoint"]:
        load_checkpoint(model, args["checkpoint"])
    full = json.loads((ROOT / "data" / "phantom_data" / "retrieval_test.json").read_text())
    subset = ROOT / "data" / "phantom_data" / f".bench_test_{args['images']}.json"
    subset.write_text(json.dumps(full[: args["images"]]))
    # max_words: BLIP's pre_caption cut (30 in its evaluation). The phantom captions run to ~40 words; COCO's
    # average ~10.5, and BLIP's evaluation pads every caption to 35 tokens, which the fast path does not.
    dataset = RetrievalEvalDataset(subset, build_image_transform("test", config["image_size"]),
                                   max_words=args.get("max_words", 30))
    return model, dataset


def run_fast(model, dataset, args: dict) -> dict:
    from models.retrieval_eval import evaluate_retrieval

    result = evaluate_retrieval(model, dataset, k_test=args["k_test"], batch_size=64, itm_batch_size=256)
    return {k: result.metrics[k] for k in ("txt_r1", "img_r1", "r_mean")}


def run_reference(model, dataset, args: dict) -> dict:
    from tests.blip_reference import blip_reference

    metrics, _, _ = blip_reference(model, dataset, args["k_test"])
    return {k: metrics[k] for k in ("txt_r1", "img_r1", "r_mean")}


def _child(which: str, args: dict) -> dict:
    code = CHILD.format(root=str(ROOT), args=args, which=which)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synthetic(spec: str, k_test: int, device: str, dtype: str) -> list[str]:
    """Re-ranking at COCO scale on random features (no images, no ViT): time and peak device memory."""
    import torch

    from models import build_model
    from models.retrieval_eval import RetrievalFeatures, itm_rerank

    n_img, n_txt = (int(x) for x in spec.lower().split("x"))
    torch.manual_seed(0)
    model = build_model("retrieval", {"vit": "base", "image_size": 384, "med_config": str(ROOT / "configs" /
                                      "med_config.json"), "tokenizer": str(ROOT / "data" / "phantom_data" /
                                      "tokenizer"), "queue_size": 8}).to(device).eval()
    dt = {"bf16": torch.bfloat16, "fp32": None}[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    feats = RetrievalFeatures(
        image_embeds=torch.randn(n_img, 577, 768, device=device, generator=gen,
                                 dtype=dt or torch.float32),
        image_feat=torch.nn.functional.normalize(torch.randn(n_img, 256, device=device, generator=gen), dim=1),
        text_ids=torch.randint(1000, 2000, (n_txt, 35), device=device, generator=gen),
        text_atts=torch.ones(n_txt, 35, dtype=torch.long, device=device),
        text_feat=torch.nn.functional.normalize(torch.randn(n_txt, 256, device=device, generator=gen), dim=1),
    )
    # captions of one image sit near it in ITC space, as after training: most candidates overlap
    owner = torch.arange(n_txt, device=device) * n_img // n_txt
    feats.text_feat = torch.nn.functional.normalize(feats.text_feat * 0.5 + feats.image_feat[owner], dim=1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    itm_rerank(model, feats, k_test, batch_size=1024, device=device, autocast_dtype=dt, progress=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return [f"| {n_img} x {n_txt}, k_test {k_test}, BERT-base fusion, {dtype} | {device} | {seconds:.1f} s | "
            f"{peak:.1f} GiB |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--k_test", type=int, default=128)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--max_words", type=int, default=30, help="cut captions to this many words (COCO: ~10.5)")
    parser.add_argument("--model", default="demo", choices=("demo", "base"),
                        help="demo: configs/retrieval_demo.yaml's shapes; base: BLIP-base shapes, random weights")
    parser.add_argument("--synthetic", default=None, metavar="IxT")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.synthetic:
        rows = ["| re-ranking | device | time | peak device memory |", "| --- | --- | ---: | ---: |"]
        rows += synthetic(args.synthetic, args.k_test, args.device, args.dtype)
        out = Path(args.out or ROOT / "docs" / "benchmarks" / "retrieval_eval_gpu.md")
    else:
        params = {"images": args.images, "k_test": args.k_test, "checkpoint": args.checkpoint, "model": args.model,
                  "max_words": args.max_words}
        fast, reference = _child("fast", params), _child("reference", params)
        if fast["metrics"] != reference["metrics"]:
            raise SystemExit(f"the two paths disagree: {fast['metrics']} vs {reference['metrics']}")
        # CPU seconds of the process: with one thread, the work done, little moved by other processes.
        ratio = reference["cpu_seconds"] / fast["cpu_seconds"]
        rows = ["| path | CPU time | wall time | peak RSS | r_mean |", "| --- | ---: | ---: | ---: | ---: |"]
        for label, run in (("BLIP per-query procedure (tests/blip_reference.py)", reference),
                           ("fast exact (models/retrieval_eval.py)", fast)):
            rows.append(f"| {label} | {run['cpu_seconds']:.1f} s | {run['seconds']:.1f} s | "
                        f"{run['peak_rss_mib']:.0f} MiB | {run['metrics']['r_mean']:.2f} |")
        rows += ["", f"Speed-up (CPU time): **{ratio:.1f}x**, identical metrics."]
        name = "retrieval_eval.md" if args.model == "demo" and not args.checkpoint else \
            f"retrieval_eval_{'trained' if args.checkpoint else args.model}.md"
        if args.max_words != 30:
            name = name.replace(".md", f"_{args.max_words}_words.md")
        out = Path(args.out or ROOT / "docs" / "benchmarks" / name)
    header = [f"# Retrieval evaluation benchmark", "",
              f"`python bench/bench_retrieval_eval.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"on {cpu_name()} ({time.strftime('%Y-%m-%d')}); "
              + ("phantom test split, " + f"{args.images} images x 5 captions (cut to {args.max_words} words), "
                 f"k_test {args.k_test}, "
                 f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'random ' + args.model + '-sized model'}."
                 if not args.synthetic else "synthetic features.")
              + f" Threads: {os.environ.get('OMP_NUM_THREADS', 'torch default')}; load average at the end "
              f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine: both paths ran under it).", ""]
    text = "\n".join(header + rows) + "\n"
    publish(text, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
