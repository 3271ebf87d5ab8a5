"""Ground truth for localisation: which pixels of a figure a caption (or a phrase of it) describes.

Two sources, both resolved to boolean masks at the image's own size:

* ``"boxes"`` in a list record (real data): ``[[x0, y0, x1, y1], ...]`` in pixels of the
  image as :func:`data.image_io.open_image` returns it (EXIF orientation applied), ``x1``/``y1``
  exclusive, for the finding(s) every caption of the record describes; or
  ``[{"box": [x0, y0, x1, y1], "phrase": "left frontal lesion"}, ...]`` to tie boxes to
  phrases (matched word by word after ``pre_caption``; such a box counts only for the
  captions that contain its phrase). In a panel record of the subfigure splitter, which
  copies its figure's fields, the boxes are the figure's: they are moved into the panel
  and those of other panels are dropped.
* The phantom generator's lesion masks (``metadata.json`` next to a phantom list):
  every lesion a caption names is a target, and each lesion phrase of the caption
  (the generator joins two with " and " or "; ") is tied to its lesion's mask.

A caption without ground truth (a normal phantom image, a record without boxes) has no
targets and is not scored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data.caption_lists import CaptionList, CaptionListError, CaptionListItem
from data.captions import pre_caption
from utils.json_file import read_json_file

__all__ = ["CaptionTargets", "GroundTruth", "PhraseTarget", "find_phrase"]


@dataclass
class PhraseTarget:
    """A phrase of the caption (word indices into its cleaned words) and the pixels it describes."""

    words: list[int]
    mask: np.ndarray           # bool (height, width)
    label: str = ""            # a grouping key for reports (phantom: the lesion size)


@dataclass
class CaptionTargets:
    """Everything a caption describes (``mask``) and, where known, per phrase."""

    mask: np.ndarray           # bool (height, width): union of all described findings
    phrases: list[PhraseTarget]
    label: str = ""            # phantom: the smallest described lesion's size


def find_phrase(words: list[str], phrase: str, max_words: int = 0) -> list[int]:
    """Indices of the first occurrence of ``phrase`` (cleaned like captions) in ``words``; [] if absent."""
    target = pre_caption(phrase, max_words).split()
    if not target:
        return []
    for start in range(len(words) - len(target) + 1):
        if words[start:start + len(target)] == target:
            return list(range(start, start + len(target)))
    return []


def _check_box(box: Any, where: str) -> tuple[int, int, int, int]:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise CaptionListError(f"{where}: a box must be [x0, y0, x1, y1] numbers, got {box!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise CaptionListError(f"{where}: box {list(box)} is empty (needs x0 < x1 and y0 < y1)")
    return x0, y0, x1, y1


def _box_mask(box: Any, size: tuple[int, int], where: str) -> np.ndarray:
    width, height = size
    x0, y0, x1, y1 = _check_box(box, where)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x0 >= x1 or y0 >= y1:
        raise CaptionListError(f"{where}: box {list(box)} lies outside the {width}x{height} image")
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _parent_to_crop(record: dict, size: tuple[int, int]):
    """For a panel the subfigure splitter cut out (``parent`` + ``box`` + ``alignment`` ocr/order), a function
    moving the parent's ``boxes`` (copied with every other parent field) into the crop; None otherwise.

    A box that does not overlap the panel gives None (it belongs to another panel).
    """
    panel = record.get("box")
    if not record.get("parent") or record.get("alignment") not in ("ocr", "order") or not (
            isinstance(panel, list) and len(panel) == 4):
        return None
    px0, py0, px1, py1 = panel
    sx, sy = size[0] / max(1, px1 - px0), size[1] / max(1, py1 - py0)

    def move(entry: Any, where: str) -> Any:
        bx0, by0, bx1, by1 = _check_box(entry.get("box") if isinstance(entry, dict) else entry, where)
        x0, y0, x1, y1 = max(bx0, px0), max(by0, py0), min(bx1, px1), min(by1, py1)
        if x0 >= x1 or y0 >= y1:
            return None
        moved = [(x0 - px0) * sx, (y0 - py0) * sy, (x1 - px0) * sx, (y1 - py0) * sy]
        return dict(entry, box=moved) if isinstance(entry, dict) else moved

    return move


# Phantom caption vocabulary that names a lesion's attributes (see data/phantom/captions.py).
def _phantom_lesion_words() -> frozenset[str]:
    from data.phantom.captions import VOCABULARY

    words: set[str] = {"left", "right", "frontal", "temporal", "parietal", "occipital"}
    for key in ("intensity", "size", "shape"):
        for options in VOCABULARY[key].values():
            for option in options:
                words.update(pre_caption(option).split())
    words.update(VOCABULARY["noun"])
    return frozenset(words)


_LESION_JOINS = re.compile(r"(;| and )")


class GroundTruth:
    """Targets for the records of one list: boxes in records, or the phantom metadata next to it."""

    def __init__(self, caption_list: CaptionList, max_words: int = 0):
        self.max_words = max_words
        self.phantom: dict[str, dict] = {}
        self.phantom_root = caption_list.path.parent
        metadata = caption_list.path.parent / "metadata.json"
        if metadata.is_file():
            content = read_json_file(metadata, what="phantom metadata", error=CaptionListError)
            if isinstance(content, dict) and content.get("generator") == "medvlp-phantom":
                self.phantom = {str(self.phantom_root / r["image"]): r for r in content["images"]}
        self._lesion_words = _phantom_lesion_words() if self.phantom else frozenset()

    @property
    def source(self) -> str:
        return "phantom lesion masks" if self.phantom else "record boxes"

    def targets(self, item: CaptionListItem, caption: str, size: tuple[int, int]) -> CaptionTargets | None:
        """Ground truth of ``caption`` of ``item`` for an image of ``size`` = (width, height); None: none known."""
        phantom = self.phantom.get(str(item.image))
        if phantom is not None:
            return self._phantom_targets(phantom, caption, size)
        if "boxes" in item.record:
            return self._box_targets(item, caption, size)
        return None

    def _box_targets(self, item: CaptionListItem, caption: str, size: tuple[int, int]) -> CaptionTargets | None:
        boxes = item.record["boxes"]
        where = f"{item.image.name} ({item.where}) 'boxes'"
        if not isinstance(boxes, list):
            raise CaptionListError(f"{where}: expected a list of boxes")
        words = pre_caption(caption, self.max_words).split()
        union = np.zeros((size[1], size[0]), dtype=bool)
        phrases: list[PhraseTarget] = []
        to_crop = _parent_to_crop(item.record, size)
        for k, entry in enumerate(boxes):
            if to_crop is not None:
                entry = to_crop(entry, f"{where}[{k}]")
                if entry is None:
                    continue  # a box of another panel
            if isinstance(entry, dict):
                mask = _box_mask(entry.get("box"), size, f"{where}[{k}]")
                phrase = entry.get("phrase")
                if not isinstance(phrase, str) or not phrase.strip():
                    raise CaptionListError(f"{where}[{k}]: 'phrase' must be non-empty text")
                indices = find_phrase(words, phrase, self.max_words)
                if not indices:
                    continue  # this phrase belongs to another caption of the record
                phrases.append(PhraseTarget(indices, mask))
            else:
                mask = _box_mask(entry, size, f"{where}[{k}]")
            union |= mask
        return CaptionTargets(union, phrases) if union.any() else None

    def _phantom_targets(self, record: dict, caption: str, size: tuple[int, int]) -> CaptionTargets | None:
        lesions = record.get("lesions") or []
        if not lesions:
            return None
        mask_path = self.phantom_root / record["mask"]
        try:
            with Image.open(mask_path) as mask_image:
                labels = np.asarray(mask_image)
        except OSError as exc:
            raise CaptionListError(f"{mask_path}: cannot read the lesion mask ({exc})") from None
        if labels.shape != (size[1], size[0]):
            raise CaptionListError(f"{record['mask']}: mask is {labels.shape[1]}x{labels.shape[0]}, "
                                   f"image is {size[0]}x{size[1]}")
        words = pre_caption(caption, self.max_words).split()
        phrases = []
        start = 0
        for segment in _LESION_JOINS.split(caption):  # the joins are captured: "and" is a word
            segment_words = pre_caption(segment, 0).split()
            span = range(start, min(start + len(segment_words), len(words)))
            start += len(segment_words)
            named = {word.strip(",") for word in segment_words}
            if segment in (";", " and "):
                continue
            for lesion in lesions:
                if lesion["hemisphere"] in named and lesion["lobe"] in named:
                    indices = [i for i in span if words[i].strip(",") in self._lesion_words]
                    if indices:
                        phrases.append(PhraseTarget(indices, labels == lesion["id"], lesion["size"]))
        order = {"small": 0, "medium": 1, "large": 2}
        smallest = min((lesion["size"] for lesion in lesions), key=order.get)
        return CaptionTargets(labels > 0, phrases, smallest)
