"""PMC search past ESearch's 10,000-record window: the query is split by PMC release date, resumably.

ESearch pages through only the first 10,000 records of a PMC search (see
``eutils.py``). NCBI's recipe for more is to split the query by the date an
article was added to PMC, ``YYYY/MM/DD:YYYY/MM/DD[pmcrdat]`` (PMC Cloud
Service page, https://pmc.ncbi.nlm.nih.gov/tools/pmcaws/, "PMC Search Fields
and Example Queries" and FAQ; checked 2026-12-01). So:

* the first answer gives the query's ``count``; if it fits the window, the
  ids are paged with ``retstart`` in relevance order, as before;
* otherwise the search runs over date windows, newest first, starting with
  ``1900/01/01`` .. tomorrow (PMC began in 2000, so nothing is older): a window
  whose count exceeds the window is cut in two halves (its ids discarded: they
  come back in the halves), a window that fits is paged to its end. Windows
  never overlap, so no id is seen twice. A single day with more hits than the
  window cannot be split further: its first 9,999 ids are taken and the rest
  is counted as ``truncated``.

Every step is one request and one state change; :meth:`PmcSearch.step`
returns the new state with the ids it found, and the caller stores both in one
transaction, so a ``kill -9`` at any moment resumes exactly where the last
committed page ended.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

from data.scraper import eutils
from data.scraper.http import FetchError, HttpClient

__all__ = ["PmcSearch", "SearchStep", "window_term", "FIRST_DAY"]

log = logging.getLogger("medvlp.scrape")
FIRST_DAY = datetime.date(1900, 1, 1)
_DAY = datetime.timedelta(days=1)


def _day(text: str) -> datetime.date:
    return datetime.datetime.strptime(text, "%Y/%m/%d").date()


def window_term(term: str, first: str, last: str) -> str:
    """The query restricted to PMC release dates ``first`` .. ``last`` (inclusive, ``YYYY/MM/DD``)."""
    return f"({term}) AND {first}:{last}[pmcrdat]"


def _halves(first: str, last: str) -> list[list[str]]:
    """[newer half, older half] of a window of at least two days."""
    start, end = _day(first), _day(last)
    middle = start + (end - start) // 2
    return [[(middle + _DAY).strftime("%Y/%m/%d"), last], [first, middle.strftime("%Y/%m/%d")]]


@dataclass
class SearchStep:
    """What one request found: ids to add, the state to store with them, counters to bump."""

    ids: list[str]
    state: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


class PmcSearch:
    """One ESearch request per :meth:`step`, driven by the stored state (see the module docstring)."""

    def __init__(
        self,
        client: HttpClient,
        config: eutils.EutilsConfig,
        term: str,
        *,
        page_size: int,
        window: int = eutils.ESEARCH_MAX_RECORDS,
        today: datetime.date | None = None,
    ):
        self.client = client
        self.config = config
        self.term = term
        self.page_size = max(1, min(page_size, window))
        self.window = window
        self.today = today or datetime.datetime.now(datetime.timezone.utc).date()

    @staticmethod
    def initial_state() -> dict[str, Any]:
        return {"mode": None, "count": None, "next": 0, "exhausted": False}

    def upgrade(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state written before date splitting ({next, count, exhausted}): relevance paging, or date windows
        if the search is larger than the window (ids found again there are counted as duplicate_article)."""
        if "mode" in state:
            return state
        count = state.get("count")
        if count is None:
            return {**state, "mode": None}
        if count <= self.window or state.get("exhausted"):
            return {**state, "mode": "relevance"}
        return self._dates_state(count)

    def step(self, state: dict[str, Any]) -> SearchStep:
        """Send the next request of the search that ``state`` describes."""
        state = self.upgrade(state)
        if state["mode"] == "dates":
            return self._page_window(state)
        return self._page_query(state)

    def _read(self, term: str, retstart: int) -> eutils.SearchPage | None:
        """One page; None when it stays unreadable after retries (skipped and counted, as the next page is still
        worth having)."""
        retmax = max(1, min(self.page_size, self.window - retstart))
        try:
            return eutils.esearch(self.client, self.config, term, retstart=retstart, retmax=retmax)
        except FetchError as exc:
            if exc.reason != "malformed":
                raise
            log.warning("esearch page at %d skipped: %s", retstart, exc)
            return None

    def _page_query(self, state: dict[str, Any]) -> SearchStep:
        """The whole query in relevance order; its first readable answer decides whether dates are needed."""
        start = state["next"]
        if start >= self.window:  # the query grew past the window since its first answer, or nothing was readable
            truncated = max(0, (state["count"] or 0) - start)
            return SearchStep([], {**state, "exhausted": True, "truncated": truncated})
        page = self._read(self.term, start)
        if page is None:
            new = {**state, "next": start + self.page_size}
            new["exhausted"] = state["count"] is not None and new["next"] >= state["count"]
            return SearchStep([], new, {"malformed_page": 1})
        if state["mode"] is None and page.count > self.window:
            log.info(
                "esearch: %d hits, more than the %d ESearch can page through: splitting the query by release date",
                page.count,
                self.window,
            )
            return SearchStep([], self._dates_state(page.count))
        new = {**state, "mode": "relevance", "count": page.count, "next": start + len(page.ids)}
        new["exhausted"] = not page.ids or new["next"] >= min(page.count, self.window)
        if new["exhausted"] and page.count > self.window:
            new["truncated"] = page.count - self.window
        return SearchStep(page.ids, new)

    def _dates_state(self, count: int) -> dict[str, Any]:
        """The start of a date-window search: one window from FIRST_DAY to tomorrow (no PMC date is later)."""
        return {
            "mode": "dates",
            "count": count,
            "next": 0,
            "exhausted": False,
            "windows": [[FIRST_DAY.strftime("%Y/%m/%d"), (self.today + _DAY).strftime("%Y/%m/%d")]],
            "window_count": None,
            "found": 0,
            "truncated": 0,
        }

    def _page_window(self, state: dict[str, Any]) -> SearchStep:
        windows = [list(w) for w in state["windows"]]
        if not windows:
            return SearchStep([], self._finish(state))
        first, last = windows[0]
        start = state["next"]
        page = self._read(window_term(self.term, first, last), start)
        if page is None:
            new = {**state, "next": start + self.page_size}
            if state["window_count"] is not None and new["next"] >= state["window_count"]:
                new = self._next_window(new, windows)
            return SearchStep([], new, {"malformed_page": 1})
        new = dict(state)
        counts: dict[str, int] = {}
        if state["window_count"] is None:  # first page of this window: does it fit?
            if page.count > self.window and first != last:
                log.info("esearch: %d hits in %s:%s, splitting it in two", page.count, first, last)
                new.update(windows=_halves(first, last) + windows[1:], next=0)
                return SearchStep([], new)
            if page.count > self.window:
                lost = page.count - self.window
                log.warning("esearch: %d hits on %s alone; %d past the window are skipped", page.count, first, lost)
                new["truncated"] = state["truncated"] + lost
                counts["esearch_window_truncated"] = lost
            new["window_count"] = min(page.count, self.window)
            new["found"] = state["found"] + new["window_count"]
        new["next"] = start + len(page.ids)
        if not page.ids or new["next"] >= new["window_count"]:
            new = self._next_window(new, windows)
        return SearchStep(page.ids, new, counts)

    @staticmethod
    def _next_window(state: dict[str, Any], windows: list[list[str]]) -> dict[str, Any]:
        new = {**state, "windows": windows[1:], "next": 0, "window_count": None}
        return PmcSearch._finish(new) if not new["windows"] else new

    @staticmethod
    def _finish(state: dict[str, Any]) -> dict[str, Any]:
        outside = max(0, (state["count"] or 0) - state["found"] - state["truncated"])
        if outside:
            log.warning(
                "esearch: the date windows held %d of the query's %d hits (%d without a release date in "
                "1900..today, or added to PMC while the search ran)",
                state["found"],
                state["count"],
                outside,
            )
        return {**state, "exhausted": True, "outside_windows": outside}
