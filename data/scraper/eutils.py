"""NCBI E-utilities for PMC: ``esearch`` (ids for a query) and ``efetch`` (JATS XML).

Usage rules we follow (https://www.ncbi.nlm.nih.gov/books/NBK25497/): at most
3 requests/s without an API key and 10 with one (enforced by the shared
"ncbi" limiter), ``tool`` and ``email`` on every request, large id lists sent
by POST, batches instead of one request per article.

ESearch returns only the first 10,000 records of a PMC (or PubMed) search
(NCBI, ESearch ``retmax`` documentation, https://www.ncbi.nlm.nih.gov/books/NBK25499/,
and the PMC Cloud Service FAQ, https://pmc.ncbi.nlm.nih.gov/tools/pmcaws/;
checked 2026-12-01). In practice the server refuses ``retstart`` above 9998
(reported for PubMed: "'retstart' cannot be larger than 9998"), so
:data:`ESEARCH_MAX_RECORDS` is 9,999; ``pmc_search.py`` splits larger searches
by date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from data.scraper.http import FetchError, HttpClient, QueryError, Response
from data.scraper.jats import JatsError, article_meta, efetch_error, iter_articles, parse_xml

__all__ = ["EutilsConfig", "SearchPage", "EutilsError", "esearch", "efetch_articles", "ESEARCH_MAX_RECORDS"]

DEFAULT_EUTILS_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils"
ESEARCH_MAX_RECORDS = 9999  # records one search can page through (retstart 0 .. 9998)
NCBI_HOSTS = ("eutils.ncbi.nlm.nih.gov", "www.ncbi.nlm.nih.gov", "ftp.ncbi.nlm.nih.gov", "pmc.ncbi.nlm.nih.gov")


class EutilsError(QueryError):
    """NCBI answered, but with an error that retrying will not fix (e.g. a bad query)."""


@dataclass
class EutilsConfig:
    base_url: str = DEFAULT_EUTILS_URL
    tool: str = "medvlp"
    email: str = ""
    api_key: str = ""

    def params(self) -> dict[str, str]:
        params = {"tool": self.tool}
        if self.email:
            params["email"] = self.email
        if self.api_key:
            params["api_key"] = self.api_key
        return params


@dataclass
class SearchPage:
    count: int
    ids: list[str]  # "PMC123" form


def _validate_esearch(response: Response) -> None:
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("esearchresult"), dict):
        raise ValueError("JSON without an 'esearchresult' object")


def esearch(client: HttpClient, config: EutilsConfig, term: str, *, retstart: int, retmax: int) -> SearchPage:
    """One page of PMC ids for ``term`` (already including the licence filter).

    Raises :class:`FetchError` (network, malformed after retries) or
    :class:`EutilsError` (NCBI reports an error for the query).
    """
    params = {
        **config.params(),
        "db": "pmc",
        "term": term,
        "retstart": str(retstart),
        "retmax": str(retmax),
        "retmode": "json",
        "sort": "relevance",
    }
    response = client.fetch(
        f"{config.base_url}/esearch.fcgi", service="ncbi", params=params, validate=_validate_esearch
    )
    if response.status != 200:
        raise FetchError(f"http_{response.status}", f"esearch {response.url}: HTTP {response.status}")
    result = response.json()["esearchresult"]
    if result.get("ERROR"):
        raise EutilsError(f"esearch rejected the query {term!r}: {result['ERROR']}")
    try:
        count = int(result.get("count", 0))
        ids = [str(i).strip() for i in result.get("idlist", [])]
    except (TypeError, ValueError) as exc:
        raise FetchError("malformed", f"esearch {response.url}: unexpected JSON ({exc})") from None
    pmcids = []
    for raw in ids:
        digits = raw[3:] if raw.upper().startswith("PMC") else raw
        if digits.isdigit():
            pmcids.append(f"PMC{int(digits)}")
    return SearchPage(count=count, ids=pmcids)


def efetch_articles(
    client: HttpClient,
    config: EutilsConfig,
    pmcids: list[str],
    *,
    on_malformed: Callable[[str, str], None],
) -> dict[str, etree._Element]:
    """JATS ``<article>`` elements for ``pmcids``, keyed by the PMCID they carry.

    One POST per batch. A batch whose XML does not parse is split in halves
    and refetched (log2(n) extra requests instead of n), so one broken article
    costs only itself: it is reported through ``on_malformed(pmcid, message)``.
    Ids missing from the answer are simply absent from the result.
    """
    if not pmcids:
        return {}
    data = {**config.params(), "db": "pmc", "id": ",".join(p[3:] for p in pmcids), "retmode": "xml"}
    response = client.fetch(f"{config.base_url}/efetch.fcgi", service="ncbi", method="POST", data=data)
    if response.status != 200:
        raise FetchError(f"http_{response.status}", f"efetch {response.url}: HTTP {response.status}")
    try:
        root = parse_xml(response.content, f"efetch of {len(pmcids)} article(s) starting {pmcids[0]}")
    except JatsError as exc:
        if len(pmcids) == 1:
            on_malformed(pmcids[0], str(exc))
            return {}
        middle = len(pmcids) // 2
        result = efetch_articles(client, config, pmcids[:middle], on_malformed=on_malformed)
        result.update(efetch_articles(client, config, pmcids[middle:], on_malformed=on_malformed))
        return result
    articles = iter_articles(root)
    if not articles:
        message = efetch_error(root)
        if message and len(pmcids) > 1:
            # One bad id can fail a whole batch; isolate it.
            middle = len(pmcids) // 2
            result = efetch_articles(client, config, pmcids[:middle], on_malformed=on_malformed)
            result.update(efetch_articles(client, config, pmcids[middle:], on_malformed=on_malformed))
            return result
        return {}
    found: dict[str, etree._Element] = {}
    wanted = set(pmcids)
    for article in articles:
        pmcid = article_meta(article).pmcid
        if not pmcid and len(pmcids) == 1 and len(articles) == 1:
            pmcid = pmcids[0]  # a lone article without an article-id is the one we asked for
        if pmcid in wanted:
            found[pmcid] = article
    return found
