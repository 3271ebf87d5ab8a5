"""A local HTTP server that plays NCBI E-utilities, the PMC Cloud Service bucket, the legacy OA service and Open-i.

Used by the scraper tests and by ``bench/bench_scrape_rate.py``. It binds to
127.0.0.1 only. Responses copy the services' documented shapes; the
hand-written recorded responses they follow are in ``tests/data/scrape/``
(sources and the date they were checked: ``tests/data/scrape/SOURCES.md``):

* ESearch JSON, paging only the first 9,999 records of a search (a larger
  ``retstart`` answers an ``ERROR``) and honouring ``YYYY/MM/DD:YYYY/MM/DD[pmcrdat]``
  windows against :attr:`FakeServices.release_dates`;
* ``<pmc-articleset>`` efetch XML;
* the bucket: S3 ``ListBucketResult``; per article version the metadata JSON in
  NCBI's sample-object shape (every S3 URL with ``?md5=``, ``title`` included)
  under ``metadata/`` and in the version folder;
* ``oa.fcgi`` XML, and FTP packages that can be marked removed (as NCBI did in
  August 2026);
* Open-i search JSON (``uid`` per article, ``pmcid`` a bare number, relative
  ``imgLarge``, ``ccLicense``), with ``{"Query-Error": ...}`` for unknown filter values.

Faults are queued per path: ``server.fault("/bucket/PMC1.1/gr1.jpg", Fault.hang(), Fault.status(500))``
makes the next two requests to that path hang and fail, then it behaves.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from data.image_io import open_image
from data.scraper.splits import load_records

FIXTURES = Path(__file__).resolve().parent / "data" / "scrape"
ESEARCH_WINDOW = 9999  # records ESearch pages through (retstart 0 .. 9998)
OPENI_IMAGE_TYPES = {"xg", "xm", "x", "u", "ph", "p", "mc", "m", "g", "c"}
OPENI_COLLECTIONS = {"pmc", "cxr", "usc", "hmd", "mpx"}
_PMCRDAT = re.compile(r"(\d{4}/\d{1,2}/\d{1,2}):(\d{4}/\d{1,2}/\d{1,2})\[pmcrdat\]")


def fixture(name: str) -> bytes:
    """A recorded response from tests/data/scrape/ (hand-written from the documented formats)."""
    return (FIXTURES / name).read_bytes()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


XLINK = 'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML" xmlns:ali="http://www.niso.org/schemas/ali/1.0/"'


# -- images ---------------------------------------------------------------------------------------
def make_image(width: int = 96, height: int = 80, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small image whose bytes differ per seed (noise), so content hashes differ."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_flat_png(width: int, height: int) -> bytes:
    """A large but tiny-on-disk image (one colour) for pixel-cap tests."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def make_tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- JATS -----------------------------------------------------------------------------------------
