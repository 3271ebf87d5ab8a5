"""What ``vis.py`` does, as functions a script or the demo can call: one figure, a list, a score.

* :func:`load_vis_model` rebuilds the model of a pretrain or retrieval checkpoint with the
  test transform and caption cleaning it was trained with.
* :func:`render_pair` writes one figure (+ ``.npy`` maps + ``.json`` description).
* :func:`render_list` does it for the records of a list and writes an HTML index; a bad
  record is skipped, counted and shown on the page.
* :func:`score_list` measures localisation against ground truth (:mod:`data.grounding`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image

from data.caption_lists import CaptionList, CaptionListError, CaptionListItem
from data.captions import pre_caption
from data.grounding import GroundTruth
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image
from data.transforms import build_image_transform
from models import build_from_checkpoint
from models.gradcam import GradCam, GradCamError, check_layer, compute_gradcams, default_layer, fusion_depth, upsample_map
from utils.atomic import atomic_save, atomic_write_json
from visualize.figure import draw_gradcam_figure, overlay_thumbnail
from visualize.html_index import IndexRow, write_index
from visualize.localization import ScoreTable, score_map

__all__ = ["RECORD_ERRORS", "VisModel", "format_scores", "load_vis_model", "render_list", "render_pair", "save_maps",
           "score_list"]

# What a bad record raises; a run over a list skips and counts these.
RECORD_ERRORS = (ImageError, CaptionListError, GradCamError)


@dataclass
class VisModel:
    """A model ready for Grad-CAM with the image transform and caption cleaning of its training."""

    model: Any
    config: dict[str, Any]
    checkpoint: str
    device: torch.device

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size", 224))

    @property
    def max_words(self) -> int:
        return int(self.config.get("max_words", 30))

    @property
    def max_pixels(self) -> int:
        return int(self.config.get("max_image_pixels", DEFAULT_MAX_PIXELS))

    @property
    def depth(self) -> int:
        return fusion_depth(self.model)

    def resolve_layer(self, layer: int | None) -> int:
        layer = default_layer(self.depth) if layer is None else layer
        check_layer(self.model, layer)
        return layer

    def clean(self, caption: str) -> str:
        """``pre_caption`` as training applies it; empty text is an error."""
        text = pre_caption(caption, self.max_words)
        if not text:
            raise GradCamError(f"the caption {caption!r} is empty after cleaning: there is no word to map")
        return text

    def load_image(self, path: str | Path) -> tuple[Image.Image, torch.Tensor]:
        image = open_image(path, max_pixels=self.max_pixels)
        return image, build_image_transform("test", self.image_size)(image)

    def gradcams(self, image: torch.Tensor, captions: list[str], layer: int) -> list[GradCam]:
        return compute_gradcams(self.model, image.to(self.device), captions, layer)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GradCamError("--device cuda was asked for but CUDA is not available")
    return torch.device(device)


def load_vis_model(checkpoint: str | Path, config: Mapping[str, Any] | None = None, device: str = "auto") -> VisModel:
    """Model of ``checkpoint`` (shapes from its saved config, or ``config``), in eval mode on ``device``."""
    model = build_from_checkpoint(checkpoint, "retrieval", config=config)
    torch_device = pick_device(device)
    return VisModel(model.to(torch_device).eval(), model.source_config, str(checkpoint), torch_device)


def _stem(path: str | Path, index: int | None) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(path).stem)[:60] or "image"
    return stem if index is None else f"{index:05d}_{stem}"


def save_maps(cam: GradCam, base: Path, image: Image.Image, source: str, checkpoint: str) -> None:
    """``base.npy``: (1 + words, grid_h, grid_w) float32, row 0 the whole caption; ``base.json`` describes it."""
    stacked = cam.stacked()
    atomic_save(base.with_suffix(".npy"), lambda handle: np.save(handle, stacked))
    atomic_write_json(base.with_suffix(".json"), {
        "image": source, "image_size": [image.width, image.height], "checkpoint": checkpoint,
        "caption": cam.caption, "rows": ["<whole caption>"] + cam.words, "dropped_words": cam.dropped_words,
        "grid": list(cam.grid), "layer": cam.layer, "itm_probability": cam.itm_probability,
        "maps": "rows x grid_h x grid_w, Grad-CAM on the patch grid spanning the whole image; resize to "
                "(height, width) bilinearly (models.gradcam.upsample_map) to overlay it on the original picture",
    }, indent=1)


def render_pair(vis: VisModel, image_path: str | Path, caption: str, out_path: str | Path,
                layer: int | None = None) -> GradCam:
    """One figure of ``caption`` over the image; maps go next to it as ``.npy`` and ``.json``."""
    layer = vis.resolve_layer(layer)
    text = vis.clean(caption)
    image, tensor = vis.load_image(image_path)
    cam = vis.gradcams(tensor, [text], layer)[0]
    out_path = Path(out_path)
    draw_gradcam_figure(image, cam, out_path, note=str(image_path))
    save_maps(cam, out_path.with_suffix(""), image, str(image_path), vis.checkpoint)
    return cam


def _top_words(cam: GradCam, count: int = 3) -> list[str]:
    strength = cam.word_maps.reshape(len(cam.words), -1).max(axis=1)
    return [cam.words[i] for i in np.argsort(-strength, kind="stable")[:count]]


def _select(caption_list: CaptionList, indices: list[int] | None, limit: int | None) -> list[int]:
    chosen = list(range(len(caption_list))) if indices is None else indices
    for index in chosen:
        if not -len(caption_list) <= index < len(caption_list):
            caption_list.item(index)  # raises with the list's size
    chosen = [i % len(caption_list) for i in chosen]
    return chosen[:limit] if limit is not None else chosen


def render_list(vis: VisModel, list_path: str | Path, out_dir: str | Path, *, indices: list[int] | None = None,
                limit: int | None = None, layer: int | None = None, caption_index: int = 0,
                image_root: str | Path | None = None, fmt: str = "png",
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Figures, maps and thumbnails of list records, and ``out_dir/index.html``; returns a summary.

    A record that cannot be drawn (missing or undecodable image, no caption, ...) is
    skipped, counted by reason and listed on the page with its error.
    """
    layer = vis.resolve_layer(layer)
    caption_list = CaptionList(list_path, image_root)
    out_dir = Path(out_dir)
    chosen = _select(caption_list, indices, limit)
    rows: list[IndexRow] = []
    skipped: Counter[str] = Counter()
    started = time.perf_counter()
    for index in chosen:
        caption, image_link = "", ""
        try:
            item = caption_list.item(index)
            image_link = os.path.relpath(item.image, out_dir)
            if not -len(item.captions) <= caption_index < len(item.captions):
                raise CaptionListError(f"{caption_list.path}[{index}]: caption index {caption_index} is outside its "
                                       f"{len(item.captions)} captions")
            caption = item.captions[caption_index]
            text = vis.clean(caption)
            image, tensor = vis.load_image(item.image)
            cam = vis.gradcams(tensor, [text], layer)[0]
            base = out_dir / _stem(item.image, index)
            draw_gradcam_figure(image, cam, base.with_suffix(f".{fmt}"), note=f"{caption_list.path.name}[{index}]: "
                                f"{item.record.get('image')}")
            save_maps(cam, base, image, str(item.image), vis.checkpoint)
            thumb = out_dir / "thumbs" / f"{base.name}.png"
            thumbnail = overlay_thumbnail(image, cam.caption_map)
            atomic_save(thumb, lambda handle, picture=thumbnail: picture.save(handle, format="PNG"))
            rows.append(IndexRow(index, image_link, cam.caption, figure=f"{base.name}.{fmt}",
                                 thumbnail=f"thumbs/{base.name}.png", maps=f"{base.name}.npy",
                                 itm_probability=cam.itm_probability, top_words=_top_words(cam)))
        except RECORD_ERRORS as exc:
            skipped[getattr(exc, "reason", type(exc).__name__)] += 1
            rows.append(IndexRow(index, image_link, caption, error=str(exc)))
        if progress is not None:
            progress(f"{len(rows)}/{len(chosen)}")
    seconds = time.perf_counter() - started
    drawn = len(rows) - sum(skipped.values())
    details = [f"list: {caption_list.path}", f"checkpoint: {vis.checkpoint}",
               f"fusion layer {layer} of {vis.depth}; {drawn} figures drawn, {sum(skipped.values())} skipped"
               + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))})" if skipped else "")]
    write_index(out_dir / "index.html", rows, title=f"Grad-CAM: {caption_list.path.name}", details=details)
    return {"drawn": drawn, "skipped": dict(skipped), "index": str(out_dir / "index.html"), "seconds": seconds,
            "layer": layer}


