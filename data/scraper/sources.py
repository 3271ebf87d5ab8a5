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
from data.scraper.oa_bucket import BucketResolver, is_safe_href, match_media
from data.scraper.oa_package import LegacyPackageRoute
from data.scraper.pmc_search import PmcSearch

if TYPE_CHECKING:
    from data.scraper.pipeline import ScrapeContext

__all__ = ["PmcSource", "OpeniSource", "LocalSource", "jats_candidates", "ImageResult"]

log = logging.getLogger("medvlp.scrape")
_PMCID = re.compile(r"PMC\d+")
MAX_FAILED_BATCHES = 3  # efetch batches failing one after another (after retries) stop the run


# Routes an image can come by (recorded per figure as "route"; the report counts articles per route).
ROUTE_BUCKET, ROUTE_OA_PACKAGE, ROUTE_OPENI, ROUTE_LOCAL = "bucket", "oa_package", "openi", "local"


@dataclass
class ImageResult:
    """A verified image plus where it came from and metadata learned on the way (route, licence, MD5)."""

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
    """esearch -> efetch (JATS) -> images from the PMC Cloud Service bucket (the legacy OA package where it works)."""

    name = "pmc"

    def __init__(self, ctx: "ScrapeContext"):
        cfg = ctx.config
        self.ctx = ctx
        self.eutils = eutils.EutilsConfig(base_url=cfg.eutils_url, email=cfg.email, api_key=cfg.api_key)
        self.bucket = BucketResolver(ctx.client, cfg.bucket_url)
        self.legacy = (
            LegacyPackageRoute(ctx.client, cfg.oa_service_url, cfg.ftp_url, max_image_bytes=cfg.limits.max_bytes)
            if cfg.fallback
            else None
        )

    def job(self) -> dict[str, Any]:
        cfg = self.ctx.config
        job = {"source": "pmc", "query": cfg.query, "license": cfg.license}
        if cfg.keep_retracted:  # only when set, so folders started before the option still match
            job["keep_retracted"] = True
        return job

    def routes(self) -> dict[str, str]:
        """How each image route fared in this run, for the report and the summary line."""
        legacy = self.legacy.status if self.legacy is not None else "off (--no_fallback)"
        return {ROUTE_BUCKET: "PMC Cloud Service bucket", ROUTE_OA_PACKAGE: f"legacy OA package: {legacy}"}

    def search(self, ctx: "ScrapeContext", want: int) -> int:
        """ESearch steps (date windows past 9,999 hits) until ``want`` new articles are added or hits run out."""
        cfg = ctx.config
        term = f"({cfg.query}) AND {pmc_license_filter(cfg.license)}"
        planner = PmcSearch(ctx.client, self.eutils, term, page_size=cfg.search_page)
        added_total = 0
        while added_total < want:
            state = ctx.manifest.get_meta("search_state") or planner.initial_state()
            if state["exhausted"]:
                break
            step = planner.step(state)
            added = ctx.manifest.add_articles(
                ((pmcid, {}) for pmcid in step.ids), extra_meta={"search_state": step.state}, counts=step.counts
            )
            added_total += added
            if step.ids:
                log.info("esearch: %d hits in total, %d new articles", step.state["count"], added)
        return added_total

    def search_exhausted(self, ctx: "ScrapeContext") -> bool:
        return (ctx.manifest.get_meta("search_state") or {"exhausted": False})["exhausted"]

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
        try:
            media = self.bucket.media(pmcid)
        except FetchError as exc:
            media, bucket_error = None, SkipError(exc.reason, str(exc))
        else:
            bucket_error = None
        updates: dict[str, Any] = {}
        if media is not None:
            self._check_article(pmcid, retracted=media.retracted, open_access=media.open_access, updates=updates)
            updates["pmc_version"] = media.version
            if media.license != "unknown":
                updates["license"] = media.license  # the bucket's licence code is PMC's own reading
        self._check_license(pmcid, updates.get("license", candidate.get("license", "unknown")))
        media_file = media.media_for(href) if media is not None else None
        if media_file is not None:
            image = download_image(
                self.ctx.client, media_file.url, service="bucket", limits=cfg.limits, md5=media_file.md5
            )
            if media_file.md5:
                updates["md5"] = media_file.md5  # checked: the bytes have the digest NCBI published
            return ImageResult(image, media_file.url, {**updates, "route": ROUTE_BUCKET})
        if self.legacy is None:
            if bucket_error is not None:
                raise bucket_error
            reason = "not_in_bucket" if media is None else "media_not_found"
            raise SkipError(reason, f"{candidate['key']}: no media file for {href!r} in the PMC Cloud Service bucket")
        return self._from_package(candidate, href, updates, bucket_error)

    def _check_article(
        self, pmcid: str, *, retracted: bool | None, open_access: bool | None, updates: dict[str, Any]
    ) -> None:
        """Retracted articles never become training data (unless --keep_retracted); non-OA ones are not ours."""
        if retracted:
            if not self.ctx.config.keep_retracted:
                raise SkipError("retracted", f"{pmcid}: the article is retracted (--keep_retracted keeps it)")
            updates["retracted"] = True
        if open_access is False:
            raise SkipError("not_open_access", f"{pmcid}: the article is not in the PMC Open Access Subset")

    def _check_license(self, pmcid: str, license_code: str) -> None:
        option = self.ctx.config.license
        if not license_allowed(license_code, option):
            reason = "license_unknown" if license_code == "unknown" else "license_excluded"
            raise SkipError(reason, f"{pmcid}: licence {license_code} is not allowed by --license {option}")

    def _from_package(
        self, candidate: dict[str, Any], href: str, updates: dict[str, Any], bucket_error: SkipError | None
    ) -> ImageResult:
        """The legacy route, for an image the bucket does not have (see oa_package.py for when it is used)."""
        pmcid = candidate["article_id"]
        try:
            package = self.legacy.package(pmcid) if self.legacy is not None else None
        except FetchError as exc:
            # A failed bucket lookup (transient) is the error worth reporting: the next run retries it.
            raise (bucket_error or SkipError(exc.reason, str(exc))) from None
        name = match_media(package.images, href) if package is not None else None
        if package is None or name is None:
            raise bucket_error or SkipError(
                "media_not_found", f"{candidate['key']}: {href!r} found neither in the bucket nor in the OA package"
            )
        self._check_article(pmcid, retracted=package.retracted, open_access=None, updates=updates)
        source_url = f"{package.url}#{name}"
        image = verify_image_bytes(package.images[name], "", self.ctx.config.limits, source_url)
        return ImageResult(image, source_url, {**updates, "route": ROUTE_OA_PACKAGE})


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

    def routes(self) -> dict[str, str]:
        return {ROUTE_OPENI: "Open-i"}

    def image(self, candidate: dict[str, Any]) -> ImageResult:
        url = candidate["image_url"]
        image = download_image(self.ctx.client, url, service="openi", limits=self.ctx.config.limits)
        return ImageResult(image, url, {"route": ROUTE_OPENI})


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

    def routes(self) -> dict[str, str]:
        return {ROUTE_LOCAL: f"local folder {self.root}"}

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
        return ImageResult(image, path.relative_to(self.root).as_posix(), {"route": ROUTE_LOCAL})
