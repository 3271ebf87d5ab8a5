"""What every converter shares: the record it writes, image checks, counts by reason, the output files.

A converter turns one public data set, in the layout its publishers document, into this project's
pretraining format: a JSON list of ``{"image", "caption", "source", "license", "source_id", ...}``.
``source`` names the set, ``license`` is the record's licence as the set states it (per article for
ROCO and MedICaT; the set's terms where it gives none per record), ``source_id`` is the set's own id
of the record, so a record can always be traced back and a licence filter applied later.

Bad input never stops a conversion: a record that cannot be used is skipped and counted by reason
with where it was (``file:line`` or the image path); a file that cannot be read at all (missing,
wrong format) is an error naming it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from data.captions import clean_caption_text
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image, probe_image
from engine.skips import SkipCounter
from utils.atomic import atomic_write_json
from utils.errors import DatasetError

__all__ = [
    "ImageCheck",
    "Conversion",
    "check_image",
    "make_record",
    "read_jsonl",
    "read_csv_rows",
    "write_conversion",
]

ImageCheck = Literal["none", "exists", "header", "decode"]


@dataclass
class Conversion:
    """The records a converter produced and what it skipped, by reason."""

    source: str
    records: list[dict[str, Any]] = field(default_factory=list)
    skips: SkipCounter = field(default_factory=lambda: SkipCounter(max_examples=20))
    seen: int = 0

    def add(
        self, image: Path | None, caption: str, *, where: str, image_check: ImageCheck,
        license: str | None, source_id: str, **extra: Any,
    ) -> bool:
        """Validate one pair and keep it as a record; count it by reason and return False if unusable.

        ``image`` None means the record names no image; ``caption`` is already cleaned text.
        """
        if image is None:
            self.skips.add("missing_image_field", where)
            return False
        if not caption:
            self.skips.add("empty_caption", where)
            return False
        problem = check_image(image, image_check)
        if problem:
            self.skips.add(problem, str(image))
            return False
        self.records.append(
            make_record(image, caption, source=self.source, license=license, source_id=source_id, **extra)
        )
        return True

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records_in": self.seen,
            "records_out": len(self.records),
            "skipped": dict(sorted(self.skips.counts.items())),
            "skipped_total": self.skips.total,
            "examples": [list(pair) for pair in self.skips.examples],
        }


def check_image(path: Path, mode: ImageCheck, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """``None`` if the image passes ``mode``, else the reason it fails.

    ``exists``: a non-empty file; ``header``: Pillow reads its header (cheap: no decode);
    ``decode``: it decodes fully (catches truncated files; ~10 ms per figure).
    """
    if mode == "none":
        return None
    try:
        if mode == "exists":
            if not path.is_file():
                return "missing_image"
            if path.stat().st_size == 0:
                return "empty_image"
            return None
        if mode == "header":
            probe_image(path, max_pixels=max_pixels)
        else:
            open_image(path, max_pixels=max_pixels).close()
    except ImageError as err:
        return "missing_image" if err.reason == "missing" else f"image_{err.reason}"
    return None


def make_record(
    image: Path | str, caption: str, *, source: str, license: str | None, source_id: str, **extra: Any
) -> dict[str, Any]:
    """One output record; ``caption`` keeps case and punctuation (training cleans it at load)."""
    record = {
        "image": str(image),
        "caption": caption,
        "source": source,
        "license": license if license else "unknown",
        "source_id": source_id,
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def clean_text(text: Any) -> str:
    """Caption text without markup and runs of whitespace; ``""`` for anything not a string."""
    return clean_caption_text(text) if isinstance(text, str) else ""


def read_jsonl(path: Path, conversion: Conversion) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per line; malformed lines and non-objects are counted, not fatal."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            conversion.seen += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                conversion.skips.add("malformed_json_line", f"{path}:{lineno} ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                conversion.skips.add("not_an_object", f"{path}:{lineno}")
                continue
            yield lineno, obj


def read_csv_rows(
    path: Path, conversion: Conversion, *, delimiter: str = ",", required: Iterable[str] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV with a header; missing required columns are an error."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: column(s) {missing} not in the header {header} (delimiter {delimiter!r})"
            )
        for row in reader:
            conversion.seen += 1
            if None in row:  # more fields than the header names
                conversion.skips.add("extra_fields", f"{path}:{reader.line_num}")
                continue
            yield reader.line_num, row


def relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when it is below it's parent chain, else absolute; posix form."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_posix()


def write_conversion(conversion: Conversion, out: Path) -> Path:
    """Write the records (image paths relative to ``out``'s folder) and ``<out>.report.json``."""
    out = Path(out)
    folder = out.parent
    records = [{**r, "image": relative_to(Path(r["image"]), folder)} for r in conversion.records]
    atomic_write_json(out, records)
    report_path = out.with_name(out.stem + ".report.json")
    atomic_write_json(report_path, conversion.report(), indent=2)
    return report_path