def jats_article(
    pmcid: str,
    body: str | None,
    *,
    title: str = "A study",
    license_xml: str = '<license license-type="open-access" xlink:href="https://creativecommons.org/licenses/by/4.0/">'
    "<license-p>This is an open access article under the CC BY license.</license-p></license>",
    new_style_id: bool = True,
    back: str = "",
    floats: str = "",
    pmid: str = "",
    doi: str = "",
) -> str:
    """A PMC-shaped ``<article>``; ``body=None`` gives front matter only (what non-OA articles look like)."""
    number = pmcid[3:]
    ids = (
        f'<article-id pub-id-type="pmcid">{pmcid}</article-id>'
        f'<article-id pub-id-type="pmcid-ver">{pmcid}.1</article-id>'
        if new_style_id
        else f'<article-id pub-id-type="pmc">{number}</article-id>'
    )
    if pmid:
        ids += f'<article-id pub-id-type="pmid">{pmid}</article-id>'
    if doi:
        ids += f'<article-id pub-id-type="doi">{doi}</article-id>'
    front = (
        '<front><journal-meta><journal-id journal-id-type="nlm-ta">Radiol Case Rep</journal-id>'
        "<journal-title-group><journal-title>Radiology Case Reports</journal-title></journal-title-group>"
        '<issn pub-type="epub">1930-0433</issn><publisher><publisher-name>Elsevier</publisher-name></publisher>'
        f"</journal-meta><article-meta>{ids}"
        '<article-categories><subj-group subj-group-type="heading"><subject>Case Report</subject></subj-group>'
        f"</article-categories><title-group><article-title>{title}</article-title></title-group>"
        '<contrib-group><contrib contrib-type="author"><name><surname>Doe</surname><given-names>Jane</given-names>'
        "</name></contrib></contrib-group>"
        '<pub-date pub-type="epub"><day>3</day><month>2</month><year>2020</year></pub-date>'
        '<pub-date pub-type="collection"><month>4</month><year>2020</year></pub-date>'
        "<volume>15</volume><issue>4</issue><fpage>101</fpage><lpage>104</lpage>"
        f"<permissions><copyright-statement>\u00a9 2020 The Authors</copyright-statement>{license_xml}</permissions>"
        "<abstract><p>Background and findings.</p></abstract>"
        "<kwd-group><kwd>MRI</kwd></kwd-group></article-meta></front>"
    )
    if body is None:
        # What efetch gives for articles the publisher does not let PMC share as XML.
        return (
            f'<article {XLINK} article-type="research-article">{front}'
            "<!--The publisher of this article does not allow downloading of the full text in XML form.-->"
            "</article>"
        )
    return (
        f'<article {XLINK} article-type="research-article" dtd-version="1.3">{front}'
        f'<body>{body}</body><back>{back}<ref-list><ref id="R1"><mixed-citation>Ref.</mixed-citation></ref>'
        f"</ref-list></back>{floats}</article>"
    )


def fig(fig_id: str, href: str, caption: str, label: str = "") -> str:
    lab = f"<label>{label}</label>" if label else ""
    return (
        f'<fig id="{fig_id}" position="float">{lab}<caption><p>{caption}</p></caption>'
        f'<graphic xlink:href="{href}"/></fig>'
    )


def articleset(articles: list[str]) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE pmc-articleset PUBLIC "-//NLM//DTD ARTICLE SET 2.0//EN" '
        '"https://dtd.nlm.nih.gov/ncbi/pmc/articleset/nlm-articleset-2.0.dtd">\n'
        "<pmc-articleset>" + "".join(articles) + "</pmc-articleset>"
    )


# -- faults ---------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0

    @staticmethod
    def status_code(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> "Fault":
        return Fault("status", status=code, headers=headers or {}, body=body or f"HTTP {code}".encode())

    @staticmethod
    def none() -> "Fault":
        """Answer normally (to fault a later request in the queue, not the next one)."""
        return Fault("none")

    @staticmethod
    def hang(seconds: float = 3.0) -> "Fault":
        return Fault("hang", seconds=seconds)

    @staticmethod
    def body_of(body: bytes, content_type: str) -> "Fault":
        return Fault("status", status=200, headers={"Content-Type": content_type}, body=body)

    @staticmethod
    def cut_short(keep: int) -> "Fault":
        """Announce the full length, send ``keep`` bytes, close: a broken transfer."""
        return Fault("short", seconds=float(keep))


@dataclass
class LoggedRequest:
    t: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str] = field(default_factory=dict)


