"""Benchmark of the subfigure splitter: panels, label OCR, pairing, captions, time per figure.

    python bench/eval_subfigure.py                       # 300 figures, writes docs/benchmarks/subfigure.md
    python bench/eval_subfigure.py --figures 50 --timing 20 --out /tmp/sub.md   # quick look

Panels: ImageCLEF 2016 panel-splitting score on synthetic compound figures
(data/subfigure/synthetic.py, seeds from --seed; the splitter was tuned on
seeds 0-199, the default 1000+ were not looked at while tuning). Labels:
OCR accuracy given the true panel boxes (isolates the OCR) and end to end
(boxes from the splitter). Pairing: the generated caption is split and
aligned, and a pair is right when its crop hits the ground-truth panel that
carries its label. Captions: label-set exact match and token F1 on the
hand-written cases in tests/subfigure_caption_cases.py. Time: the whole
per-figure job of split_dataset (decode, caption, panels, OCR, alignment,
crop encoding and writing) on one CPU core, one thread.
"""

from __future__ import annotations

import argparse
import os
import sys

# One core, one thread: set before numpy / OpenCV / onnxruntime start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MEDVLP_OCR_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_name  # noqa: E402
from data.subfigure.align import align  # noqa: E402
from data.subfigure.captions import split_caption  # noqa: E402
from data.subfigure.dataset import _process, _record_key  # noqa: E402
from data.subfigure.figure import split_figure  # noqa: E402
from data.subfigure.metrics import caption_split_scores, match_panels, panel_split_score  # noqa: E402
from data.subfigure.ocr import get_reader  # noqa: E402
from data.subfigure.panels import detect_panels  # noqa: E402
from data.subfigure.synthetic import make_figure  # noqa: E402
from tests.subfigure_caption_cases import CASES  # noqa: E402

GOALS = {"panel": 0.85, "ocr": 0.90, "caption_exact": 0.90, "caption_f1": 0.85, "median_s": 0.5}


def _pin_one_core() -> str:
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def _with_label(box, label_box):
    if not label_box:
        return box
    return (min(box[0], label_box[0]), min(box[1], label_box[1]), max(box[2], label_box[2]), max(box[3], label_box[3]))


def evaluate_figures(n: int, seed: int) -> dict:
    reader = get_reader(threads=1)
    panel_scores = []
    by_cat: dict[str, list[float]] = defaultdict(list)
    ocr_gt = [0, 0, 0]  # correct (any case), correct (exact case), total
    ocr_e2e = [0, 0]
    pairs = {"figures": 0, "split": 0, "emitted": 0, "correct": 0, "gt_panels": 0, "ocr": 0, "order": 0}
    for s in range(seed, seed + n):
        fig = make_figure(s)
        rgb = np.asarray(fig.image)
        boxes = detect_panels(rgb)
        score = panel_split_score(boxes, fig.boxes)
        panel_scores.append(score)
        meta = fig.meta
        layout = "2 panels" if len(fig.boxes) == 2 else ("3-6 panels" if len(fig.boxes) <= 6 else "7+ panels")
        for key in (
            f"background: {meta['background']}",
            "panels touching (frames, no gap)" if meta["touching"] else ("framed panels" if meta["frames"] else "no frames"),
            f"JPEG: {'yes' if meta['jpeg_quality'] else 'no'}",
            f"gap: {'<= 4 px' if meta['gap'] <= 4 else '> 4 px'}",
            f"layout: {layout}",
            "text strip (header/footer)" if meta["header"] or meta["footer"] else "no text strip",
        ):
            by_cat[key].append(score)
        # OCR with the true boxes (label included, as the cutter merges an outside label into its panel).
        gt_boxes = [_with_label(b, lb) for b, lb in zip(fig.boxes, fig.label_boxes)]
        readings = reader.read(rgb, gt_boxes)
        for label, cands in zip(fig.labels, readings):
            if label is None:
                continue
            top = cands[0].label if cands else None
            ocr_gt[2] += 1
            ocr_gt[0] += top is not None and top.lower() == label.lower()
            ocr_gt[1] += top == label
        # End to end: the splitter's own boxes and readings, the generated caption.
        panels = split_figure(fig.image)
        pboxes = [p.box for p in panels]
        matched = match_panels(pboxes, fig.boxes)
        gt_of_pred = {i: j for i, j in enumerate(matched) if j is not None}
        for j, label in enumerate(fig.labels):
            if label is None:
                continue
            ocr_e2e[1] += 1
            hit = [i for i, jj in gt_of_pred.items() if jj == j]
            ocr_e2e[0] += bool(hit) and panels[hit[0]].label is not None and panels[hit[0]].label.lower() == label.lower()
        subs = split_caption(fig.caption)
        result = align([p.candidates for p in panels], subs)
        pairs["figures"] += 1
        pairs["gt_panels"] += len(fig.boxes)
        if result:
            pairs["split"] += 1
            for pair in result:
                pairs["emitted"] += 1
                pairs[pair.method] += 1
                j = gt_of_pred.get(pair.panel)
                pairs["correct"] += j is not None and fig.caption_labels[j].lower() == pair.label.lower()
    return {
        "n": n,
        "panel": float(np.mean(panel_scores)),
        "by_category": {k: (len(v), float(np.mean(v))) for k, v in sorted(by_cat.items())},
        "ocr_gt": ocr_gt[0] / max(1, ocr_gt[2]),
        "ocr_gt_case": ocr_gt[1] / max(1, ocr_gt[2]),
        "ocr_gt_n": ocr_gt[2],
        "ocr_e2e": ocr_e2e[0] / max(1, ocr_e2e[1]),
        "pairs": pairs,
    }


