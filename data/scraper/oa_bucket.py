"""Where a PMC figure's image file lives: the PMC Cloud Service bucket ``pmc-oa-opendata``.

Layout as documented by NCBI ("Accessing PMC Article Datasets Using Amazon Web
Services", https://pmc.ncbi.nlm.nih.gov/tools/pmcaws/, the structure in force
since the April 13, 2026 change; checked 2026-12-01), read over plain HTTPS
(no AWS account, no SDK):

1. ``GET {bucket}/?list-type=2&prefix=PMC123.&delimiter=/`` lists the article's
   versions (common prefixes ``PMC123.1/``, ``PMC123.2/``); the latest is used.
2. ``GET {bucket}/metadata/PMC123.{v}.json``: the article version's metadata:
   ``license_code``, ``is_retracted``, ``is_pmc_openaccess`` and ``media_urls``
   (``s3://pmc-oa-opendata/PMC123.{v}/gr1.jpg?md5=<hex digest>``). Every S3 URL
   carries the object's MD5 as the ``md5`` query parameter: it is split off here
   and checked against the downloaded bytes. When a metadata file carries no
   ``media_urls`` the version folder is listed (then no digest is known).
3. The JATS ``<graphic xlink:href>`` is matched to a media file by name or by
   stem (hrefs usually have no extension; TIFF originals are served as JPEG).

The legacy route (OA Web Service + FTP packages) is in ``oa_package.py``.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from data.scraper.http import FetchError, HttpClient, Response
from data.scraper.jats import JatsError, parse_xml
from data.scraper.licenses import normalize_license

__all__ = [
    "ArticleMedia",
    "BucketResolver",
    "MediaFile",
    "Memo",
    "match_media",
    "is_safe_href",
    "split_s3_url",
    "validate_xml",
    "DEFAULT_BUCKET_URL",
]

DEFAULT_BUCKET_URL = "https://pmc-oa-opendata.s3.amazonaws.com"
BUCKET_NAME = "pmc-oa-opendata"
# Preferred first: PMC serves web-ready JPEG/PNG next to TIFF originals; GIFs are often thumbnails.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".webp", ".bmp")
_MD5 = re.compile(r"[0-9a-f]{32}")

T = TypeVar("T")


def is_safe_href(href: str) -> bool:
    """A graphic href we are willing to look up: no scheme, no absolute path, no '..'."""
    if not href or "\x00" in href or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", href):
        return False
    parts = re.split(r"[\\/]", href)
    return not href.startswith(("/", "\\")) and ".." not in parts and not href.startswith("~")


def _split_ext(name: str) -> tuple[str, str]:
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def match_media(names: Iterable[str], href: str) -> str | None:
    """The media file name that holds the image ``href`` refers to, or None.

    Files with the href's stem and an image extension compete in
    :data:`IMAGE_EXTENSIONS` order, even when the href names one: JATS often
    points at the TIFF original ("fig3.tif") while PMC serves the same image
    as a much smaller JPEG, which is what training wants.
    """
    base = PurePosixPath(href.replace("\\", "/")).name
    stem, _ = _split_ext(base)
    candidates = {}
    for name in names:
        name_stem, ext = _split_ext(name)
        if ext and name_stem == stem:
            candidates.setdefault(ext, name)
    for ext in IMAGE_EXTENSIONS:
        if ext in candidates:
            return candidates[ext]
    return None


class Memo:
    """Compute a value once per key even when several threads ask at once (bounded LRU)."""

    def __init__(self, maxsize: int):
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._futures: OrderedDict[str, Future] = OrderedDict()

    def get(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            future = self._futures.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._futures[key] = future
                while len(self._futures) > self._maxsize:
                    self._futures.popitem(last=False)
            else:
                self._futures.move_to_end(key)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as exc:  # cached so concurrent askers see the same failure
                future.set_exception(exc)
        return future.result()


@dataclass(frozen=True)
class MediaFile:
    """One object of an article version: its HTTPS URL (no query) and NCBI's MD5 digest ("" when unknown)."""

    url: str
    md5: str = ""


