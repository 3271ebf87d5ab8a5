"""The scrape steps and the all-in-one run: search -> fetch -> download -> clean -> split -> lists.

Every step reads and writes the manifest (``OUT/manifest.sqlite``) and can be
run alone; rerunning any of them continues where the last one stopped. The
all-in-one :func:`run_all` is demand driven: it downloads pending candidates,
fetches more articles when they run out and searches further when articles
run out, until ``num`` images are verified or the query is exhausted.

Output folder::

    OUT/manifest.sqlite        resumable state (see manifest.py)
    OUT/images/PMC.../...      verified images
    OUT/figures.json           whole figures, BLIP format + provenance (clean)
    OUT/subfigures/            panel crops + subfigures.json (split, data.subfigure)
    OUT/pretrain.json          BLIP pretraining list (subfigures when split, else figures)
    OUT/retrieval_{train,val,test}.json   BLIP Karpathy format, split by article
    OUT/report.json            counts: found / downloaded / skipped by reason
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from data.captions import clean_caption_text, count_words
from data.scraper.download import ImageLimits, SkipError, image_relpath, ordered_map, safe_join
from data.scraper.eutils import DEFAULT_EUTILS_URL, NCBI_HOSTS
from data.scraper.http import FetchError, HttpClient, HttpSettings, RateLimiter, RefusedError
from data.scraper.manifest import Manifest
from data.scraper.oa_bucket import DEFAULT_BUCKET_URL
from data.scraper.oa_package import DEFAULT_FTP_URL, DEFAULT_OA_SERVICE_URL
from data.scraper.openi import DEFAULT_OPENI_URL
from data.scraper.sources import ImageResult, LocalSource, OpeniSource, PmcSource
from data.scraper.splits import load_records, rebase_records, write_lists
from utils.atomic import TMP_SUFFIX, atomic_write_bytes, atomic_write_json
from utils.errors import ConfigError

try:  # advisory lock against two scrapers writing one folder; POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "ConfigError",
    "ScrapeConfig",
    "ScrapeContext",
    "run_all",
    "step_search",
    "step_fetch",
    "step_download",
    "step_clean",
    "step_split",
    "step_lists",
    "write_report",
]

log = logging.getLogger("medvlp.scrape")
SOURCES = {"pmc": PmcSource, "openi": OpeniSource, "local": LocalSource}
NCBI_MAX_RATE = {False: 3.0, True: 10.0}  # requests/s without / with an API key
MAX_SPLIT_WORKERS = 8  # each split process holds its own OCR engine (~100 MB)
# Figure skip reasons that are facts about the whole article: the report also counts the articles.
ARTICLE_LEVEL_REASONS = ("retracted", "not_open_access", "not_in_bucket", "route_unavailable")


@dataclass
class ScrapeConfig:
    out: Path
    source: str = "pmc"
    query: str = ""
    local_dir: Path | None = None
    num: int = 1000
    license: str = "any"
    min_words: int = 3
    workers: int = 8
    email: str = ""
    api_key: str = ""
    eutils_url: str = DEFAULT_EUTILS_URL
    openi_url: str = DEFAULT_OPENI_URL
    bucket_url: str = DEFAULT_BUCKET_URL
    oa_service_url: str = DEFAULT_OA_SERVICE_URL
    ftp_url: str = DEFAULT_FTP_URL
    ncbi_rate: float | None = None  # None: 3/s, or 10/s with an API key
    openi_rate: float = 2.0
    bucket_rate: float = 20.0
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: ImageLimits = field(default_factory=ImageLimits)
    search_page: int = 1000
    fetch_batch: int = 20
    openi_page: int = 30
    openi_collection: str = "pmc"
    openi_image_type: str = ""
    openi_article_type: str = ""
    fallback: bool = True  # the legacy OA-package route, used only where it works (oa_package.py)
    keep_retracted: bool = False
    max_failures_in_a_row: int = 50
    split: bool = True
    split_workers: int | None = None  # None: one process per CPU core, at most MAX_SPLIT_WORKERS
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.num < 0:
            raise ConfigError(f"--num must be >= 0, got {self.num}")
        if self.max_failures_in_a_row < 1:
            raise ConfigError(f"--max_failures must be >= 1, got {self.max_failures_in_a_row}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.split_workers is not None and self.split_workers < 1:
            raise ConfigError(f"--split_workers must be >= 1, got {self.split_workers}")
        if self.min_words < 0:
            raise ConfigError(f"--min_words must be >= 0, got {self.min_words}")
        for name in ("openi_rate", "bucket_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be > 0 requests/s")
        allowed = NCBI_MAX_RATE[bool(self.api_key)]
        if self.ncbi_rate is not None:
            if self.ncbi_rate <= 0:
                raise ConfigError("--ncbi_rate must be > 0 requests/s")
            talks_to_ncbi = any(
                urlsplit(url).hostname in NCBI_HOSTS for url in (self.eutils_url, self.oa_service_url, self.ftp_url)
            )
            if talks_to_ncbi and self.ncbi_rate > allowed:
                raise ConfigError(
                    f"--ncbi_rate {self.ncbi_rate} breaks NCBI's usage rules: at most {allowed:g} requests/s "
                    + ("with an API key" if self.api_key else "without an API key (get one for 10/s)")
                )

    @property
    def effective_split_workers(self) -> int:
        """Splitting is CPU work (panel cuts + OCR): one process per core, not one per download thread."""
        if self.split_workers is not None:
            return self.split_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, MAX_SPLIT_WORKERS))

    @property
    def effective_ncbi_rate(self) -> float:
        return self.ncbi_rate if self.ncbi_rate is not None else NCBI_MAX_RATE[bool(self.api_key)]


class ScrapeContext:
    """Everything a step needs: the locked output folder, the manifest, the HTTP client, the source."""

    def __init__(self, config: ScrapeConfig, *, job_required: bool = False):
        config.validate()
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock_handle = self._lock()
        self._bar: Any = None
        self.results: dict[str, Any] = {}
        self.skipped_this_run: Counter[str] = Counter()
        self.started = time.monotonic()
        try:
            self.stale_temp_removed = _remove_stale_temps(self.out)
            self.manifest = Manifest(self.out / "manifest.sqlite")
            self._check_job(job_required)
            self.client = HttpClient(
                {
                    "ncbi": RateLimiter(config.effective_ncbi_rate),
                    "openi": RateLimiter(config.openi_rate),
                    "bucket": RateLimiter(config.bucket_rate),
                },
                config.http,
                pool_size=max(16, config.workers * 2),
            )
            self.source = SOURCES[config.source](self)
            if job_required is False:
                self._store_job()
        except BaseException:
            self._release()
            raise

    def _lock(self) -> Any:
        handle = open(self.out / ".scrape.lock", "a+")
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ConfigError(f"{self.out}: another scrape.py is already writing this folder") from None
        return handle

    def _check_job(self, job_required: bool) -> None:
        stored = self.manifest.get_meta("job")
        if stored is None:
            if job_required:
                raise ConfigError(
                    f"{self.out}: no scrape here yet; start with `scrape.py search` or the all-in-one command"
                )
            return
        # Steps after search take source and query from the manifest.
        cfg = self.config
        if job_required:
            cfg.source = stored["source"]
            cfg.query = stored.get("query", cfg.query)
            cfg.license = stored.get("license", cfg.license)
            cfg.keep_retracted = stored.get("keep_retracted", False)
            if stored["source"] == "local":
                cfg.local_dir = Path(stored["dir"])
            if stored["source"] == "openi":
                cfg.openi_collection = stored.get("collection", cfg.openi_collection)
                cfg.openi_image_type = stored.get("image_type", cfg.openi_image_type)
                cfg.openi_article_type = stored.get("article_type", cfg.openi_article_type)

    def _store_job(self) -> None:
        job = self.source.job()
        stored = self.manifest.get_meta("job")
        if stored is None:
            self.manifest.set_meta("job", job)
        elif stored != job:
            raise ConfigError(
                f"{self.out} already holds a different scrape ({stored}); this run asks for {job}. "
                f"Use another --out, or the same settings to continue it."
            )

    def progress_bar(self, total: int | None, initial: int) -> Any:
        """One bar per run (downloads happen in several rounds when candidates run out)."""
        if not self.config.progress:
            return None
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="fig", desc="downloaded", dynamic_ncols=True)
        return self._bar

    def _release(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if getattr(self, "manifest", None) is not None:
            self.manifest.close()
        if getattr(self, "client", None) is not None:
            self.client.close()
        with contextlib.suppress(OSError):
            self._lock_handle.close()

    def __enter__(self) -> "ScrapeContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()


def _remove_stale_temps(out: Path) -> int:
    """Delete temporary files a killed run left behind (``.<name>.<random>.tmp`` from utils.atomic)."""
    removed = 0
    for folder, dirs, names in os.walk(out):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


# -- steps -----------------------------------------------------------------------------------------
def step_search(ctx: ScrapeContext, want: int) -> int:
    """Add about ``want`` articles (or Open-i figures) to the manifest."""
    added = ctx.source.search(ctx, max(want, 1))
    ctx.results["search"] = {"added": added, "exhausted": ctx.source.search_exhausted(ctx)}
    return added


def step_fetch(ctx: ScrapeContext, want: int) -> int:
    """Fetch article XML until ``want`` downloadable candidates wait (or articles run out)."""
    done = ctx.source.fetch(ctx, want)
    ctx.results["fetch"] = {"articles_processed": done}
    return done


@dataclass
class _Outcome:
    result: ImageResult | None = None
    skip: SkipError | None = None


def step_download(ctx: ScrapeContext, num: int) -> int:
    """Download pending candidates in order until ``num`` figures are verified; returns new ones."""
    manifest, cfg = ctx.manifest, ctx.config
    start_ok = manifest.count_ok()
    if num and start_ok >= num:
        return 0

    def work(item: tuple[int, dict[str, Any]]) -> _Outcome:
        _, candidate = item
        try:
            return _Outcome(result=ctx.source.image(candidate))
        except SkipError as exc:
            return _Outcome(skip=exc)
        except RefusedError:
            raise
        except Exception as exc:  # a bug must not end a three-day run: count it, log it, go on
            log.exception("unexpected error on %s", candidate.get("key"))
            return _Outcome(skip=SkipError("error", f"{candidate.get('key')}: {exc.__class__.__name__}: {exc}"))

    ok = start_ok
    skipped = ctx.skipped_this_run
    failures_in_a_row = 0
    bar = ctx.progress_bar(total=num or None, initial=start_ok)
    pending = manifest.iter_pending_figures(cfg.min_words)
    for (_seq, candidate), future in ordered_map(work, pending, workers=cfg.workers):
        outcome: _Outcome = future.result()  # RefusedError propagates and stops the run
        key = candidate["key"]
        if outcome.skip is not None:
            transient = outcome.skip.transient
            manifest.figure_not_ok(key, "failed" if transient else "skipped", outcome.skip.reason, str(outcome.skip))
            skipped[outcome.skip.reason] += 1
            failures_in_a_row = failures_in_a_row + 1 if transient else 0
            if failures_in_a_row >= cfg.max_failures_in_a_row:
                # Probably the network or the service is down: stop instead of marking everything failed.
                raise FetchError(
                    outcome.skip.reason,
                    f"{failures_in_a_row} downloads in a row failed (last: {outcome.skip}); the service or the "
                    f"network seems down",
                )
        else:
            failures_in_a_row = 0
            ok += _store(ctx, candidate, outcome.result, skipped)
        if bar is not None:
            bar.n = ok
            bar.set_postfix_str(_postfix(manifest.count("figures"), skipped), refresh=False)
            bar.refresh()
        if num and ok >= num:
            break
    ctx.results["download"] = {"downloaded": ok - start_ok, "skipped": dict(skipped)}
    return ok - start_ok


def _store(ctx: ScrapeContext, candidate: dict[str, Any], result: ImageResult, skipped: Counter[str]) -> int:
    """Write a verified image (unless its bytes are already kept) and record it; 1 if kept."""
    key = candidate["key"]
    owner = ctx.manifest.content_owner(result.image.sha256)
    if owner is not None:
        ctx.manifest.figure_not_ok(
            key,
            "skipped",
            "duplicate_content",
            f"same bytes as {owner}",
            duplicate_of=owner,
            source_url=result.source_url,
        )
        skipped["duplicate_content"] += 1
        return 0
    relpath = image_relpath(candidate["article_id"], candidate["figure_id"], key, result.image.ext)
    # File first, then the manifest: a kill in between leaves a file the rerun rewrites under the same name.
    atomic_write_bytes(safe_join(ctx.out, relpath), result.image.data)
    ctx.manifest.figure_ok(
        key,
        image=relpath,
        sha256=result.image.sha256,
        width=result.image.width,
        height=result.image.height,
        source_url=result.source_url,
        updates=result.updates,
    )
    return 1


def _postfix(found: int, skipped: Counter[str]) -> str:
    top = ", ".join(f"{reason}={n}" for reason, n in skipped.most_common(3))
    return f"found={found} skipped={sum(skipped.values())}" + (f" ({top})" if top else "")


_PROVENANCE = (
    "pmcid",
    "pmid",
    "doi",
    "title",
    "journal",
    "year",
    "license",
    "license_url",
    "figure_id",
    "label",
    "subcaptions",
    "group_id",
    "graphic",
    "source",
    "route",
    "source_url",
    "md5",
    "pmc_version",
    "retracted",
    "article_url",
    "openi_uid",
    "width",
    "height",
    "sha256",
)


def step_clean(ctx: ScrapeContext, num: int = 0) -> dict[str, Any]:
    """Verified figures -> ``figures.json`` (cleaned captions, ``--min_words``, first ``num``)."""
    records = []
    skipped: Counter[str] = Counter()
    for figure in ctx.manifest.ok_figures():
        caption = clean_caption_text(figure.get("caption"))
        if count_words(caption) < ctx.config.min_words:
            skipped["caption_too_short"] += 1
            continue
        if not (ctx.out / figure["image"]).is_file():
            skipped["image_missing"] += 1
            continue
        record = {"image": figure["image"], "caption": caption}
        for name in _PROVENANCE:
            value = figure.get(name)
            if value not in (None, "", []):
                record[name] = value
        records.append(record)
        if num and len(records) >= num:
            break
    atomic_write_json(ctx.out / "figures.json", records, indent=1)
    result = {"records": len(records), "skipped": dict(skipped)}
    ctx.results["clean"] = result
    ctx.manifest.set_meta("step_clean", result)
    log.info("clean: %d records in %s", len(records), ctx.out / "figures.json")
    return result


def _splitter() -> Any:
    """``data.subfigure.split_dataset`` (issue 5's package), imported only when the split step runs."""
    try:
        from data.subfigure import split_dataset
    except ModuleNotFoundError as exc:
        if exc.name not in ("data", "data.subfigure"):
            raise
        raise ConfigError(
            "the split step needs the subfigure splitter (package data.subfigure), which is not in this "
            "checkout; rerun with --no_split to build the lists from whole figures"
        ) from None
    return split_dataset


def step_split(ctx: ScrapeContext) -> dict[str, Any]:
    """Split compound figures into panels with ``data.subfigure`` (issue 5's package)."""
    split_dataset = _splitter()
    figures_json = ctx.out / "figures.json"
    if not figures_json.is_file():
        raise ConfigError(f"{figures_json}: missing; run the clean step first")
    report = split_dataset(
        figures_json,
        ctx.out / "subfigures",
        image_root=None,
        workers=ctx.config.effective_split_workers,
        progress=ctx.config.progress,
    )
    ctx.results["split"] = report
    return report


def _split_report(out: Path) -> dict[str, Any] | None:
    """The counts of the last split into ``OUT/subfigures`` (by the split step or ``scrape.py split``)."""
    try:
        report = json.loads((out / "subfigures" / "split_report.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def step_lists(ctx: ScrapeContext) -> dict[str, Any]:
    """``pretrain.json`` + retrieval splits from ``subfigures.json`` when split, else ``figures.json``."""
    figures_json = ctx.out / "figures.json"
    subfigures_json = ctx.out / "subfigures" / "subfigures.json"
    if ctx.config.split and subfigures_json.is_file():
        if figures_json.is_file() and subfigures_json.stat().st_mtime < figures_json.stat().st_mtime:
            log.warning(
                "%s is older than %s; rerun the split step to include new figures", subfigures_json, figures_json
            )
        records = rebase_records(load_records(subfigures_json), subfigures_json.parent, ctx.out)
        used = "subfigures/subfigures.json"
    else:
        if not figures_json.is_file():
            raise ConfigError(f"{figures_json}: missing; run the clean step first")
        records = load_records(figures_json)
        used = "figures.json"
    counts = write_lists(ctx.out, records, ratios=ctx.config.split_ratios, seed=ctx.config.seed)
    result = {"input": used, **counts}
    ctx.results["lists"] = result
    ctx.manifest.set_meta("step_lists", result)
    log.info("lists from %s: %s", used, counts)
    return result


def collect(ctx: ScrapeContext, num: int) -> str:
    """Search, fetch and download until ``num`` verified figures exist; returns why it stopped."""
    manifest, source, cfg = ctx.manifest, ctx.source, ctx.config
    while True:
        ok = manifest.count_ok()
        if num and ok >= num:
            return "complete"
        need = (num - ok) if num else 10**9
        if manifest.count_pending_figures(cfg.min_words):
            step_download(ctx, num)
            continue
        if manifest.count_pending_articles():
            if step_fetch(ctx, min(need, 10**6)):
                continue
        if not source.search_exhausted(ctx):
            step_search(ctx, min(need, 10**6))
            continue
        return "exhausted"


def run_all(ctx: ScrapeContext) -> dict[str, Any]:
    """The all-in-one command. Returns the report (also written to ``report.json``)."""
    cfg = ctx.config
    if cfg.split:
        _splitter()  # fail now, not after hours of downloading
    retried = ctx.manifest.retry_failed()
    if retried:
        log.info("%d items that failed transiently last time are tried again", retried)
    status = "complete"
    try:
        status = collect(ctx, cfg.num)
        step_clean(ctx, cfg.num)
        if cfg.split:
            step_split(ctx)
        step_lists(ctx)
    except (RefusedError, FetchError) as exc:
        status = "stopped"
        ctx.results["stopped"] = str(exc)
        raise
    except BaseException:
        status = "error"
        raise
    finally:
        write_report(ctx, status)
    return build_report(ctx, status)


def build_report(ctx: ScrapeContext, status: str) -> dict[str, Any]:
    manifest, cfg = ctx.manifest, ctx.config
    articles = manifest.status_counts("articles")
    figures = manifest.status_counts("figures")
    figure_skips = dict(figures.get("skipped", {}))
    for reason, n in manifest.counters("fetch").items():
        figure_skips[reason] = figure_skips.get(reason, 0) + n
    short = manifest.count_short_captions(cfg.min_words)
    if short:
        figure_skips["caption_too_short"] = figure_skips.get("caption_too_short", 0) + short
    dup_search = manifest.counters("search")
    return {
        "status": status,
        "job": manifest.get_meta("job"),
        "num": cfg.num,
        "search": {"state": manifest.get_meta("search_state"), "skipped": dup_search},
        "articles": {
            "found": manifest.count("articles"),
            "fetched": sum(articles.get("fetched", {}).values()),
            "pending": sum(articles.get("pending", {}).values()),
            "skipped": articles.get("skipped", {}),
            "skipped_at_download": manifest.articles_skipped_for(ARTICLE_LEVEL_REASONS),
            "failed_will_retry": articles.get("failed", {}),
        },
        "routes": _routes(ctx),
        "figures": {
            "found": manifest.count("figures")
            + manifest.counters("fetch").get("duplicate_figure", 0)
            + dup_search.get("duplicate_figure", 0),
            "downloaded": manifest.count_ok(),
            "pending": manifest.count_pending_figures(cfg.min_words),
            "skipped": dict(sorted(figure_skips.items())),
            "failed_will_retry": figures.get("failed", {}),
        },
        "clean": manifest.get_meta("step_clean"),
        "split": _split_report(ctx.out) if cfg.split else "disabled (--no_split)",
        "lists": manifest.get_meta("step_lists"),
        "this_run": {
            **{k: v for k, v in ctx.results.items() if k in ("search", "fetch", "download", "stopped")},
            "http": ctx.client.stats.as_dict(),
            "stale_temp_files_removed": ctx.stale_temp_removed,
            "seconds": round(time.monotonic() - ctx.started, 2),
        },
    }


def _routes(ctx: ScrapeContext) -> dict[str, dict[str, Any]]:
    """Which route served how many articles and figures, and how each route fared in this run."""
    counts = ctx.manifest.ok_by_route()
    routes: dict[str, dict[str, Any]] = {}
    for route, about in ctx.source.routes().items():
        routes[route] = {**counts.pop(route, {"articles": 0, "figures": 0}), "about": about}
    routes.update(counts)  # figures of earlier runs by a route this source no longer names
    return routes


def write_report(ctx: ScrapeContext, status: str) -> dict[str, Any]:
    report = build_report(ctx, status)
    atomic_write_json(ctx.out / "report.json", report, indent=1)
    return report