class FakeServices:
    """State + routing for the emulated services. Mutate the dicts, then hit ``url``."""

    def __init__(self) -> None:
        self.articles: dict[str, str] = {}  # PMCID -> <article> XML (may be broken on purpose)
        self.search_ids: list[str] = []  # esearch result order (numeric ids as NCBI gives them for db=pmc)
        self.release_dates: dict[str, str] = {}  # numeric id -> PMC release date "YYYY/MM/DD" ([pmcrdat])
        self.bucket_meta: dict[str, Any] = {}  # "PMC1.1" -> metadata dict, or bytes for a malformed file
        self.bucket_files: dict[str, tuple[bytes, str]] = {}  # key "PMC1.1/gr1.jpg" -> (bytes, content type)
        self.oa_packages: dict[str, bytes] = {}  # PMCID -> tgz bytes (served under /ftp/pub/pmc/oa_package/)
        self.oa_packages_removed = False  # True: the FTP packages answer 404 while oa.fcgi still names them
        self.oa_retracted: set[str] = set()  # PMCIDs whose OA record says retracted="yes"
        self.openi_items: list[dict[str, Any]] = []
        self.openi_files: dict[str, tuple[bytes, str]] = {}  # path under /openi -> (bytes, type)
        self.faults: dict[str, list[Fault]] = {}
        self.sticky: dict[str, Fault] = {}
        self.log: list[LoggedRequest] = []
        self.release = threading.Event()  # ends every hang at teardown
        self.hold_prefix: str | None = None  # requests under this path prefix block after hold_after ones
        self.hold_after = 0
        self.held = threading.Event()  # set when a request is being held
        self.unhold = threading.Event()
        self._served_prefix = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "FakeServices":
        handler = type("Handler", (_Handler,), {"services": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.unhold.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def urls(self) -> dict[str, str]:
        """Base URLs for ScrapeConfig / CLI flags."""
        return {
            "eutils_url": f"{self.url}/eutils",
            "bucket_url": f"{self.url}/bucket",
            "oa_service_url": f"{self.url}/oa/oa.fcgi",
            "ftp_url": f"{self.url}/ftp",
            "openi_url": f"{self.url}/openi",
        }

    def cli_flags(self) -> list[str]:
        flags = []
        for name, value in self.urls().items():
            flags += [f"--{name}", value]
        return flags

    def fault(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault(path, []).extend(faults)

    def requests_to(self, prefix: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(prefix)]

    # -- bucket helpers ---------------------------------------------------------------------------
    def put_bucket_article(
        self,
        pmcid: str,
        files: dict[str, bytes],
        *,
        version: int = 1,
        license_code: str | None = "CC BY",
        media_urls: bool = True,
        content_type: str = "image/jpeg",
        retracted: bool = False,
        open_access: bool = True,
        title: str = "A study",
        pmid: int | None = None,
    ) -> dict[str, Any]:
        """Serve an article version: its objects, and its metadata JSON in NCBI's sample-object shape.

        The keys, their order and value types are those of the documented sample
        (tests/data/scrape/PMC10000001.1.json); every S3 URL carries the MD5 of
        the bytes served for it. Returns the metadata.
        """
        key = f"{pmcid}.{version}"
        for name, data in files.items():
            self.bucket_files[f"{key}/{name}"] = (data, content_type)
        objects = {
            "pdf_url": (f"{key}.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf"),
            "xml_url": (f"{key}.xml", self.articles.get(pmcid, "").encode(), "application/xml"),
            "text_url": (f"{key}.txt", b"plain text of the article\n", "text/plain"),
        }
        for name, data, kind in objects.values():
            self.bucket_files[f"{key}/{name}"] = (data, kind)

        def s3(name: str, data: bytes) -> str:
            return f"s3://pmc-oa-opendata/{key}/{name}?md5={md5_hex(data)}"

        values = {
            "pmcid": pmcid,
            "version": version,
            "pmid": pmid,
            "doi": f"10.1016/j.radcr.2020.{pmcid[3:]}",
            "mid": None,
            "title": title,
            "citation": "Radiol Case Rep. 2020 Feb 3;15(4):101-104",
            "is_pmc_openaccess": open_access,
            "is_manuscript": False,
            "is_historical_ocr": False,
            "is_retracted": retracted,
            "license_code": license_code,
            **{field_name: s3(name, data) for field_name, (name, data, _) in objects.items()},
            "media_urls": [s3(name, data) for name, data in files.items()],
        }
        template = json.loads(fixture("PMC10000001.1.json"))
        meta = {name: values[name] for name in template}  # the documented keys, in the documented order
        if not media_urls:
            del meta["media_urls"]  # "if available"
        self.bucket_meta[key] = meta
        self.bucket_files[f"{key}/{key}.json"] = (json.dumps(meta).encode(), "application/json")
        return meta

    # -- routing ----------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/eutils/esearch.fcgi"):
            return self._esearch(query if method == "GET" else parse_qs(body.decode()))
        if path.startswith("/eutils/efetch.fcgi"):
            return self._efetch(parse_qs(body.decode()) if method == "POST" else query)
        if path == "/bucket/" or path == "/bucket":
            return self._listing(query)
        if path.startswith("/bucket/metadata/"):
            key = path[len("/bucket/metadata/") :].removesuffix(".json")
            meta = self.bucket_meta.get(key)
            if meta is None:
                return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>"
            data = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
            return 200, {"Content-Type": "application/json"}, data
        if path.startswith("/bucket/"):
            item = self.bucket_files.get(path[len("/bucket/") :])
            if item is None:
                return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>"
            return 200, {"Content-Type": item[1]}, item[0]
        if path.startswith("/oa/oa.fcgi"):
            return self._oa_service(query)
        if path.startswith("/ftp/pub/pmc/oa_package/"):
            pmcid = path.rsplit("/", 1)[-1].removesuffix(".tar.gz")
            if pmcid not in self.oa_packages or self.oa_packages_removed:
                return 404, {"Content-Type": "text/html"}, b"<html>Not Found</html>"
            return 200, {"Content-Type": "application/x-gzip"}, self.oa_packages[pmcid]
        if path.startswith("/openi/api/search"):
            return self._openi(query)
        if path.startswith("/openi/"):
            item = self.openi_files.get(path[len("/openi") :])
            if item is None:
                return 404, {"Content-Type": "text/html"}, b"<html>Not Found</html>"
            return 200, {"Content-Type": item[1]}, item[0]
        return 404, {"Content-Type": "text/plain"}, b"no such route"

    def _esearch(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        start = int(query.get("retstart", ["0"])[0])
        size = int(query.get("retmax", ["20"])[0])
        term = query.get("term", [""])[0]
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if start > ESEARCH_WINDOW - 1:
            return 200, headers, fixture("esearch_pmc_past_window.json")
        hits = self.search_ids
        window = _PMCRDAT.search(term)
        if window:  # zero-padded YYYY/MM/DD strings compare like the dates they name
            first, last = (datetime.datetime.strptime(d, "%Y/%m/%d").strftime("%Y/%m/%d") for d in window.groups())
            hits = [i for i in hits if first <= self.release_dates.get(i, "0000") <= last]
        ids = hits[start : min(start + size, ESEARCH_WINDOW)]
        result = json.loads(fixture("esearch_pmc.json"))
        result["esearchresult"].update(
            count=str(len(hits)), retmax=str(len(ids)), retstart=str(start), idlist=ids, querytranslation=term
        )
        return 200, headers, json.dumps(result).encode()

    def _efetch(self, form: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        ids = [i for i in form.get("id", [""])[0].split(",") if i]
        parts = [self.articles[f"PMC{i}"] for i in ids if f"PMC{i}" in self.articles]
        return 200, {"Content-Type": "text/xml; charset=UTF-8"}, articleset(parts).encode()

    def _listing(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        keys = sorted(
            {k for k in self.bucket_files if k.startswith(prefix)} | {f"metadata/{k}.json" for k in self.bucket_meta}
        )
        keys = [k for k in keys if k.startswith(prefix)]
        contents, common = [], []
        for key in keys:
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                cp = prefix + rest.split(delimiter)[0] + delimiter
                if cp not in common:
                    common.append(cp)
            else:
                contents.append(key)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>pmc-oa-opendata</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(common)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys>{'<Delimiter>/</Delimiter>' if delimiter else ''}<IsTruncated>false</IsTruncated>"
            + "".join(
                f"<Contents><Key>{escape(k)}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                f"<Size>1</Size><StorageClass>INTELLIGENT_TIERING</StorageClass></Contents>"
                for k in contents
            )
            + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in common)
            + "</ListBucketResult>"
        )
        return 200, {"Content-Type": "application/xml"}, xml.encode()

    def _oa_service(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        pmcid = query.get("id", [""])[0]
        if pmcid not in self.oa_packages:
            record = fixture("oa_service_record.xml").decode().replace("PMC10000002", escape(pmcid))
            head = record[: record.index("<records")]
            error = f"<error code=\"idIsNotOpenAccess\">identifier '{escape(pmcid)}' is not Open Access</error>"
            return 200, {"Content-Type": "text/xml"}, (head + error + "</OA>").encode()
        record = fixture("oa_service_record.xml").decode().replace("PMC10000002", pmcid)
        if pmcid in self.oa_retracted:
            record = record.replace('retracted="no"', 'retracted="yes"')
        return 200, {"Content-Type": "text/xml"}, record.encode()

    def _openi(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        for name, known in (("it", OPENI_IMAGE_TYPES), ("coll", OPENI_COLLECTIONS)):
            values = [v for v in query.get(name, [""])[0].split(",") if v]
            bad = [v for v in values if v not in known]
            if bad:  # Open-i answers HTTP 200 with an error object, not an empty result
                error = {"Query-Error": f"Invalid value for parameter {name}: {bad[0]!r}"}
                return 200, {"Content-Type": "application/json"}, json.dumps(error).encode()
        m = int(query.get("m", ["1"])[0])
        n = int(query.get("n", [str(m + 9)])[0])
        items = self.openi_items[m - 1 : n]
        result = {
            "total": len(self.openi_items),
            "min": m,
            "max": m + len(items) - 1,
            "count": len(items),
            "list": items,
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()


class _Handler(BaseHTTPRequestHandler):
    services: FakeServices
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        services = self.services
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with services._lock:
            services.log.append(LoggedRequest(time.monotonic(), method, parts.path, query, dict(self.headers)))
            fault = None
            queue = services.faults.get(parts.path)
            if queue:
                fault = queue.pop(0)
            elif parts.path in services.sticky:
                fault = services.sticky[parts.path]
            hold = False
            if services.hold_prefix and parts.path.startswith(services.hold_prefix):
                services._served_prefix += 1
                hold = services._served_prefix > services.hold_after
        try:
            if hold:
                services.held.set()
                services.unhold.wait(30)
            if fault is not None and fault.kind == "hang":
                services.release.wait(fault.seconds)
                return  # close without answering
            status, headers, payload = services.handle(method, parts.path, query, body)
            if fault is not None and fault.kind == "status":
                status, headers, payload = fault.status, {"Content-Type": "text/html", **fault.headers}, fault.body
            keep = len(payload)
            if fault is not None and fault.kind == "short":
                keep = int(fault.seconds)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload[:keep])
        except (BrokenPipeError, ConnectionResetError):
            pass


# -- ready-made worlds ----------------------------------------------------------------------------
ARTICLE_1001_BODY = (
    '<sec id="s1"><title>Case</title><p>A 61-year-old woman (<xref ref-type="fig" rid="F1">Fig. 1</xref>).</p>'
    '<fig id="F1" position="float"><label>Figure 1</label><caption><title>Axial diffusion-weighted MRI</title>'
    "<p>Restricted diffusion in the left MCA territory (T<sub>2</sub> shine-through excluded; "
    "ADC &lt; 600 &#x000d7; 10<sup>&#x02212;6</sup> mm<sup>2</sup>/s).</p><p>Arrow: infarct core.</p></caption>"
    '<graphic xlink:href="gr1"/></fig>'
    '<fig id="F2"><label>Fig. 2</label><caption><p>Follow-up imaging at day three.</p>'
    '<list list-type="alpha-upper"><list-item><p>FLAIR image of the infarct.</p></list-item>'
    "<list-item><p>MR angiography of the circle of Willis.</p></list-item></list></caption>"
    '<alternatives><graphic xlink:href="gr2" specific-use="print"/><graphic xlink:href="gr2-web"/></alternatives></fig>'
    "</sec>"
)

ARTICLE_1002_BODY = (
    '<sec><title>Results</title><fig-group id="F3"><label>Figure 3</label>'
    "<caption><p>Glioblastoma in a 54-year-old man.</p></caption>"
    '<fig id="F3a"><label>(a)</label><caption><p>Contrast-enhanced T1-weighted image.</p></caption>'
    '<graphic xlink:href="fig3a.tif"/></fig>'
    '<fig id="F3b"><label>(b)</label><caption><p>Relative cerebral blood volume map.</p></caption>'
    '<graphic xlink:href="fig3b.tif"/></fig></fig-group>'
    '<fig id="F4"><label>Figure 4</label><caption><p>Histopathology with <bold>H&amp;E</bold> staining, '
    '&#x000d7;400.</p></caption><graphic xlink:href="../../../../../tmp/evil"/></fig></sec>'
)
ARTICLE_1002_FLOATS = (
    '<floats-group><fig id="F5"><label>Figure 5</label><caption><p>Kaplan-Meier survival curves of both cohorts.</p>'
    "<list><list-item><label>a</label><p>Overall survival.</p></list-item><list-item><label>b</label>"
    "<p>Progression-free survival.</p></list-item></list></caption>"
    '<graphic xlink:href="fig5"/></fig></floats-group>'
)

EXPECTED_PMC_CAPTIONS = {
    "PMC1001/F1/gr1": "Axial diffusion-weighted MRI. Restricted diffusion in the left MCA territory (T2 shine-through "
    "excluded; ADC < 600 \u00d7 10\u22126 mm2/s). Arrow: infarct core.",
    "PMC1001/F2/gr2": "Follow-up imaging at day three. (A) FLAIR image of the infarct. "
    "(B) MR angiography of the circle of Willis.",
    "PMC1002/F3a/fig3a.tif": "Glioblastoma in a 54-year-old man. (a) Contrast-enhanced T1-weighted image.",
    "PMC1002/F3b/fig3b.tif": "Glioblastoma in a 54-year-old man. (b) Relative cerebral blood volume map.",
    "PMC1002/F5/fig5": "Kaplan-Meier survival curves of both cohorts. (a) Overall survival. "
    "(b) Progression-free survival.",
    "PMC1004/F2/gr2": "Radiograph whose first download is an HTML error page.",
    "PMC1004/F6/gr6": "Exactly the same figure listed twice.",
    "PMC1004/F8/gr8": "Chest radiograph after a hung first request.",
    "PMC1004/F10/gr10": "Coronal CT after a server error.",
    "PMC1005/F1/fig1": "Ultrasound of the liver from the OA package.",
}


def pmc_world(services: FakeServices, *, image_fmt: str = "JPEG") -> dict[str, Any]:
    """Seven articles covering the happy path and every fault the scraper must survive.

    Returns the expected outcome (records in order, skip counts) for assertions.
    """
    img = {seed: make_image(96, 80, seed, image_fmt) for seed in range(1, 30)}
    a = services.articles
    a["PMC1001"] = jats_article(
        "PMC1001",
        ARTICLE_1001_BODY,
        title="Diffusion-weighted <italic>MRI</italic> of stroke",
        pmid="31000001",
        doi="10.1016/j.radcr.2020.01.001",
    )
    a["PMC1002"] = jats_article(
        "PMC1002",
        ARTICLE_1002_BODY,
        new_style_id=False,
        floats=ARTICLE_1002_FLOATS,
        license_xml="<license><ali:license_ref>https://creativecommons.org/licenses/by-nc/4.0/</ali:license_ref>"
        "<license-p>CC BY-NC 4.0</license-p></license>",
    )
    a["PMC1003"] = jats_article("PMC1003", None)
    fault_figs = "".join(
        [
            fig("F1", "gr1", "A truncated JPEG from the server."),
            fig("F2", "gr2", "Radiograph whose first download is an HTML error page."),
            fig("F3", "gr3", "HTML with an image content type."),
            fig("F4", "gr4", "A very large flat image in pixels."),
            fig("F5", "gr5", "A file larger than the byte cap."),
            fig("F6", "gr6", "Exactly the same figure listed twice."),
            fig("F6", "gr6", "Exactly the same figure listed twice."),
            fig("F7", "gr7", "Same bytes as an earlier figure."),
            fig("F8", "gr8", "Chest radiograph after a hung first request."),
            fig("F9", "gr9", "A server that never answers this one."),
            fig("F10", "gr10", "Coronal CT after a server error."),
            fig("F11", "gr11", "A tiny icon instead of a figure."),
        ]
    )
    a["PMC1004"] = jats_article("PMC1004", f"<sec>{fault_figs}</sec>")
    a["PMC1005"] = jats_article("PMC1005", fig("F1", "fig1", "Ultrasound of the liver from the OA package."))
    a["PMC1006"] = (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
        '<article-id pub-id-type="pmc">1006</article-id></article-meta></front><body><p>unclosed</body></article>'
    )
    a["PMC1007"] = jats_article("PMC1007", fig("F1", "gr1", "Metadata file of this article is broken."))
    services.search_ids = ["1001", "1002", "1003", "1004", "1005", "1006", "1007", "1001"]

    services.put_bucket_article("PMC1001", {"gr1.jpg": img[1], "gr2.jpg": img[2], "gr2-web.jpg": img[3]})
    services.put_bucket_article(
        "PMC1002",
        {
            "fig3a.jpg": img[4],
            "fig3a.tif": b"II*\x00 not really a tiff",
            "fig3b.jpg": img[5],
            "fig5.jpg": img[6],
            "fig5.gif": make_image(40, 30, 99, "GIF"),
        },
        version=2,
        license_code="CC BY-NC",
        media_urls=False,
    )
    services.put_bucket_article("PMC1002", {"fig3a.jpg": img[20]}, version=1, license_code="CC BY-NC")
    truncated = img[7][: len(img[7]) // 2]
    html = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Service unavailable</body></html>"
    services.put_bucket_article(
        "PMC1004",
        {
            "gr1.jpg": truncated,
            "gr2.jpg": img[8],
            "gr3.jpg": html,
            "gr4.png": make_flat_png(3000, 3000),
            "gr5.jpg": b"\xff" * 1_200_000,
            "gr6.jpg": img[9],
            "gr7.jpg": img[1],
            "gr8.jpg": img[10],
            "gr9.jpg": img[11],
            "gr10.jpg": img[12],
            "gr11.png": make_image(20, 20, 13),
        },
    )
    services.put_bucket_article("PMC1007", {"gr1.jpg": img[14]})
    services.bucket_meta["PMC1007.1"] = b'{"pmcid": "PMC1007", "media_urls": ["s3://pmc-oa-opendata/PMC1007.1/gr1.'
    services.oa_packages["PMC1005"] = make_tgz(
        {
            "PMC1005/PMC1005.nxml": a["PMC1005"].encode(),
            "PMC1005/fig1.jpg": img[15],
            "PMC1005/fig1.gif": img[16],
            "../../escape.jpg": img[17],
        }
    )
    b = "/bucket/PMC1004.1/"
    # An HTML error page instead of the object: its MD5 is not the published one, so it is retried and recovered.
    services.fault(b + "gr2.jpg", Fault.body_of(html, "text/html; charset=utf-8"))
    services.fault(b + "gr8.jpg", Fault.hang())
    services.sticky[b + "gr9.jpg"] = Fault.hang()
    services.fault(b + "gr10.jpg", Fault.status_code(500))
    services.fault(
        "/eutils/esearch.fcgi", Fault.status_code(429, {"Retry-After": "1"}, b'{"error":"API rate limit exceeded"}')
    )
    services.fault("/eutils/efetch.fcgi", Fault.status_code(500))
    return {
        "keys": list(EXPECTED_PMC_CAPTIONS),
        "captions": EXPECTED_PMC_CAPTIONS,
        "figure_skips": {
            "duplicate_content": 1,
            "duplicate_figure": 1,
            "not_an_image": 1,
            "too_large": 2,
            "too_small": 1,
            "truncated": 1,
            "unsafe_href": 1,
        },
        "figure_failed": {"malformed": 1, "timeout": 1},
        "article_skips": {"malformed_xml": 1, "no_body": 1},
        "images": {
            "PMC1001/F1/gr1": img[1],
            "PMC1002/F3a/fig3a.tif": img[4],
            "PMC1004/F2/gr2": img[8],
            "PMC1002/F5/fig5": img[6],
            "PMC1005/F1/fig1": img[15],
        },
    }


# -- fast settings for tests ----------------------------------------------------------------------
FAST_FLAGS = [
    "--timeout",
    "0.5",
    "--retries",
    "2",
    "--backoff",
    "0.01",
    "--max_refusals",
    "5",
    "--ncbi_rate",
    "500",
    "--openi_rate",
    "500",
    "--bucket_rate",
    "500",
    "--max_bytes",
    "1000000",
    "--max_pixels",
    "4000000",
    "--min_side",
    "32",
    "--search_page",
    "3",
    "--fetch_batch",
    "3",
    "--workers",
    "4",
    "--no_progress",
]


def fast_config(out: Any, services: FakeServices, **overrides: Any) -> Any:
    """A ScrapeConfig pointed at ``services`` with millisecond backoffs and generous local rates."""
    from data.scraper.download import ImageLimits
    from data.scraper.http import HttpSettings
    from data.scraper.pipeline import ScrapeConfig

    settings = dict(
        out=out,
        query="brain MRI",
        num=100,
        workers=4,
        ncbi_rate=500,
        openi_rate=500,
        bucket_rate=500,
        http=HttpSettings(read_timeout=0.5, retries=2, backoff_base=0.01, backoff_max=0.05, max_refusals=5),
        limits=ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000, min_side=32),
        search_page=3,
        fetch_batch=3,
        openi_page=4,
        split=False,
        progress=False,
    )
    settings.update(services.urls())
    settings.update(overrides)
    return ScrapeConfig(**settings)


def simple_world(services: FakeServices, n_articles: int, figs_per_article: int, *, first: int = 2001) -> list[str]:
    """``n_articles`` clean OA articles with ``figs_per_article`` distinct images each; returns figure keys."""
    keys = []
    for a in range(n_articles):
        pmcid = f"PMC{first + a}"
        body = "".join(
            fig(f"F{i}", f"gr{i}", f"Figure {i} of article {pmcid}: axial MRI slice number {i}.", f"Figure {i}")
            for i in range(1, figs_per_article + 1)
        )
        services.articles[pmcid] = jats_article(pmcid, f"<sec>{body}</sec>")
        services.search_ids.append(pmcid[3:])
        files = {
            f"gr{i}.jpg": make_image(64, 48, (first + a) * 100 + i, "JPEG") for i in range(1, figs_per_article + 1)
        }
        services.put_bucket_article(pmcid, files)
        keys += [f"{pmcid}/F{i}/gr{i}" for i in range(1, figs_per_article + 1)]
    return keys


# -- output checks --------------------------------------------------------------------------------
def output_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_clean_output(out: Path) -> list[dict]:
    """Invariants every finished output folder must satisfy."""
    records = load_records(out / "figures.json")
    images = [r["image"] for r in records]
    assert len(images) == len(set(images)), "duplicate records"
    assert len({r["sha256"] for r in records}) == len(records), "duplicate content"
    on_disk = {f for f in output_files(out) if f.startswith("images/")}
    assert on_disk == set(images), "orphan or missing image files"
    assert not [f for f in output_files(out) if f.endswith(".tmp")], "half-written files left"
    for record in records:
        data = (out / record["image"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        with open_image(data) as img:
            assert img.size == (record["width"], record["height"])
    return records
