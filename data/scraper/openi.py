"""NLM Open-i search API (the source the original project used).

``GET {base}/api/search?query=...&m=FIRST&n=LAST&coll=pmc[&it=...][&at=...]``
answers ``{"total": N, "min": m, "max": n, "list": [item, ...]}``. Each item is
one figure: ``uid`` (per *article*: "PMC4911020", or "CXR1" in the chest x-ray
collection), ``pmcid`` (a bare number, "4911020"), ``pmid``, article ``title``,
``journal_title``, ``image: {id, caption, ...}`` (``id`` may be missing),
``imgLarge`` (a path relative to the Open-i host) and the licence in
``ccLicense`` ("by", "bync", "byncnd", ...), ``licenseURL`` (often empty) and
``licenseType`` ("open-access"). Paging is 1-based and inclusive; the server
may return fewer items than asked, so the next page starts after the ``max``
it reports. A filter value it does not know gives HTTP 200 with
``{"Query-Error": "..."}``: that is a bad request, reported as
:class:`OpeniError`, not an empty result.

Sources (checked 2026-12-01): the API is described at
https://openi.nlm.nih.gov/services (not reachable from here and not in the
stored documentation we could search); the item fields above are those of
real responses recorded in public projects, as listed in issue 13.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from data.captions import clean_caption_text
from data.scraper.http import FetchError, HttpClient, QueryError, Response
from data.scraper.licenses import normalize_license

__all__ = ["OpeniConfig", "OpeniError", "OpeniPage", "search_page", "item_to_candidate", "DEFAULT_OPENI_URL"]

DEFAULT_OPENI_URL = "https://openi.nlm.nih.gov"
# Open-i writes this instead of leaving the caption empty.
_MISSING_CAPTIONS = {"not available.", "not available", "n/a"}


class OpeniError(QueryError):
    """Open-i rejected the request (``{"Query-Error": ...}``), e.g. an unknown filter value."""


@dataclass
class OpeniConfig:
    base_url: str = DEFAULT_OPENI_URL
    collection: str = "pmc"
    image_type: str = ""  # Open-i "it", e.g. "xg" (exclude graphics) or "x,c,m,u"
    article_type: str = ""  # Open-i "at", e.g. "cr,ra" (case reports, reviews)
    license: str = ""  # Open-i "lic", e.g. "by,bysa"


@dataclass
class OpeniPage:
    total: int
    items: list[dict[str, Any]]
    next_start: int


def _validate(response: Response) -> None:
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("list", []), list):
        raise ValueError("JSON without a 'list' array")


def search_page(client: HttpClient, config: OpeniConfig, query: str, *, start: int, size: int) -> OpeniPage:
    """Items ``start`` .. ``start + size - 1`` (1-based) for ``query``."""
    params = {"query": query, "m": str(start), "n": str(start + size - 1)}
    if config.collection:
        params["coll"] = config.collection
    if config.image_type:
        params["it"] = config.image_type
    if config.article_type:
        params["at"] = config.article_type
    if config.license:
        params["lic"] = config.license
    response = client.fetch(f"{config.base_url}/api/search", service="openi", params=params, validate=_validate)
    if response.status != 200:
        raise FetchError(f"http_{response.status}", f"Open-i {response.url}: HTTP {response.status}")
    data = response.json()
    if data.get("Query-Error"):
        raise OpeniError(f"Open-i rejected the request {response.url}: {data['Query-Error']}")
    items = [item for item in data.get("list") or [] if isinstance(item, dict)]
    try:
        total = int(data.get("total", 0))
    except (TypeError, ValueError):
        total = 0
    try:
        reported_max = int(data.get("max", 0))
    except (TypeError, ValueError):
        reported_max = 0
    next_start = reported_max + 1 if reported_max >= start else start + len(items)
    return OpeniPage(total=total, items=items, next_start=max(next_start, start + 1))


def _str(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _license(item: dict[str, Any]) -> tuple[str, str]:
    """(code, raw value): the first licence field that names a licence (``licenseURL`` is often empty)."""
    fields = [_str(item.get(name)) for name in ("licenseURL", "license_url", "ccLicense", "license", "licenseType")]
    for raw in fields:
        code = normalize_license(raw)
        if code not in ("unknown", "other"):
            return code, raw
    raw = next((value for value in fields if value), "")
    return normalize_license(raw), raw


def item_to_candidate(item: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Normalise one Open-i item into the scraper's candidate-figure dict.

    Raises ``ValueError`` with a reason ("no_image_url", "bad_image_url") for
    items that cannot become a figure.
    """
    image = item.get("image") if isinstance(item.get("image"), dict) else {}
    href = _str(item.get("imgLarge"))
    if not href:
        raise ValueError("no_image_url")
    # imgLarge is a path on the Open-i host; keep a configured base path (a mirror, the test server).
    url = href if re.match(r"(?i)^https?://", href) else f"{base_url.rstrip('/')}/{href.lstrip('/')}"
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("bad_image_url")
    pmcid = _str(item.get("pmcid"))
    if pmcid and not pmcid.upper().startswith("PMC"):
        pmcid = f"PMC{pmcid}"
    pmcid = pmcid.upper() if re.fullmatch(r"(?i)PMC\d+", pmcid) else ""
    uid = _str(item.get("uid"))
    # uid names the article, not the figure: without image.id the image path is what tells figures apart.
    figure_id = _str(image.get("id")) or f"img{hashlib.sha1(href.encode()).hexdigest()[:12]}"
    caption = clean_caption_text(_str(image.get("caption")))
    if caption.lower() in _MISSING_CAPTIONS:
        caption = ""
    date = item.get("journal_date") if isinstance(item.get("journal_date"), dict) else {}
    license_code, license_raw = _license(item)
    article_id = pmcid or uid or figure_id
    return {
        "key": f"{article_id}/{figure_id}",
        "article_id": article_id,
        "pmcid": pmcid,
        "pmid": _str(item.get("pmid")),
        "doi": _str(item.get("doi")),
        "title": clean_caption_text(_str(item.get("title"))),
        "journal": clean_caption_text(_str(item.get("journal_title"))),
        "year": _str(date.get("year")),
        "license": license_code,
        "license_url": license_raw if license_raw.startswith("http") else "",
        "figure_id": figure_id,
        "label": "",
        "caption": caption,
        "subcaptions": [],
        "graphic": "",
        "image_url": url,
        "source": "openi",
        "openi_uid": uid,
        "article_url": f"https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/" if pmcid else "",
    }
