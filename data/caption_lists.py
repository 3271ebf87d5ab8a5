"""Image-caption lists as this project writes them, read record by record for tools that visit figures.

Every list here is a JSON list of records with an ``image`` path and a ``caption`` that is a
string (BLIP pretrain lists: the scraper's ``pretrain.json``, the splitter's
``subfigures.json``, the phantom ``pretrain.json`` / ``retrieval_train.json``) or a list of
strings (Karpathy eval files: ``retrieval_val.json`` / ``retrieval_test.json``). A relative
``image`` resolves against ``image_root`` when given, else against the list's folder, as
in training. Records are checked one at a time (:meth:`CaptionList.item`), so a tool can
skip and count a bad record of a long list, or stop on it when the user asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = ["CaptionList", "CaptionListError", "CaptionListItem"]


class CaptionListError(DatasetError):
    """A list or a record of it that cannot be used; the message names the file and the record."""


@dataclass(frozen=True)
class CaptionListItem:
    """One record: its position, resolved image path, raw captions and the record itself."""

    index: int
    image: Path
    captions: list[str]
    record: dict[str, Any]

    @property
    def where(self) -> str:
        return f"record {self.index}"


class CaptionList:
    """A JSON list of ``{"image", "caption"}`` records (caption: a string or a list of strings)."""

    def __init__(self, path: str | Path, image_root: str | Path | None = None):
        self.path = Path(path)
        records = read_json_file(self.path, what="image-caption list", error=CaptionListError,
                                 missing=CaptionListError)
        if not isinstance(records, list) or not records:
            raise CaptionListError(f"{self.path}: expected a non-empty JSON list of {{image, caption}} records")
        self.records: list[Any] = records
        self.root = Path(image_root) if image_root is not None else self.path.parent

    def __len__(self) -> int:
        return len(self.records)

    def item(self, index: int) -> CaptionListItem:
        """Record ``index`` checked and resolved; :class:`CaptionListError` names what is wrong."""
        if not -len(self) <= index < len(self):
            raise CaptionListError(f"{self.path}: index {index} is outside the list (it has {len(self)} records, "
                                   f"0..{len(self) - 1})")
        index %= len(self)
        record = self.records[index]
        where = f"{self.path}[{index}]"
        if not isinstance(record, dict):
            raise CaptionListError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
        image = record.get("image")
        if not isinstance(image, str) or not image:
            raise CaptionListError(f"{where}: the record has no 'image' path")
        captions = record.get("caption")
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptionListError(f"{where}: 'caption' must be a string or a non-empty list of strings")
        path = Path(image)
        return CaptionListItem(index, path if path.is_absolute() else self.root / path, list(captions), record)
