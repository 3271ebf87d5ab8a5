"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

A reader (or a rerun after ``kill -9``) sees either the old file or the
complete new one, never a half-written file. Used for images, JSON lists,
manifests, logs' summaries and checkpoints alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = [
    "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save", "atomic_directory",
]

TMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished files get the usual 0666 & ~umask instead.
_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    Temporary names start with ``.`` and end with ``.tmp`` so globs skip them.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not possible on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomic write through a callback that writes to a binary handle (e.g. ``torch.save``)."""
    with atomic_open(path, "wb") as handle:
        writer(handle)


def _is_used(folder: Path) -> bool:
    return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A staging folder beside ``path`` to fill; renamed to ``path`` when the block succeeds.

    ``path`` must not exist or be an empty folder: a folder with content is never
    replaced (``FileExistsError``). On an exception the staging folder is removed
    and ``path`` is untouched, so a reader never sees half a tokenizer or model.
    """
    target = Path(path)
    if _is_used(target):
        raise FileExistsError(f"{target} exists and is not empty; choose another folder or delete it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        yield staging
        if _is_used(target):  # filled by someone else meanwhile
            raise FileExistsError(f"{target} exists and is not empty; choose another folder or delete it")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(target.parent)
