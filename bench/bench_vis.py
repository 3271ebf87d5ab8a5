"""Seconds per figure of ``vis.py`` on CPU: image loading, Grad-CAM, drawing, maps; demo and BLIP-base models.

Runs the same functions as ``vis.py --all`` over the package figures (``bench/package_figures.py``:
16-bit, palette, RGBA, EXIF-rotated, 4233-px and compound figures) and times each stage per
figure, for the demo checkpoint and for a BLIP-base-shaped model (ViT-B/16 at 384 px, the
12-layer BERT-base fusion encoder, layer 8; random weights: speed does not depend on them).

    python bench/bench_vis.py --checkpoint output/pretrain_demo/checkpoint_last.pth
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_name, publish  # noqa: E402
from bench.package_figures import build_package_figures  # noqa: E402
from data.caption_lists import CaptionList  # noqa: E402
from models import build_model  # noqa: E402
from visualize.figure import draw_gradcam_figure  # noqa: E402
from visualize.runner import VisModel, save_maps, load_vis_model  # noqa: E402

STAGES = ("load + transform", "Grad-CAM", "figure (png)", "maps (.npy/.json)")


def blip_base_model(tokenizer: str) -> VisModel:
    config = {"vit": "base", "image_size": 384, "med_config": "configs/med_config.json", "tokenizer": tokenizer,
              "max_words": 30, "queue_size": 64}
    model = build_model("retrieval", config).eval()
    return VisModel(model, config, "BLIP-base shapes, random weights", torch.device("cpu"))


def time_figures(vis: VisModel, list_path: Path, out_dir: Path, repeats: int) -> tuple[dict[str, list[float]], list[str]]:
    """Per stage, the per-figure CPU seconds (median of ``repeats`` runs of each figure), and wall seconds."""
    caption_list = CaptionList(list_path)
    layer = vis.resolve_layer(None)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES + ("wall",)}
    names = []
    for index in range(len(caption_list)):
        item = caption_list.item(index)
        names.append(item.image.name)
        runs: dict[str, list[float]] = {stage: [] for stage in times}
        for _ in range(repeats):
            wall = time.perf_counter()
            start = time.process_time()
            image, tensor = vis.load_image(item.image)
            loaded = time.process_time()
            cam = vis.gradcams(tensor, [vis.clean(item.captions[0])], layer)[0]
            mapped = time.process_time()
            draw_gradcam_figure(image, cam, out_dir / f"{index}.png")
            drawn = time.process_time()
            save_maps(cam, out_dir / str(index), image, str(item.image), vis.checkpoint)
            saved = time.process_time()
            for stage, seconds in zip(STAGES, (loaded - start, mapped - loaded, drawn - mapped, saved - drawn)):
                runs[stage].append(seconds)
            runs["wall"].append(time.perf_counter() - wall)
        for stage in times:
            times[stage].append(median(runs[stage]))
    return times, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="output/pretrain_demo/checkpoint_last.pth")
    parser.add_argument("--figures", default="output/package_figures", help="built here if missing")
    parser.add_argument("--tokenizer", default="data/phantom_data/tokenizer", help="for the BLIP-base-shaped model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks/vis.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    list_path = Path(args.figures) / "pretrain.json"
    if not list_path.exists():
        build_package_figures(args.figures, split=False)
    models = [("demo checkpoint", lambda: load_vis_model(args.checkpoint, device="cpu")),
              ("BLIP-base shapes (ViT-B/16 384 px, 12-layer fusion)", lambda: blip_base_model(args.tokenizer))]
    rows = []
    for name, build in models:
        vis = build()
        with tempfile.TemporaryDirectory() as tmp:
            times, names = time_figures(vis, list_path, Path(tmp), args.repeats)
        grid = vis.model.visual_encoder.patch_embed.grid_size
        totals = [sum(parts) for parts in zip(*(times[stage] for stage in STAGES))]
        slowest = max(range(len(totals)), key=totals.__getitem__)
        rows.append((f"{name}, {vis.image_size} px, {grid[0]}x{grid[1]} grid, layer {vis.resolve_layer(None)}",
                     [median(times[stage]) for stage in STAGES], median(totals), median(times["wall"]),
                     f"{totals[slowest]:.2f} ({names[slowest]})"))
        del vis
    load = os.getloadavg()
    lines = [f"# vis.py speed on CPU ({len(CaptionList(list_path))} package figures, {args.threads} thread(s))", "",
             f"{cpu_name()}, torch {torch.__version__}, {datetime.date.today()}; load average during the run "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared machine: figures are noisy). "
             f"Each figure run {args.repeats} times, its median taken; the table gives the median over figures.", "",
             "Stages in CPU seconds of the process (with one thread: seconds of one core, little disturbed by "
             "other processes); wall seconds depend on how busy the machine was.", "",
             "| model | " + " | ".join(STAGES) + " | CPU s/figure | wall s/figure | slowest figure (CPU s) |",
             "| --- |" + " ---: |" * (len(STAGES) + 3)]
    for name, medians, total, wall, slowest in rows:
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in medians)
                     + f" | {total:.2f} | {wall:.2f} | {slowest} |")
    lines += ["", "Figures: `python bench/package_figures.py`; command: "
              f"`python bench/bench_vis.py --checkpoint {args.checkpoint} --threads {args.threads}`."]
    text = "\n".join(lines) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
