"""Index webdataset tars that already exist (LAION / img2dataset / open_clip) so training reads them as they are.

Nothing is rewritten: the manifest (written wherever ``out`` says, so read-only tar folders work)
records per tar the usable sample count, its size, sha256 and the keys found bad, by reason.
Checks per sample: an image field and a caption (``txt`` or ``json["caption"]``) exist, the caption
is not empty after BLIP's cleaning, and the image bytes pass ``image_check`` (``header``: Pillow
reads the header; ``decode``: full decode; ``none``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from data.captions import pre_caption
from data.convert.common import ImageCheck
from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image, probe_image
from data.shards.manifest import Manifest, ShardInfo, file_sha256
from data.shards.tar_index import read_caption, read_member, sample_problem, scan_tar

__all__ = ["index_tars"]


def _image_problem(data: bytes, mode: ImageCheck, max_pixels: int) -> str | None:
    if mode == "none":
        return None
    try:
        if mode == "decode":
            open_image(data, max_pixels=max_pixels).close()
        else:
            probe_image(data, max_pixels=max_pixels)
    except ImageError as err:
        return f"image_{err.reason}"
    return None


def index_tars(
    tars: list[Path],
    out: Path,
    *,
    source: str,
    license: str = "unknown",
    image_check: ImageCheck = "header",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_words: int = 30,
) -> Manifest:
    """Scan ``tars`` and write their manifest to ``out``."""
    if not tars:
        raise ValueError("no tar files given")
    skipped: Counter[str] = Counter()
    examples: list[list[str]] = []
    shards = []
    seen = 0
    for tar in sorted(Path(t).resolve() for t in tars):
        samples = scan_tar(tar)
        excluded: dict[str, str] = {}
        fd = os.open(tar, os.O_RDONLY)
        try:
            for sample in samples:
                seen += 1
                reason = sample_problem(sample)
                if reason is None:
                    caption = read_caption(fd, sample)
                    if not caption or not pre_caption(caption, max_words):
                        reason = "empty_caption"
                if reason is None:
                    reason = _image_problem(read_member(fd, sample.fields[sample.image_field]), image_check, max_pixels)
                if reason is not None:
                    skipped[reason] += 1
                    if len(examples) < 20:
                        examples.append([reason, f"{tar}:{sample.key}"])
                    if sample_problem(sample) is None:  # unusable samples are dropped by rule already
                        excluded[sample.key] = reason
        finally:
            os.close(fd)
        usable = sum(1 for s in samples if sample_problem(s) is None and s.key not in excluded)
        shards.append(ShardInfo(path=tar, samples=usable, bytes=tar.stat().st_size, sha256=file_sha256(tar),
                                excluded=excluded))
    manifest = Manifest(
        path=Path(out), shards=shards, source=source, license=license,
        settings={"indexed": True, "image_check": image_check, "max_words": max_words},
        counts={"records_in": seen, "samples": sum(s.samples for s in shards),
                "skipped": dict(sorted(skipped.items())), "skipped_total": sum(skipped.values()),
                "examples": examples, "sources": {source: sum(s.samples for s in shards)}},
    )
    manifest.save()
    return manifest