def evaluate_captions() -> dict:
    out = {}
    for split in ("dev", "heldout", "heldout2", "all"):
        cases = [c for c in CASES if split in ("all", c["split"])]
        scores = [caption_split_scores(split_caption(c["caption"]), c["expected"]) for c in cases]
        out[split] = (len(cases), float(np.mean([e for e, _ in scores])), float(np.mean([f for _, f in scores])))
    return out


def evaluate_timing(n: int, seed: int) -> dict:
    """Per-figure wall time of split_dataset's job (no multiprocessing) on one core."""
    get_reader(threads=1)  # engine start-up is per process, not per figure
    totals, detect, ocr = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "img").mkdir()
        (tmp_path / "out").mkdir()
        tasks = []
        for i, s in enumerate(range(seed, seed + n)):
            fig = make_figure(s)
            name = f"img/{s}.jpg"
            fig.image.save(tmp_path / name, quality=90)
            record = {"image": name, "caption": fig.caption}
            tasks.append((i, record, str(tmp_path), str(tmp_path / "out"), _record_key(record), 178_956_970))
        for task in tasks:
            t0 = time.perf_counter()
            result = _process(task)
            totals.append(time.perf_counter() - t0)
            assert "skip" not in result, result
        for task in tasks:
            from data.image_io import open_image

            img = open_image(tmp_path / task[1]["image"])
            rgb = np.asarray(img)
            t0 = time.perf_counter()
            boxes = detect_panels(rgb)
            t1 = time.perf_counter()
            if len(boxes) > 1:
                get_reader().read(rgb, boxes)
            t2 = time.perf_counter()
            detect.append(t1 - t0)
            ocr.append(t2 - t1)

    def stats(values):
        return float(np.median(values)), float(np.percentile(values, 95))

    return {"n": n, "total": stats(totals), "panels": stats(detect), "ocr": stats(ocr)}


def _mark(value: float, goal: float, higher_is_better: bool = True) -> str:
    ok = value >= goal if higher_is_better else value <= goal
    return "met" if ok else "**not met**"


