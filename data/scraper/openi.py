"""NLM Open-i search API (the source the original project used).

``GET {base}/api/search?query=...&m=FIRST&n=LAST&coll=pmc[&it=...][&at=...]``
answers ``{"total": N, "min": m, "max": n, "list": [item, ...]}``. Each item is
one figure: ``uid``, ``pmcid``, ``pmid``, article ``title``, ``journal_title``,
``image: {id, caption, ...}``, ``imgLarge`` (a path under the Open-i host) and
licence fields. Paging is 1-based and inclusive; the server may return fewer
items than asked, so the next page starts after the ``max`` it reports.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from data.captions import clean_caption_text
from data.scraper.http import FetchError, HttpClient, Response
from data.scraper.licenses import normalize_license

__all__ = ["OpeniConfig", "OpeniPage", "search_page", "item_to_candidate", "DEFAULT_OPENI_URL"]

DEFAULT_OPENI_URL = "https://openi.nlm.nih.gov"
# Open-i writes this instead of leaving the caption empty.
_MISSING_CAPTIONS = {"not available.", "not available", "n/a"}


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
    figure_id = _str(image.get("id")) or uid or hashlib.sha1(href.encode()).hexdigest()[:12]
    caption = clean_caption_text(_str(image.get("caption")))
    if caption.lower() in _MISSING_CAPTIONS:
        caption = ""
    date = item.get("journal_date") if isinstance(item.get("journal_date"), dict) else {}
    license_raw = _str(
        item.get("licenseURL") or item.get("license_url") or item.get("licenseType") or item.get("license")
    )
    article_id = pmcid or (uid.split("_")[0] if uid else figure_id)
    return {
        "key": f"{article_id}/{figure_id}",
        "article_id": article_id,
        "pmcid": pmcid,
        "pmid": _str(item.get("pmid")),
        "doi": _str(item.get("doi")),
        "title": clean_caption_text(_str(item.get("title"))),
        "journal": clean_caption_text(_str(item.get("journal_title"))),
        "year": _str(date.get("year")),
        "license": normalize_license(license_raw),
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
