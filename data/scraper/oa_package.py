"""The legacy route to a figure's image: the OA Web Service names the article's ``.tar.gz`` package on the FTP server.

``oa.fcgi?id=PMC123`` answers a ``<record>`` with a ``<link format="tgz"
href="ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/..">``; the package is
downloaded once per article and only its image members are read, in memory,
by base name. Nothing from a package is ever written under a name taken from
the archive.

Why the route is only used when it proves to work: NCBI's notices (OA Web
Service page https://pmc.ncbi.nlm.nih.gov/tools/oa-service/ and the PMC Cloud
Service page https://pmc.ncbi.nlm.nih.gov/tools/pmcaws/, checked 2026-12-01)
say that on April 13, 2026 every legacy file moved under ``deprecated/`` on the
FTP server and in the bucket, and that the legacy files were removed in August
2026; the hrefs into ``/pub/pmc/oa_package/`` therefore fail. What ``oa.fcgi``
itself answers after the removal is not documented. So the first time a run
needs the route it is probed: a 4xx from ``oa.fcgi`` or from the package URL,
or an ``oa.fcgi`` answer that is not its XML, marks the route *unavailable*
for the rest of the run (one probe, then no more requests), and the figures
that needed it are skipped as ``route_unavailable`` -- not as missing figures.
Once a package has been served, the route is *working* and a later 404 is that
one article's problem (``package_missing``). A mirror can be used with
``--oa_service_url`` / ``--ftp_url``.
"""

from __future__ import annotations

import io
import tarfile
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

from data.scraper.http import FetchError, HttpClient
from data.scraper.jats import parse_xml
from data.scraper.oa_bucket import IMAGE_EXTENSIONS, Memo, validate_xml

__all__ = ["OAPackage", "LegacyPackageRoute", "DEFAULT_OA_SERVICE_URL", "DEFAULT_FTP_URL"]

DEFAULT_OA_SERVICE_URL = "https://www.ncbi.nlm.nih.gov/pmc/utils/oa/oa.fcgi"
DEFAULT_FTP_URL = "https://ftp.ncbi.nlm.nih.gov"
_FTP_PREFIXES = ("ftp://ftp.ncbi.nlm.nih.gov", "https://ftp.ncbi.nlm.nih.gov", "http://ftp.ncbi.nlm.nih.gov")


@dataclass
class OAPackage:
    url: str
    images: dict[str, bytes]  # base name -> file content
    retracted: bool | None = None  # the OA record's retracted="yes|no"


class LegacyPackageRoute:
    """Images from the article's OA package (``oa.fcgi`` -> ``.tar.gz``), probed at run time, memoized per article."""

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
        self._memo = Memo(cache_size)
        self._lock = threading.Lock()  # guards the two fields below
        self._probe = threading.Lock()  # serializes packages while the route is untested
        self._working = False
        self._unavailable = ""  # why, once the probe failed

    @property
    def status(self) -> str:
        """For the run summary: "working", "unavailable: <why>" or "not tried"."""
        with self._lock:
            if self._unavailable:
                return f"unavailable: {self._unavailable}"
            return "working" if self._working else "not tried (no article needed it)"

    def package(self, pmcid: str) -> OAPackage | None:
        """The article's package images by base name; None when the article has no package.

        Raises :class:`FetchError` with reason ``route_unavailable`` once the
        route is known not to work, ``package_missing`` for a package that a
        working route does not have, or a transient reason (timeouts, 5xx).
        """
        with self._lock:
            working = self._working
        if working:
            return self._memo.get(pmcid, lambda: self._load(pmcid))
        with self._probe:  # until the route has proved itself, one article at a time: one probe, not one per thread
            with self._lock:
                if self._unavailable:
                    raise FetchError(
                        "route_unavailable", f"{pmcid}: legacy OA-package route unavailable ({self._unavailable})"
                    )
            return self._memo.get(pmcid, lambda: self._load(pmcid))

    def _give_up(self, pmcid: str, why: str) -> FetchError:
        with self._lock:
            if not self._working and not self._unavailable:
                self._unavailable = why
        return FetchError("route_unavailable", f"{pmcid}: legacy OA-package route unavailable ({why})")

    def _link(self, pmcid: str) -> tuple[str | None, bool | None]:
        """The tgz link the OA Web Service gives (as HTTPS) and the record's retraction flag."""
        try:
            response = self.client.fetch(self.service_url, service="ncbi", params={"id": pmcid}, validate=validate_xml)
        except FetchError as exc:
            if exc.reason == "malformed":  # answers, but not in its documented XML
                raise self._give_up(pmcid, f"OA Web Service {self.service_url} does not answer XML") from None
            raise
        if 400 <= response.status < 500:
            raise self._give_up(pmcid, f"OA Web Service {response.url}: HTTP {response.status}")
        if response.status != 200:
            raise FetchError(f"http_{response.status}", f"OA service {response.url}: HTTP {response.status}")
        root = parse_xml(response.content, response.url)
        for record in root.iter("record"):
            retracted = {"yes": True, "no": False}.get((record.get("retracted") or "").strip().lower())
            for link in record.iter("link"):
                href = (link.get("href") or "").strip()
                if link.get("format") == "tgz" and href:
                    for prefix in _FTP_PREFIXES:
                        if href.startswith(prefix):
                            return self.ftp_url + href[len(prefix) :], retracted
                    return href, retracted
        return None, None  # <error code="idIsNotOpenAccess"> and the like: no package for this article

    def _load(self, pmcid: str) -> OAPackage | None:
        url, retracted = self._link(pmcid)
        if url is None:
            return None
        response = self.client.fetch(url, service="ncbi", max_bytes=self.max_package_bytes)
        if 400 <= response.status < 500:
            with self._lock:
                working = self._working
            if working:
                raise FetchError("package_missing", f"OA package {response.url}: HTTP {response.status}")
            raise self._give_up(pmcid, f"OA package {response.url}: HTTP {response.status}")
        if response.status != 200:
            raise FetchError(f"http_{response.status}", f"OA package {response.url}: HTTP {response.status}")
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:*") as archive:
                for member in archive:
                    if not member.isfile() or member.size > self.max_image_bytes:
                        continue
                    name = PurePosixPath(member.name.replace("\\", "/")).name
                    if not name.lower().endswith(IMAGE_EXTENSIONS) or name in images:
                        continue
                    handle = archive.extractfile(member)
                    if handle is not None:
                        images[name] = handle.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError("bad_package", f"OA package {url}: not a readable tar.gz ({exc})") from None
        with self._lock:
            self._working = True
        return OAPackage(url=url, images=images, retracted=retracted)