def render(fig: dict, cap: dict, timing: dict, args, pinned: str, seconds: float) -> str:
    p = fig["pairs"]
    precision = p["correct"] / max(1, p["emitted"])
    recall = p["correct"] / max(1, p["gt_panels"])
    lines = [
        "# Subfigure splitter benchmark",
        "",
        f"Command: `python bench/eval_subfigure.py --figures {args.figures} --seed {args.seed} --timing {args.timing}`  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs (shared with other jobs while measured, so times are noisy); "
        f"timing {pinned}, 1 thread. Python {platform.python_version()}. Benchmark wall time {seconds:.0f} s.",
        "",
        "Synthetic figures come from `data/subfigure/synthetic.py` (real images shipped in scikit-image/matplotlib, "
        "drawn CT/MR/ultrasound/histology/fluorescence/blot panels and matplotlib plots; white/black/grey pages, "
        "frames, touching panels, 0-30 px gaps, nested and unequal layouts, text strips, arrows, JPEG). "
        f"Seeds {args.seed}..{args.seed + args.figures - 1}; the splitter was tuned on seeds 0-199 only.",
        "",
        "## Summary",
        "",
        "| measure | value | goal | |",
        "| --- | --- | --- | --- |",
        f"| panel splitting, ImageCLEF score ({fig['n']} figures) | {fig['panel']:.3f} | >= {GOALS['panel']} | {_mark(fig['panel'], GOALS['panel'])} |",
        f"| label OCR accuracy, true panel boxes ({fig['ocr_gt_n']} labels, case-insensitive) | {fig['ocr_gt']:.3f} | >= {GOALS['ocr']} | {_mark(fig['ocr_gt'], GOALS['ocr'])} |",
        f"| label OCR accuracy, same, case-sensitive | {fig['ocr_gt_case']:.3f} | | |",
        f"| label accuracy end to end (splitter's boxes; a missed panel counts as wrong) | {fig['ocr_e2e']:.3f} | | |",
        f"| caption label-set exact match, all {cap['all'][0]} cases | {cap['all'][1]:.3f} | >= {GOALS['caption_exact']} | {_mark(cap['all'][1], GOALS['caption_exact'])} |",
        f"| caption token F1, all cases | {cap['all'][2]:.3f} | >= {GOALS['caption_f1']} | {_mark(cap['all'][2], GOALS['caption_f1'])} |",
        f"| time per figure, median ({timing['n']} figures, 1 core) | {timing['total'][0]:.3f} s | <= {GOALS['median_s']} s | {_mark(timing['total'][0], GOALS['median_s'], False)} |",
        f"| time per figure, p95 | {timing['total'][1]:.3f} s | | |",
        "",
        "## Captions by set",
        "",
        "| set | cases | label-set exact | token F1 |",
        "| --- | --- | --- | --- |",
    ]
    for split in ("dev", "heldout", "heldout2"):
        n, exact, f1 = cap[split]
        lines.append(f"| {split} | {n} | {exact:.3f} | {f1:.3f} |")
    lines += [
        "",
        "`dev` cases were written with the splitter; `heldout` cases were written before tuning and scored "
        "0.931 exact / 0.914 F1 on their first run, after which three failures (comma-separated enumerations, "
        "a label after \"et al.\", dash markers after commas) were fixed, so they are no longer unseen; `heldout2` "
        "was written after those fixes and is scored here only.",
        "",
        "## End-to-end pairing (generated captions, splitter's panels and OCR)",
        "",
        "| figures | split | kept whole | pairs emitted | by OCR | by reading order | pair precision | pair recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {p['figures']} | {p['split']} | {p['figures'] - p['split']} | {p['emitted']} | {p['ocr']} | {p['order']} | "
        f"{precision:.3f} | {recall:.3f} |",
        "",
        "Precision: share of emitted (crop, subcaption) pairs whose crop hits the panel that carries the label. "
        "Recall: correct pairs / all ground-truth panels (figures kept whole contribute none).",
        "",
        "## Panel score by category",
        "",
        "| category | figures | ImageCLEF score |",
        "| --- | --- | --- |",
    ]
    for key, (n, score) in fig["by_category"].items():
        lines.append(f"| {key} | {n} | {score:.3f} |")
    lines += [
        "",
        "## Time per figure by stage (1 core)",
        "",
        "| stage | median | p95 |",
        "| --- | --- | --- |",
        f"| whole job (decode, caption, panels, OCR, align, write crops) | {timing['total'][0]:.3f} s | {timing['total'][1]:.3f} s |",
        f"| panel detection | {timing['panels'][0]:.3f} s | {timing['panels'][1]:.3f} s |",
        f"| label OCR | {timing['ocr'][0]:.3f} s | {timing['ocr'][1]:.3f} s |",
        "",
        "Every synthetic caption is compound, so every figure pays for panel detection and OCR; a figure whose "
        "caption names no panels is only decoded and linked.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=300, help="synthetic figures for panels/OCR/pairing")
    parser.add_argument("--seed", type=int, default=1000, help="first synthetic seed (tuning used 0-199)")
    parser.add_argument("--timing", type=int, default=100, help="figures for the timing run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "subfigure.md"))
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    pinned = _pin_one_core()
    cap = evaluate_captions()
    fig = evaluate_figures(args.figures, args.seed)
    timing = evaluate_timing(args.timing, args.seed)
    text = render(fig, cap, timing, args, pinned, time.perf_counter() - started)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": fig, "captions": cap, "timing": timing}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