def score_list(vis: VisModel, list_path: str | Path, *, layer: int | None = None, limit: int | None = None,
               image_root: str | Path | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pointing game, cell pointing and energy inside the ground truth for every caption that has one.

    Whole-caption maps are scored against everything the caption describes; phrase maps
    (mean over the phrase's words) against the phrase's own region. Groups: ``all`` and
    the targets' labels (phantom: lesion size; for a caption, its smallest lesion).
    """
    layer = vis.resolve_layer(layer)
    caption_list = CaptionList(list_path, image_root)
    truth = GroundTruth(caption_list, vis.max_words)
    caption_table, phrase_table = ScoreTable(), ScoreTable()
    skipped: Counter[str] = Counter()
    no_truth = 0
    chosen = _select(caption_list, None, limit)
    started = time.perf_counter()
    for count, index in enumerate(chosen, start=1):
        try:
            item = caption_list.item(index)
            image, tensor = vis.load_image(item.image)
            targets = [truth.targets(item, caption, image.size) for caption in item.captions]
            no_truth += sum(t is None for t in targets)
            scored = [(vis.clean(c), t) for c, t in zip(item.captions, targets) if t is not None]
            if scored:
                cams = vis.gradcams(tensor, [text for text, _ in scored], layer)
                for cam, (_, target) in zip(cams, scored):
                    _score_caption(cam, target, caption_table, phrase_table)
        except RECORD_ERRORS as exc:
            skipped[getattr(exc, "reason", type(exc).__name__)] += 1
        if progress is not None and count % 20 == 0:
            progress(f"{count}/{len(chosen)} records")
    return {
        "list": str(caption_list.path), "checkpoint": vis.checkpoint, "layer": layer, "depth": vis.depth,
        "grid": list(vis.model.visual_encoder.patch_embed.grid_size), "image_size": vis.image_size,
        "ground_truth": truth.source, "records": len(chosen), "captions_without_ground_truth": no_truth,
        "skipped": dict(skipped), "seconds": time.perf_counter() - started,
        "caption": caption_table.summary(), "phrase": phrase_table.summary(),
    }


def _score_caption(cam: GradCam, target, caption_table: ScoreTable, phrase_table: ScoreTable) -> None:
    size = target.mask.shape
    caption_table.add(score_map(upsample_map(cam.caption_map, size), cam.caption_map, target.mask), target.label)
    for phrase in target.phrases:
        words = [i for i in phrase.words if i < len(cam.words)]
        if not words:
            continue
        grid_map = cam.phrase_map(words)
        phrase_table.add(score_map(upsample_map(grid_map, size), grid_map, phrase.mask), phrase.label)


def format_scores(summary: Mapping[str, Any]) -> str:
    """The score summary as a Markdown table."""
    lines = [f"localisation on {summary['list']} (ground truth: {summary['ground_truth']}), "
             f"fusion layer {summary['layer']} of {summary['depth']}, "
             f"{summary['grid'][0]}x{summary['grid'][1]} grid at {summary['image_size']} px",
             "",
             "| map | group | n | pointing | chance | cell pointing | chance | energy in mask | chance |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("caption", "phrase"):
        for group, row in summary[kind].items():
            lines.append(f"| {kind} | {group} | {row['n']} | {row['pointing']:.3f} | {row['chance_pointing']:.3f} | "
                         f"{row['cell_pointing']:.3f} | {row['chance_cell']:.3f} | {row['energy']:.3f} | "
                         f"{row['chance_pointing']:.3f} |")
    if not summary["caption"]:
        lines.append("| (no caption with ground truth) | | 0 | | | | | | |")
    lines.append("")
    lines.append(f"{summary['records']} records, {summary['captions_without_ground_truth']} captions without ground "
                 f"truth, skipped: {summary['skipped'] or 'none'}, {summary['seconds']:.1f} s")
    return "\n".join(lines)
