"""Download and verify figure images; name and place them safely; run workers in order.

* Verification: when the source publishes the object's MD5 (the PMC Cloud
  Service does, as ``?md5=`` on every S3 URL) the bytes must match it -- a
  mismatch is retried like any bad response, then skipped as ``md5_mismatch``;
  the HTTP content type must be an image (or the generic octet-stream S3 uses),
  the size is capped while streaming, the header is
  checked against the pixel cap before decoding, the format must be a plain
  raster format (PIL would hand EPS to Ghostscript), and the image must
  decode fully (``data.image_io.open_image``), so truncated files are caught.
* Names: ``images/<PMCID>/<PMCID>_<figure id>_<hash>.<ext>``, built only from
  validated identifiers and a hash of the figure identity -- never from an
  href or URL -- and checked to resolve inside the output folder.
* Order: :func:`ordered_map` runs downloads concurrently but hands results
  back in candidate order, so "first wins" for duplicate content and the
  ``--num`` cut-off are the same for an interrupted-and-resumed run as for an
  uninterrupted one.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from data.image_io import DEFAULT_MAX_PIXELS, ImageError, open_image, probe_image
from data.scraper.http import FetchError, HttpClient, InvalidResponse, Response

__all__ = [
    "ALLOWED_FORMATS",
    "ImageLimits",
    "SkipError",
    "VerifiedImage",
    "TRANSIENT_REASONS",
    "download_image",
    "image_relpath",
    "ordered_map",
    "safe_join",
    "verify_image_bytes",
]

ALLOWED_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "TIFF": "tif", "BMP": "bmp", "WEBP": "webp"}
# Worth another try on a later run; everything else is a property of the item itself.
TRANSIENT_REASONS = frozenset(
    {
        "timeout",
        "connection_error",
        "incomplete_body",
        "request_error",
        "malformed",
        "http_429",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
    }
)
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/binary"}
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")

T = TypeVar("T")
R = TypeVar("R")


class SkipError(Exception):
    """This figure cannot be used; ``reason`` is its skip-counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 64


@dataclass
class VerifiedImage:
    data: bytes
    sha256: str
    ext: str
    width: int
    height: int


def verify_image_bytes(data: bytes, content_type: str, limits: ImageLimits, source: str) -> VerifiedImage:
    """Check everything we can about an image before it is written; raise :class:`SkipError`."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type in _GENERIC_TYPES):
        raise SkipError("bad_content_type", f"{source}: served as {content_type!r}, not an image")
    if len(data) > limits.max_bytes:
        raise SkipError("too_large", f"{source}: {len(data)} bytes exceeds the cap of {limits.max_bytes}")
    try:
        info = probe_image(data, max_pixels=limits.max_pixels, min_side=limits.min_side)
        if info.format not in ALLOWED_FORMATS:
            raise SkipError("unsupported_format", f"{source}: {info.format} images are not accepted")
        with open_image(data, max_pixels=limits.max_pixels, min_side=limits.min_side, convert_rgb=False) as img:
            width, height = img.size
    except ImageError as exc:
        raise SkipError(exc.reason, f"{source}: {exc}") from None
    return VerifiedImage(
        data=data, sha256=hashlib.sha256(data).hexdigest(), ext=ALLOWED_FORMATS[info.format], width=width, height=height
    )


def _md5_check(expected: str):
    """A ``fetch`` validator: the 200 body must have the published MD5 (corrupt or truncated copies are retried)."""

    def validate(response: Response) -> None:
        if response.status == 200:
            actual = hashlib.md5(response.content, usedforsecurity=False).hexdigest()
            if actual != expected:
                message = f"MD5 {actual} of {len(response.content)} bytes, expected {expected}"
                raise InvalidResponse("md5_mismatch", message)

    return validate


def download_image(
    client: HttpClient, url: str, *, service: str, limits: ImageLimits, md5: str = ""
) -> VerifiedImage:
    """GET ``url`` (rate-limited, retried), check its MD5 when one is known, verify it; raise :class:`SkipError`."""
    try:
        response = client.fetch(
            url, service=service, max_bytes=limits.max_bytes, validate=_md5_check(md5.lower()) if md5 else None
        )
    except FetchError as exc:
        raise SkipError(exc.reason, str(exc)) from None
    if response.status != 200:
        raise SkipError(f"http_{response.status}", f"{response.url}: HTTP {response.status}")
    return verify_image_bytes(response.content, response.content_type, limits, response.url)


def _safe_part(text: str, fallback: str, limit: int = 40) -> str:
    cleaned = _SAFE_CHARS.sub("_", text).strip("_")[:limit]
    return cleaned or fallback


def image_relpath(article_id: str, figure_id: str, key: str, ext: str) -> str:
    """``images/<article>/<article>_<figure>_<hash>.<ext>``: readable, unique, path-safe."""
    article = _safe_part(article_id, "article", 32)
    figure = _safe_part(figure_id, "fig")
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    if not re.fullmatch(r"[a-z0-9]{1,5}", ext):
        raise ValueError(f"bad image extension {ext!r}")
    return f"images/{article}/{article}_{figure}_{digest}.{ext}"


def safe_join(root: Path, relpath: str) -> Path:
    """``root / relpath``, refusing anything that would resolve outside ``root``."""
    root_resolved = root.resolve()
    target = (root_resolved / relpath).resolve()
    if not target.is_relative_to(root_resolved) or target == root_resolved:
        raise ValueError(f"refusing to write {relpath!r}: it resolves outside {root_resolved}")
    return target


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[tuple[T, Future]]:
    """Run ``fn`` over ``items`` on ``workers`` threads; yield ``(item, done future)`` in input order.

    At most ``window`` items are in flight (default 2 x workers), so an early
    stop wastes little. Closing the generator cancels what has not started.
    """
    window = window or 2 * workers
    iterator = iter(items)
    pending: deque[tuple[T, Future]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape-dl")
    try:
        for item in iterator:
            pending.append((item, executor.submit(fn, item)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            future.exception()  # wait
            yield item, future
            nxt = next(iterator, _END)
            if nxt is not _END:
                pending.append((nxt, executor.submit(fn, nxt)))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


_END = object()