def split_s3_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/key?md5=hex`` -> (bucket, key, md5); http(s) URLs give ("", URL without query, md5).

    A parsed URL, not string slicing: the ``?md5=`` parameter must not end up in
    the file name (``gr1.jpg?md5=...`` has no image extension and matches nothing).
    """
    parts = urlsplit(url.strip())
    digest = (parse_qs(parts.query).get("md5") or [""])[0].strip().lower()
    digest = digest if _MD5.fullmatch(digest) else ""
    if parts.scheme == "s3":
        return parts.netloc, parts.path.lstrip("/"), digest
    return "", parts._replace(query="", fragment="").geturl(), digest


@dataclass
class ArticleMedia:
    """The media files of one article version in the bucket, and the flags of its metadata."""

    pmcid: str
    version: int
    license: str
    files: dict[str, MediaFile] = field(default_factory=dict)  # base name -> file
    retracted: bool | None = None  # metadata "is_retracted"; None when the metadata does not say
    open_access: bool | None = None  # metadata "is_pmc_openaccess"

    def media_for(self, href: str) -> MediaFile | None:
        name = match_media(self.files, href)
        return self.files[name] if name else None


def _validate_metadata(response: Response) -> None:
    if response.status == 200 and not isinstance(response.json(), dict):
        raise ValueError("metadata is not a JSON object")


def validate_xml(response: Response) -> None:
    """``HttpClient.fetch`` validator: a 200 body must parse as XML (else it is retried, then ``malformed``)."""
    if response.status == 200:
        try:
            parse_xml(response.content, response.url)
        except JatsError as exc:
            raise ValueError(str(exc)) from None


def _localname(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _child_text(root: etree._Element, name: str) -> str:
    for el in root:
        if _localname(el) == name:
            return (el.text or "").strip()
    return ""


class BucketResolver:
    """Resolve figure hrefs to HTTPS URLs in the PMC OA bucket (memoized per article)."""

    def __init__(self, client: HttpClient, base_url: str = DEFAULT_BUCKET_URL, *, cache_size: int = 256):
        self.client = client
        self.base_url = base_url.rstrip("/")
        self._memo = Memo(cache_size)

    def media_file(self, url: str) -> tuple[str, MediaFile]:
        """A metadata URL -> (base name, file). ``s3://pmc-oa-opendata/KEY`` becomes ``{base}/KEY``."""
        bucket, key, digest = split_s3_url(url)
        if bucket == BUCKET_NAME:
            https = f"{self.base_url}/{key}"
        elif bucket:
            https = f"https://{bucket}.s3.amazonaws.com/{key}"
        else:
            https = key
        return PurePosixPath(urlsplit(https).path).name, MediaFile(https, digest)

    def _list(self, prefix: str, delimiter: str | None) -> tuple[list[str], list[str]]:
        """Keys and common prefixes under ``prefix`` (follows continuation tokens)."""
        keys: list[str] = []
        prefixes: list[str] = []
        token = None
        for _ in range(100):  # 100 pages x 1000 keys is far more than any article has
            params = {"list-type": "2", "prefix": prefix}
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            response = self.client.fetch(
                f"{self.base_url}/", service="bucket", params=params, validate=validate_xml
            )
            if response.status != 200:
                raise FetchError(f"http_{response.status}", f"bucket listing {response.url}: HTTP {response.status}")
            root = parse_xml(response.content, response.url)
            for el in root:
                name = _localname(el)
                if name == "Contents":
                    keys += [(c.text or "").strip() for c in el if _localname(c) == "Key"]
                elif name == "CommonPrefixes":
                    prefixes += [(c.text or "").strip() for c in el if _localname(c) == "Prefix"]
            truncated = _child_text(root, "IsTruncated").lower() == "true"
            token = _child_text(root, "NextContinuationToken")
            if not truncated or not token:
                break
        return keys, prefixes

    def latest_version(self, pmcid: str) -> int | None:
        _, prefixes = self._list(f"{pmcid}.", "/")
        versions = []
        for prefix in prefixes:
            match = re.fullmatch(rf"{re.escape(pmcid)}\.(\d+)/", prefix)
            if match:
                versions.append(int(match.group(1)))
        return max(versions) if versions else None

    def media(self, pmcid: str) -> ArticleMedia | None:
        """The article's media in the bucket; None when the article is not there."""
        return self._memo.get(pmcid, lambda: self._load(pmcid))

    def _load(self, pmcid: str) -> ArticleMedia | None:
        version = self.latest_version(pmcid)
        if version is None:
            return None
        response = self.client.fetch(
            f"{self.base_url}/metadata/{pmcid}.{version}.json", service="bucket", validate=_validate_metadata
        )
        if response.status in (403, 404):
            return None
        if response.status != 200:
            raise FetchError(f"http_{response.status}", f"bucket metadata {response.url}: HTTP {response.status}")
        meta = response.json()
        urls = meta.get("media_urls")
        if not isinstance(urls, list):
            keys, _ = self._list(f"{pmcid}.{version}/", None)
            urls = [f"s3://{BUCKET_NAME}/{key}" for key in keys]
        files: dict[str, MediaFile] = {}
        for url in urls:
            if isinstance(url, str) and url:
                name, media = self.media_file(url)
                if name:
                    files.setdefault(name, media)
        return ArticleMedia(
            pmcid=pmcid,
            version=version,
            license=normalize_license(str(meta.get("license_code") or "")),
            files=files,
            retracted=_flag(meta.get("is_retracted")),
            open_access=_flag(meta.get("is_pmc_openaccess")),
        )


def _flag(value: object) -> bool | None:
    """A metadata boolean; anything but true/false (absent, null, a string) is "unknown"."""
    return value if isinstance(value, bool) else None
