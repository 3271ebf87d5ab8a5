"""The three places figures come from: PMC (E-utilities + cloud bucket), Open-i, a local OA dump.

Each source implements the same three verbs, all resumable through the manifest:

* ``search(ctx, want)`` -- add up to about ``want`` new articles (PMC, local)
  or candidate figures (Open-i, whose search results already are figures);
* ``fetch(ctx, want)`` -- turn pending articles into candidate figures until
  about ``want`` downloadable candidates wait (no-op for Open-i);
* ``image(candidate)`` -- return the verified image bytes for one candidate
  (runs in worker threads: network and CPU only, never the manifest).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.scraper import eutils, openi
from data.scraper.download import ImageLimits, SkipError, VerifiedImage, download_image, verify_image_bytes
from data.scraper.http import FetchError
from data.scraper.jats import ArticleMeta, Figure, JatsError, article_figures, article_meta, iter_articles, parse_xml
from data.scraper.licenses import license_allowed, pmc_license_filter
from data.scraper.oa_bucket import BucketResolver, OAPackageFallback, is_safe_href, match_media

if TYPE_CHECKING:
    from data.scraper.pipeline import ScrapeContext

__all__ = ["PmcSource", "OpeniSource", "LocalSource", "jats_candidates", "ImageResult"]

log = logging.getLogger("medvlp.scrape")
_PMCID = re.compile(r"PMC\d+")
MAX_FAILED_BATCHES = 3  # efetch batches failing one after another (after retries) stop the run


@dataclass
class ImageResult:
    """A verified image plus where it came from and metadata learned on the way (e.g. the bucket's licence)."""

    image: VerifiedImage
    source_url: str
    updates: dict[str, Any] = field(default_factory=dict)


def jats_candidates(meta: ArticleMeta, figures: list[Figure], *, source: str, article_id: str) -> list[dict[str, Any]]:
    """Candidate-figure dicts (one per graphic) with the article's provenance."""
    pmcid = meta.pmcid if _PMCID.fullmatch(meta.pmcid or "") else ""
    candidates = []
    for fig in figures:
        candidates.append(
            {
                "key": f"{article_id}/{fig.figure_id}/{fig.graphic}",
                "article_id": article_id,
                "pmcid": pmcid,
                "pmid": meta.pmid,
                "doi": meta.doi,
                "title": meta.title,
                "journal": meta.journal,
                "year": meta.year,
                "license": meta.license,
                "license_url": meta.license_url,
                "figure_id": fig.figure_id,
                "label": fig.label,
                "caption": fig.caption,
                "subcaptions": fig.subcaptions,
                "group_id": fig.group_id,
                "graphic": fig.graphic,
                "source": source,
                "article_url": f"https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/" if pmcid else "",
            }
        )
    return candidates


def _check_graphic(candidate: dict[str, Any]) -> str:
    href = candidate.get("graphic") or ""
    if not href:
        raise SkipError("no_graphic", f"{candidate['key']}: figure has no <graphic> image")
    if not is_safe_href(href):
        raise SkipError("unsafe_href", f"{candidate['key']}: refusing graphic href {href!r}")
    return href


class PmcSource:
    """esearch -> efetch (JATS) -> images from the PMC OA bucket, OA package as fallback."""

    name = "pmc"

    def __init__(self, ctx: "ScrapeContext"):
        cfg = ctx.config
        self.ctx = ctx
        self.eutils = eutils.EutilsConfig(base_url=cfg.eutils_url, email=cfg.email, api_key=cfg.api_key)
        self.bucket = BucketResolver(ctx.client, cfg.bucket_url)
        self.fallback = (
            OAPackageFallback(ctx.client, cfg.oa_service_url, cfg.ftp_url, max_image_bytes=cfg.limits.max_bytes)
            if cfg.fallback
            else None
        )

    def job(self) -> dict[str, Any]:
        cfg = self.ctx.config
        return {"source": "pmc", "query": cfg.query, "license": cfg.license}

    def search(self, ctx: "ScrapeContext", want: int) -> int:
        """esearch pages until ``want`` new articles are added or the hits run out."""
        cfg = ctx.config
        term = f"({cfg.query}) AND {pmc_license_filter(cfg.license)}"
        added_total = 0
        while added_total < want:
            state = ctx.manifest.get_meta("search_state", {"next": 0, "count": None, "exhausted": False})
            if state["exhausted"]:
                break
            retmax = max(1, min(cfg.search_page, max(want - added_total, 10)))
            try:
                page = eutils.esearch(ctx.client, self.eutils, term, retstart=state["next"], retmax=retmax)
            except FetchError as exc:
                if exc.reason != "malformed":
                    raise
                # A page we cannot read is skipped and counted; the next page is still worth having.
                log.warning("esearch page at %d skipped: %s", state["next"], exc)
                new_state = {**state, "next": state["next"] + retmax}
                new_state["exhausted"] = state["count"] is not None and new_state["next"] >= state["count"]
                with ctx.manifest.transaction() as db:
                    ctx.manifest.bump(db, "search", "malformed_page")
                    ctx.manifest.set_meta("search_state", new_state, db)
                continue
            new_state = {
                "next": state["next"] + len(page.ids),
                "count": page.count,
                "exhausted": not page.ids or state["next"] + len(page.ids) >= page.count,
            }
            added = ctx.manifest.add_articles(
                ((pmcid, {}) for pmcid in page.ids), extra_meta={"search_state": new_state}
            )
            added_total += added
            log.info("esearch: %d hits in total, %d new articles (%d so far)", page.count, added, new_state["next"])
        return added_total

    def search_exhausted(self, ctx: "ScrapeContext") -> bool:
        return ctx.manifest.get_meta("search_state", {"exhausted": False})["exhausted"]

    def fetch(self, ctx: "ScrapeContext", want: int) -> int:
        """efetch pending articles batch by batch until ``want`` candidates wait; returns articles done."""
        cfg = ctx.config
        done = 0
        failed_batches = 0
        while ctx.manifest.count_pending_figures(cfg.min_words) < want:
            batch = [article_id for article_id, _ in ctx.manifest.pending_articles(cfg.fetch_batch)]
            if not batch:
                break
            malformed: dict[str, str] = {}
            try:
                articles = eutils.efetch_articles(ctx.client, self.eutils, batch, on_malformed=malformed.__setitem__)
            except FetchError as exc:
                log.warning("efetch of %d articles failed (%s); they are retried on the next run", len(batch), exc)
                for pmcid in batch:
                    ctx.manifest.finish_article(pmcid, "failed", reason=exc.reason, message=str(exc))
                done += len(batch)
                failed_batches += 1
                if failed_batches >= MAX_FAILED_BATCHES:  # E-utilities seem down: stop, resume later
                    raise
                continue
            failed_batches = 0
            for pmcid in batch:
                if pmcid in malformed:
                    ctx.manifest.finish_article(pmcid, "skipped", reason="malformed_xml", message=malformed[pmcid])
                elif pmcid not in articles:
                    ctx.manifest.finish_article(
                        pmcid, "failed", reason="not_returned", message="efetch returned no article for this id"
                    )
                else:
                    self._finish(ctx, pmcid, articles[pmcid])
                done += 1
        return done

    def _finish(self, ctx: "ScrapeContext", pmcid: str, article: Any) -> None:
        meta = article_meta(article)
        meta.pmcid = pmcid
        if not meta.has_body:
            ctx.manifest.finish_article(
                pmcid, "skipped", reason="no_body", message="XML has front matter only (not open access)"
            )
            return
        if meta.license != "unknown" and not license_allowed(meta.license, ctx.config.license):
            ctx.manifest.finish_article(pmcid, "skipped", reason="license_excluded", message=meta.license)
            return
        figures = article_figures(article)
        if not figures:
            ctx.manifest.finish_article(pmcid, "skipped", reason="no_figures", message="article has no <fig>")
            return
        candidates = jats_candidates(meta, figures, source="pmc", article_id=pmcid)
        ctx.manifest.finish_article(pmcid, "fetched", candidates=candidates)

    def image(self, candidate: dict[str, Any]) -> ImageResult:
        cfg = self.ctx.config
        href = _check_graphic(candidate)
        pmcid = candidate["article_id"]
        updates: dict[str, Any] = {}
        url = None
        bucket_error: SkipError | None = None
        try:
            media = self.bucket.media(pmcid)
        except FetchError as exc:
            media, bucket_error = None, SkipError(exc.reason, str(exc))
        if media is not None and media.license != "unknown":
            updates["license"] = media.license  # the bucket's licence code is PMC's own reading
        license_code = updates.get("license", candidate.get("license", "unknown"))
        if not license_allowed(license_code, cfg.license):
            reason = "license_unknown" if license_code == "unknown" else "license_excluded"
            raise SkipError(reason, f"{pmcid}: licence {license_code} is not allowed by --license {cfg.license}")
        if media is not None:
            url = media.url_for(href)
        if url is not None:
            return ImageResult(download_image(self.ctx.client, url, service="bucket", limits=cfg.limits), url, updates)
        if self.fallback is None:
            if bucket_error is not None:
                raise bucket_error
            reason = "not_in_bucket" if media is None else "media_not_found"
            raise SkipError(reason, f"{candidate['key']}: no media file for {href!r} in the OA bucket")
        try:
            package = self.fallback.package(pmcid)
        except FetchError as exc:
            raise SkipError(exc.reason, str(exc)) from None
        name = match_media(package.images, href) if package is not None else None
        if name is None:
            raise bucket_error or SkipError(
                "media_not_found", f"{candidate['key']}: {href!r} found neither in the OA bucket nor in the OA package"
            )
        source_url = f"{package.url}#{name}"
        image = verify_image_bytes(package.images[name], "", cfg.limits, source_url)
        return ImageResult(image, source_url, updates)


class OpeniSource:
    """Open-i search results are figures already: search adds candidates, fetch does nothing."""

    name = "openi"

    def __init__(self, ctx: "ScrapeContext"):
        cfg = ctx.config
        self.ctx = ctx
        self.config = openi.OpeniConfig(
            base_url=cfg.openi_url,
            collection=cfg.openi_collection,
            image_type=cfg.openi_image_type,
            article_type=cfg.openi_article_type,
        )

    def job(self) -> dict[str, Any]:
        cfg = self.ctx.config
        return {
            "source": "openi",
            "query": cfg.query,
            "license": cfg.license,
            "collection": cfg.openi_collection,
            "image_type": cfg.openi_image_type,
            "article_type": cfg.openi_article_type,
        }

    def search(self, ctx: "ScrapeContext", want: int) -> int:
        """Page through Open-i until ``want`` new candidates are added or results run out."""
        cfg = ctx.config
        added_total = 0
        while added_total < want:
            state = ctx.manifest.get_meta("search_state", {"next": 1, "count": None, "exhausted": False})
            if state["exhausted"]:
                break
            start = state["next"]
            try:
                page = openi.search_page(ctx.client, self.config, cfg.query, start=start, size=cfg.openi_page)
            except FetchError as exc:
                if exc.reason != "malformed":
                    raise
                log.warning("Open-i page at %d skipped: %s", start, exc)
                new_state = {**state, "next": start + cfg.openi_page}
                new_state["exhausted"] = state["count"] is not None and new_state["next"] > state["count"]
                ctx.manifest.add_candidates(
                    [], step="search", counts={"malformed_page": 1}, extra_meta={"search_state": new_state}
                )
                continue
            counts: Counter[str] = Counter()
            candidates = []
            for item in page.items:
                try:
                    candidate = openi.item_to_candidate(item, cfg.openi_url)
                except ValueError as exc:
                    counts[str(exc)] += 1
                    continue
                if candidate["license"] != "unknown" and not license_allowed(candidate["license"], cfg.license):
                    counts["license_excluded"] += 1
                    continue
                if candidate["license"] == "unknown" and cfg.license != "any":
                    counts["license_unknown"] += 1
                    continue
                candidates.append(candidate)
            new_state = {
                "next": page.next_start,
                "count": page.total,
                "exhausted": not page.items or page.next_start > page.total,
            }
            added = ctx.manifest.add_candidates(
                candidates, step="search", counts=dict(counts), extra_meta={"search_state": new_state}
            )
            added_total += added
            log.info(
                "Open-i: %d hits in total, items %d-%d: %d new figures", page.total, start, page.next_start - 1, added
            )
        return added_total

    def search_exhausted(self, ctx: "ScrapeContext") -> bool:
        return ctx.manifest.get_meta("search_state", {"exhausted": False})["exhausted"]

    def fetch(self, ctx: "ScrapeContext", want: int) -> int:
        return 0

    def image(self, candidate: dict[str, Any]) -> ImageResult:
        url = candidate["image_url"]
        return ImageResult(download_image(self.ctx.client, url, service="openi", limits=self.ctx.config.limits), url)


class LocalSource:
    """A folder of already downloaded OA articles (``*.xml`` / ``*.nxml`` with their images beside them)."""

    name = "local"

    def __init__(self, ctx: "ScrapeContext"):
        self.ctx = ctx
        if ctx.config.local_dir is None:
            raise ValueError("local source needs a directory (--from-local DIR)")
        self.root = Path(ctx.config.local_dir).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--from-local {self.root}: not a directory")

    def job(self) -> dict[str, Any]:
        return {"source": "local", "dir": str(self.root), "license": self.ctx.config.license}

    def search(self, ctx: "ScrapeContext", want: int) -> int:
        """Scan the folder once; every XML file is an 'article' to fetch."""
        if ctx.manifest.get_meta("search_state", {"exhausted": False})["exhausted"]:
            return 0
        files = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.lower().endswith((".xml", ".nxml")) and not name.startswith("."):
                    files.append((Path(folder) / name).relative_to(self.root).as_posix())
        state = {"next": len(files), "count": len(files), "exhausted": True}
        added = ctx.manifest.add_articles(((rel, {"path": rel}) for rel in files), extra_meta={"search_state": state})
        log.info("local: %d XML files under %s", len(files), self.root)
        return added

    def search_exhausted(self, ctx: "ScrapeContext") -> bool:
        return ctx.manifest.get_meta("search_state", {"exhausted": False})["exhausted"]

    def fetch(self, ctx: "ScrapeContext", want: int) -> int:
        done = 0
        while ctx.manifest.count_pending_figures(ctx.config.min_words) < want:
            batch = ctx.manifest.pending_articles(ctx.config.fetch_batch)
            if not batch:
                break
            for rel, _info in batch:
                self._fetch_file(ctx, rel)
                done += 1
        return done

    def _fetch_file(self, ctx: "ScrapeContext", rel: str) -> None:
        path = self.root / rel
        try:
            root = parse_xml(path.read_bytes(), str(path))
        except (OSError, JatsError) as exc:
            ctx.manifest.finish_article(rel, "skipped", reason="malformed_xml", message=str(exc))
            return
        articles = iter_articles(root)
        if not articles:
            ctx.manifest.finish_article(rel, "skipped", reason="no_article", message=f"{path}: no <article> element")
            return
        candidates: list[dict[str, Any]] = []
        reasons: Counter[str] = Counter()
        for index, article in enumerate(articles):
            meta = article_meta(article)
            if not meta.pmcid:
                found = _PMCID.search(rel)
                meta.pmcid = found.group(0) if found else ""
            if not meta.has_body:
                reasons["no_body"] += 1
                continue
            if meta.license != "unknown" and not license_allowed(meta.license, ctx.config.license):
                reasons["license_excluded"] += 1
                continue
            article_id = meta.pmcid or (rel if len(articles) == 1 else f"{rel}#{index}")
            for candidate in jats_candidates(meta, article_figures(article), source="local", article_id=article_id):
                candidate["local_xml"] = rel
                candidates.append(candidate)
        if candidates:
            ctx.manifest.finish_article(rel, "fetched", candidates=candidates, counts=dict(reasons))
        else:
            reason = next(iter(reasons), "no_figures")
            ctx.manifest.finish_article(rel, "skipped", reason=reason, message=f"{path}: no usable figure")

    def image(self, candidate: dict[str, Any]) -> ImageResult:
        href = _check_graphic(candidate)
        folder = (self.root / candidate["local_xml"]).parent
        sub = Path(href).parent
        lookup = (folder / sub).resolve()
        if not lookup.is_relative_to(self.root) or not lookup.is_dir():
            raise SkipError("image_missing", f"{candidate['key']}: no folder for {href!r} under {self.root}")
        name = match_media(sorted(os.listdir(lookup)), Path(href).name)
        if name is None:
            raise SkipError("image_missing", f"{candidate['key']}: no image file for {href!r} in {lookup}")
        path = (lookup / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise SkipError("unsafe_href", f"{candidate['key']}: {path} is outside {self.root} or not a file")
        limits: ImageLimits = self.ctx.config.limits
        if path.stat().st_size > limits.max_bytes:
            raise SkipError("too_large", f"{path}: larger than {limits.max_bytes} bytes")
        image = verify_image_bytes(path.read_bytes(), "", limits, str(path))
        return ImageResult(image, path.relative_to(self.root).as_posix())
