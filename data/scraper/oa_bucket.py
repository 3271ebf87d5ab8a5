"""Where a PMC figure's image file lives: the PMC Open Access cloud bucket, or the OA package.

Primary route, the ``pmc-oa-opendata`` S3 bucket over plain HTTPS (no AWS
account, no SDK):

1. ``GET {bucket}/?list-type=2&prefix=PMC123.&delimiter=/`` lists the article's
   versions (common prefixes ``PMC123.1/``, ``PMC123.2/``); the latest is used.
2. ``GET {bucket}/metadata/PMC123.{v}.json``: the article's metadata, with its
   ``license_code`` and ``media_urls`` (``s3://pmc-oa-opendata/PMC123.{v}/name.jpg``).
   When a metadata file carries no ``media_urls`` the version folder is listed.
3. The JATS ``<graphic xlink:href>`` is matched to a media file by name or by
   stem (hrefs usually have no extension; TIFF originals are served as JPEG).

Fallback route, documented by PMC for the OA subset: the OA Web Service
(``oa.fcgi?id=PMC123``) names the article's ``.tar.gz`` package on the PMC FTP
server (served over HTTPS too); the package is downloaded once per article
and only its image members are read, in memory, by base name. Nothing from a
package is ever written under a name taken from the archive.
"""

from __future__ import annotations

import io
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TypeVar

from lxml import etree

from data.scraper.http import FetchError, HttpClient, Response
from data.scraper.jats import JatsError, parse_xml
from data.scraper.licenses import normalize_license

__all__ = [
    "ArticleMedia",
    "BucketResolver",
    "OAPackage",
    "OAPackageFallback",
    "match_media",
    "is_safe_href",
    "DEFAULT_BUCKET_URL",
    "DEFAULT_OA_SERVICE_URL",
    "DEFAULT_FTP_URL",
]

DEFAULT_BUCKET_URL = "https://pmc-oa-opendata.s3.amazonaws.com"
DEFAULT_OA_SERVICE_URL = "https://www.ncbi.nlm.nih.gov/pmc/utils/oa/oa.fcgi"
DEFAULT_FTP_URL = "https://ftp.ncbi.nlm.nih.gov"
BUCKET_NAME = "pmc-oa-opendata"
# Preferred first: PMC serves web-ready JPEG/PNG next to TIFF originals; GIFs are often thumbnails.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".webp", ".bmp")

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


class _Memo:
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


@dataclass
class ArticleMedia:
    """The media files of one article version in the bucket."""

    pmcid: str
    version: int
    license: str
    files: dict[str, str] = field(default_factory=dict)  # base name -> https URL

    def url_for(self, href: str) -> str | None:
        name = match_media(self.files, href)
        return self.files[name] if name else None


def _validate_metadata(response: Response) -> None:
    if response.status == 200 and not isinstance(response.json(), dict):
        raise ValueError("metadata is not a JSON object")


def _validate_listing(response: Response) -> None:
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
        self._memo = _Memo(cache_size)

    def https_url(self, url: str) -> str:
        """``s3://pmc-oa-opendata/KEY`` -> ``{base}/KEY``; http(s) URLs pass through."""
        prefix = f"s3://{BUCKET_NAME}/"
        if url.startswith(prefix):
            return f"{self.base_url}/{url[len(prefix) :]}"
        return url

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
                f"{self.base_url}/", service="bucket", params=params, validate=_validate_listing
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
        files: dict[str, str] = {}
        for url in urls:
            if isinstance(url, str) and url:
                files.setdefault(PurePosixPath(url).name, self.https_url(url))
        return ArticleMedia(
            pmcid=pmcid, version=version, license=normalize_license(str(meta.get("license_code") or "")), files=files
        )


@dataclass
class OAPackage:
    url: str
    images: dict[str, bytes]  # base name -> file content


class OAPackageFallback:
    """Images from the article's OA package (``oa.fcgi`` -> ``.tar.gz``), memoized per article."""

    def __init__(
        self,
        client: HttpClient,
        service_url: str = DEFAULT_OA_SERVICE_URL,
        ftp_url: str = DEFAULT_FTP_URL,
        *,
        max_package_bytes: int = 512 * 1024 * 1024,
        max_image_bytes: int = 64 * 1024 * 1024,
        cache_size: int = 4,
    ):
        self.client = client
        self.service_url = service_url
        self.ftp_url = ftp_url.rstrip("/")
        self.max_package_bytes = max_package_bytes
        self.max_image_bytes = max_image_bytes
        self._memo = _Memo(cache_size)

    def package_url(self, pmcid: str) -> str | None:
        """The tgz link the OA Web Service gives, as HTTPS; None if not in the OA subset."""
        response = self.client.fetch(self.service_url, service="ncbi", params={"id": pmcid}, validate=_validate_listing)
        if response.status != 200:
            raise FetchError(f"http_{response.status}", f"OA service {response.url}: HTTP {response.status}")
        root = parse_xml(response.content, response.url)
        for link in root.iter("link"):
            if link.get("format") == "tgz" and link.get("href"):
                href = link.get("href").strip()
                for prefix in (
                    "ftp://ftp.ncbi.nlm.nih.gov",
                    "https://ftp.ncbi.nlm.nih.gov",
                    "http://ftp.ncbi.nlm.nih.gov",
                ):
                    if href.startswith(prefix):
                        return self.ftp_url + href[len(prefix) :]
                return href
        return None

    def package(self, pmcid: str) -> OAPackage | None:
        """The article's package images by base name; None when the article has no package."""
        return self._memo.get(pmcid, lambda: self._load(pmcid))

    def _load(self, pmcid: str) -> OAPackage | None:
        url = self.package_url(pmcid)
        if url is None:
            return None
        response = self.client.fetch(url, service="ncbi", max_bytes=self.max_package_bytes)
        if response.status == 404:
            return None
        if response.status != 200:
            raise FetchError(f"http_{response.status}", f"OA package {response.url}: HTTP {response.status}")
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:*") as archive:
                for member in archive:
                    if not member.isfile() or member.size > self.max_image_bytes:
                        continue
                    name = PurePosixPath(member.name.replace("\\", "/")).name
                    if not _split_ext(name)[1] or name in images:
                        continue
                    handle = archive.extractfile(member)
                    if handle is not None:
                        images[name] = handle.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError("bad_package", f"OA package {url}: not a readable tar.gz ({exc})") from None
        return OAPackage(url=url, images=images)
