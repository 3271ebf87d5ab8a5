"""The manifest of a set of shards: what each shard holds, how big it is, its checksum.

``manifest.json`` (written atomically)::

    {"format": "medvlp-shards", "version": 1,
     "source": "roco", "license": "...",          # defaults for shards that do not say otherwise
     "settings": {...},                           # how the shards were made (prepare) or indexed
     "shards": [{"path": "shard-000000.tar", "samples": 9876, "bytes": 512000000,
                 "sha256": "...", "excluded": {"<key>": "<reason>"}}, ...],
     "counts": {"records_in": ..., "samples": ..., "skipped": {"<reason>": n}},
     "sources": {"roco": 1234, ...}}

``samples`` counts the usable samples of a shard: its samples in file order (``tar_index``), less
those that are unusable (no image or caption field) or ``excluded`` (found bad when indexed).
A shard path is relative to the manifest's folder unless absolute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.atomic import atomic_write_json
from utils.errors import DatasetError
from utils.json_file import read_json_file

__all__ = ["MANIFEST_NAME", "ShardInfo", "Manifest", "file_sha256", "usable_samples"]

MANIFEST_NAME = "manifest.json"
FORMAT = "medvlp-shards"
VERSION = 1


@dataclass
class ShardInfo:
    path: Path
    samples: int
    bytes: int
    sha256: str
    excluded: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    license: str | None = None


@dataclass
class Manifest:
    path: Path
    shards: list[ShardInfo]
    source: str
    license: str
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def fingerprint(self) -> str:
        """Changes when any shard's content changes: resuming mid-epoch on other data is refused."""
        blob = json.dumps([[s.sha256, s.samples] for s in self.shards])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path, *, check_sizes: bool = True) -> "Manifest":
        """Read ``path`` (a manifest file or the folder holding ``manifest.json``).

        ``check_sizes``: every shard must exist with the byte size the manifest records (a cheap
        check that catches truncated copies; ``python -m data.prepare verify`` checks the sha256).
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        data = read_json_file(path, what="shard manifest", error=DatasetError, missing=DatasetError)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a shard manifest (no \"format\": \"{FORMAT}\")")
        if int(data.get("version", 0)) > VERSION:
            raise DatasetError(f"{path}: manifest version {data['version']} is newer than this code ({VERSION})")
        shards = []
        for i, entry in enumerate(data.get("shards", [])):
            try:
                shard_path = Path(entry["path"])
                info = ShardInfo(
                    path=shard_path if shard_path.is_absolute() else path.parent / shard_path,
                    samples=int(entry["samples"]), bytes=int(entry["bytes"]), sha256=str(entry["sha256"]),
                    excluded={str(k): str(v) for k, v in entry.get("excluded", {}).items()},
                    source=entry.get("source"), license=entry.get("license"),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{path}: shards[{i}] is malformed ({exc!r})") from None
            if check_sizes:
                if not info.path.is_file():
                    raise DatasetError(f"{path}: shard {info.path} is missing")
                size = info.path.stat().st_size
                if size != info.bytes:
                    raise DatasetError(
                        f"{path}: shard {info.path} has {size} bytes, the manifest says {info.bytes} "
                        "(changed or truncated since it was written)"
                    )
            shards.append(info)
        if not shards:
            raise DatasetError(f"{path}: the manifest lists no shards")
        return cls(
            path=path, shards=shards, source=str(data.get("source", "unknown")),
            license=str(data.get("license", "unknown")), settings=dict(data.get("settings", {})),
            counts=dict(data.get("counts", {})),
        )

    def to_json(self) -> dict[str, Any]:
        folder = self.path.parent
        shards = []
        for s in self.shards:
            try:
                rel = s.path.relative_to(folder).as_posix()
            except ValueError:
                rel = str(s.path)
            entry: dict[str, Any] = {"path": rel, "samples": s.samples, "bytes": s.bytes, "sha256": s.sha256}
            entry.update({k: v for k, v in (("excluded", s.excluded), ("source", s.source), ("license", s.license)) if v})
            shards.append(entry)
        return {
            "format": FORMAT, "version": VERSION, "source": self.source, "license": self.license,
            "settings": self.settings, "shards": shards, "counts": self.counts,
        }

    def save(self) -> None:
        atomic_write_json(self.path, self.to_json(), indent=1)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def usable_samples(samples: list, excluded: dict[str, str]) -> list:
    """The samples training reads, in file order: the same rule at index time and at read time."""
    from data.shards.tar_index import sample_problem

    return [s for s in samples if sample_problem(s) is None and s.key not in excluded]
