#!/usr/bin/env python
"""Keyword -> PubMed Central figures with captions, downloaded, verified, resumable, polite.

All in one (search, fetch, download, clean, split, lists; ``--no_split`` keeps figures whole)::

    python scrape.py --query "brain MRI" --num 1000 --out data/pubmed --email you@lab.org [--api-key KEY]
    python scrape.py --query "chest x-ray" --num 500 --out data/openi --source openi
    python scrape.py --from-local ~/pmc_oa_dump --out data/local

One step at a time (each resumable; later steps read the job from OUT)::

    python scrape.py search   --query "brain MRI" --num 1000 --out data/pubmed
    python scrape.py fetch    --out data/pubmed --num 1000
    python scrape.py download --out data/pubmed --num 1000
    python scrape.py clean    --out data/pubmed --min_words 5
    python scrape.py split    --input data/pubmed/figures.json --out data/pubmed/subfigures
    python scrape.py lists    --out data/pubmed

Inspect a saved article::

    python scrape.py figures PMC1234567.xml      # one JSON line per figure

Exit codes: 0 done, 2 bad arguments or input, 3 stopped by the server or the
network (everything so far is saved; rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from data.scraper.download import ImageLimits
from data.scraper.eutils import DEFAULT_EUTILS_URL
from data.scraper.http import FetchError, HttpSettings, QueryError, RefusedError
from data.scraper.jats import JatsError, article_figures, article_meta, iter_articles, parse_xml
from data.scraper.licenses import LICENSE_CHOICES
from data.scraper.manifest import ManifestError
from data.scraper.oa_bucket import DEFAULT_BUCKET_URL
from data.scraper.oa_package import DEFAULT_FTP_URL, DEFAULT_OA_SERVICE_URL
from data.scraper.openi import DEFAULT_OPENI_URL
from data.scraper.pipeline import (
    ConfigError,
    ScrapeConfig,
    ScrapeContext,
    run_all,
    step_clean,
    step_download,
    step_fetch,
    step_lists,
    step_search,
    write_report,
)
from data.scraper.sources import jats_candidates

STEPS = ("search", "fetch", "download", "clean", "split", "lists", "figures")
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 3
log = logging.getLogger("medvlp.scrape")


def _add(parser: argparse.ArgumentParser | Any, name: str, **kwargs: Any) -> None:
    """Add ``--some_option`` with its ``--some-option`` spelling too."""
    names = [name]
    if "_" in name:
        names.append(name.replace("_", "-"))
    parser.add_argument(*names, **kwargs)


def add_job_arguments(parser: argparse.ArgumentParser, *, local: bool) -> None:
    group = parser.add_argument_group("what to collect")
    _add(group, "--query", help='search keywords, e.g. "brain MRI" (PMC query syntax works with --source pmc)')
    _add(
        group,
        "--source",
        choices=("pmc", "openi"),
        default="pmc",
        help="pmc: E-utilities + PMC OA bucket (default); openi: the NLM Open-i image search API",
    )
    _add(
        group,
        "--license",
        choices=LICENSE_CHOICES,
        default="any",
        help="any: every open-access licence, recorded per record (default); cc: Creative Commons only; "
        "commercial: licences that allow commercial reuse (CC BY, CC BY-SA, CC BY-ND, CC0)",
    )
    _add(
        group,
        "--keep_retracted",
        action="store_true",
        help="keep figures of retracted articles (pmc; default: skipped and counted, never training data)",
    )
    _add(group, "--openi_collection", default="pmc", help="Open-i 'coll' (default pmc)")
    _add(group, "--openi_image_type", default="", help="Open-i 'it' image-type filter, e.g. xg (no graphics)")
    _add(group, "--openi_article_type", default="", help="Open-i 'at' article-type filter, e.g. cr (case reports)")
    if local:
        _add(
            group,
            "--from_local",
            metavar="DIR",
            type=Path,
            default=None,
            help="build the lists from already downloaded OA XML + images under DIR instead of searching",
        )


def add_common_arguments(parser: argparse.ArgumentParser, *, out_required: bool = True) -> None:
    _add(parser, "--out", type=Path, required=out_required, help="output folder (manifest, images, lists)")
    _add(
        parser,
        "--num",
        type=int,
        default=None,
        help="figure-caption pairs to collect (0 = no limit); default: what this folder was started with, else 1000",
    )
    _add(parser, "--min_words", type=int, default=3, help="drop captions shorter than this many words (default 3)")
    _add(
        parser,
        "--workers",
        type=int,
        default=8,
        help="concurrent download threads, all within the rate limits (default 8)",
    )
    polite = parser.add_argument_group("polite access (NCBI rules: 3 requests/s, 10 with an API key)")
    _add(polite, "--email", default=os.environ.get("NCBI_EMAIL", ""), help="your e-mail, sent to NCBI (env NCBI_EMAIL)")
    _add(polite, "--api_key", default=os.environ.get("NCBI_API_KEY", ""), help="NCBI API key (env NCBI_API_KEY)")
    _add(polite, "--ncbi_rate", type=float, default=None, help="NCBI requests/s (default 3, or 10 with --api_key)")
    _add(polite, "--openi_rate", type=float, default=2.0, help="Open-i requests/s (default 2)")
    _add(polite, "--bucket_rate", type=float, default=20.0, help="PMC OA bucket (AWS S3) requests/s (default 20)")
    _add(polite, "--timeout", type=float, default=30.0, help="read timeout per request, s (default 30)")
    _add(polite, "--retries", type=int, default=4, help="retries per request after the first try (default 4)")
    _add(polite, "--backoff", type=float, default=1.0, help="first retry delay, s; doubles each retry (default 1)")
    _add(
        polite,
        "--max_refusals",
        type=int,
        default=8,
        help="stop after this many HTTP 429/503 refusals in a row (default 8)",
    )
    images = parser.add_argument_group("image checks")
    _add(images, "--min_side", type=int, default=64, help="smallest accepted width/height in px (default 64)")
    _add(images, "--max_pixels", type=int, default=ImageLimits().max_pixels, help="largest accepted width*height")
    _add(images, "--max_bytes", type=int, default=ImageLimits().max_bytes, help="largest accepted file size")
    urls = parser.add_argument_group("service addresses (tests point them at a local server)")
    _add(urls, "--eutils_url", default=DEFAULT_EUTILS_URL)
    _add(urls, "--openi_url", default=DEFAULT_OPENI_URL)
    _add(urls, "--bucket_url", default=DEFAULT_BUCKET_URL)
    _add(urls, "--oa_service_url", default=DEFAULT_OA_SERVICE_URL)
    _add(urls, "--ftp_url", default=DEFAULT_FTP_URL)
    _add(
        urls,
        "--no_fallback",
        action="store_true",
        help="never try the legacy OA-package route (oa.fcgi + FTP packages; NCBI removed those files in August "
        "2026, so by default it is probed once and used only if it works)",
    )
    _add(
        polite,
        "--max_failures",
        type=int,
        default=50,
        help="stop when this many downloads in a row fail for network reasons (default 50)",
    )
    tuning = parser.add_argument_group("paging")
    _add(tuning, "--search_page", type=int, default=1000, help="esearch ids per request (default 1000, max 10000)")
    _add(tuning, "--fetch_batch", type=int, default=20, help="articles per efetch request (default 20)")
    _add(tuning, "--openi_page", type=int, default=30, help="Open-i items per request (default 30)")
    _add(parser, "--no_progress", action="store_true", help="no progress bar")
    _add(parser, "--quiet", action="store_true", help="warnings and errors only")


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("lists")
    _add(group, "--no_split", action="store_true", help="skip the subfigure split step; lists use whole figures")
    _add(
        group,
        "--split_ratio",
        type=float,
        nargs=3,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="retrieval split by article (default 0.8 0.1 0.1)",
    )
    _add(group, "--seed", type=int, default=0, help="seed of the article shuffle for the split (default 0)")


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The all-in-one parser and one parser per step."""
    doc = __doc__ or ""
    main = argparse.ArgumentParser(
        prog="scrape.py",
        description=doc.split("\n\n")[0],
        epilog="steps: " + ", ".join(STEPS) + " (run `scrape.py STEP -h`)",
    )
    add_job_arguments(main, local=True)
    add_common_arguments(main)
    add_list_arguments(main)
    _add(
        main,
        "--split_workers",
        type=int,
        default=None,
        help="processes for the split step (panel detection + OCR are CPU work; default: one per CPU core, at most 8)",
    )
    steps: dict[str, argparse.ArgumentParser] = {}
    for name, help_text in (
        ("search", "find articles (pmc) or figures (openi) for --query"),
        ("fetch", "download article XML and extract figures (pmc)"),
        ("download", "download and verify figure images"),
        ("clean", "write figures.json: cleaned captions, --min_words"),
        ("lists", "write pretrain.json and retrieval_{train,val,test}.json"),
    ):
        parser = argparse.ArgumentParser(prog=f"scrape.py {name}", description=help_text)
        if name == "search":
            add_job_arguments(parser, local=True)
        add_common_arguments(parser)
        if name == "lists":
            add_list_arguments(parser)
        steps[name] = parser
    steps["split"] = _split_parser()
    figures = argparse.ArgumentParser(
        prog="scrape.py figures", description="print the figures of a JATS XML file as JSON lines"
    )
    figures.add_argument(
        "xml", type=Path, nargs="+", help="article XML file(s) (.xml / .nxml, efetch output works too)"
    )
    steps["figures"] = figures
    return main, steps


def _split_parser() -> argparse.ArgumentParser:
    """Same arguments and behaviour as ``python -m data.subfigure`` (issue 5's CLI)."""
    parser = argparse.ArgumentParser(prog="scrape.py split", description="split compound figures into panels")
    try:
        from data.subfigure import cli as subfigure_cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("data.subfigure", "data.subfigure.cli"):
            raise
        parser.set_defaults(_split_run=None)
        return parser
    subfigure_cli.add_arguments(parser)
    parser.set_defaults(_split_run=subfigure_cli.run)
    return parser


def config_from_args(args: argparse.Namespace) -> ScrapeConfig:
    local_dir = getattr(args, "from_local", None)
    return ScrapeConfig(
        out=args.out,
        source="local" if local_dir else getattr(args, "source", "pmc"),
        query=getattr(args, "query", None) or "",
        local_dir=local_dir,
        num=1000 if args.num is None else args.num,
        license=getattr(args, "license", "any"),
        min_words=args.min_words,
        workers=args.workers,
        email=args.email,
        api_key=args.api_key,
        eutils_url=args.eutils_url,
        openi_url=args.openi_url,
        bucket_url=args.bucket_url,
        oa_service_url=args.oa_service_url,
        ftp_url=args.ftp_url,
        ncbi_rate=args.ncbi_rate,
        openi_rate=args.openi_rate,
        bucket_rate=args.bucket_rate,
        http=HttpSettings(
            read_timeout=args.timeout,
            retries=args.retries,
            backoff_base=args.backoff,
            backoff_max=max(60.0, args.backoff),
            max_refusals=args.max_refusals,
            user_agent=_user_agent(args.email),
        ),
        limits=ImageLimits(max_bytes=args.max_bytes, max_pixels=args.max_pixels, min_side=args.min_side),
        search_page=min(args.search_page, 10000),
        fetch_batch=args.fetch_batch,
        openi_page=args.openi_page,
        openi_collection=getattr(args, "openi_collection", "pmc"),
        openi_image_type=getattr(args, "openi_image_type", ""),
        openi_article_type=getattr(args, "openi_article_type", ""),
        fallback=not args.no_fallback,
        keep_retracted=getattr(args, "keep_retracted", False),
        max_failures_in_a_row=args.max_failures,
        split=not getattr(args, "no_split", False),
        split_workers=getattr(args, "split_workers", None),
        split_ratios=tuple(getattr(args, "split_ratio", (0.8, 0.1, 0.1))),
        seed=getattr(args, "seed", 0),
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def _user_agent(email: str) -> str:
    agent = HttpSettings().user_agent
    return f"{agent[:-1]}; mailto:{email})" if email else agent


def print_figures(paths: list[Path]) -> int:
    """``scrape.py figures``: one JSON line per figure of each file."""
    status = 0
    for path in paths:
        try:
            root = parse_xml(path.read_bytes(), str(path))
        except (OSError, JatsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        articles = iter_articles(root)
        if not articles:
            print(f"error: {path}: no <article> element", file=sys.stderr)
            status = EXIT_BAD_INPUT
        for article in articles:
            meta = article_meta(article)
            if not meta.has_body:
                print(f"warning: {path}: {meta.pmcid or 'article'} has no <body> (front matter only)", file=sys.stderr)
            article_id = meta.pmcid or path.stem
            for candidate in jats_candidates(meta, article_figures(article), source="file", article_id=article_id):
                candidate["file"] = str(path)
                print(json.dumps(candidate, ensure_ascii=False))
    return status


def _run_step(name: str, args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if name in ("run", "search") and config.source != "local" and not config.query:
        raise ConfigError("--query is required (or --from-local DIR)")
    if config.source == "pmc" and not config.email and name in ("run", "search", "fetch"):
        log.warning("no --email given: NCBI asks every E-utilities user for one (or set NCBI_EMAIL)")
    with ScrapeContext(config, job_required=name not in ("run", "search")) as ctx:
        # --num is remembered, so `scrape.py clean --out X` does not cut a 5000-figure run to the default.
        if args.num is None:
            config.num = ctx.manifest.get_meta("num", config.num)
        else:
            ctx.manifest.set_meta("num", config.num)
        if name == "run":
            report = run_all(ctx)
            _print_summary(report)
            return 0
        if name in ("fetch", "download"):
            ctx.manifest.retry_failed()
        try:
            if name == "search":
                step_search(ctx, config.num or 10**9)
            elif name == "fetch":
                step_fetch(ctx, config.num or 10**9)
            elif name == "download":
                step_download(ctx, config.num)
            elif name == "clean":
                step_clean(ctx, config.num)
            elif name == "lists":
                step_lists(ctx)
        finally:
            report = write_report(ctx, name)
        _print_summary(report)
    return 0


def _print_summary(report: dict[str, Any]) -> None:
    figures = report["figures"]
    skipped = ", ".join(f"{k}={v}" for k, v in figures["skipped"].items()) or "none"
    print(
        f"[{report['status']}] articles found {report['articles']['found']}, figures found {figures['found']}, "
        f"downloaded {figures['downloaded']}, pending {figures['pending']}; skipped: {skipped}",
        file=sys.stderr,
    )
    routes = "; ".join(
        f"{name}: {r['articles']} articles, {r['figures']} figures" + (f" ({r['about']})" if r.get("about") else "")
        for name, r in report.get("routes", {}).items()
    )
    if routes:
        print(f"routes: {routes}", file=sys.stderr)
    excluded = report["articles"].get("skipped_at_download") or {}
    if excluded:
        print("articles skipped at download: " + ", ".join(f"{k}={v}" for k, v in excluded.items()), file=sys.stderr)
    split = report.get("split")
    if isinstance(split, dict) and all(k in split for k in ("figures", "split", "panels", "whole")):
        split_skips = ", ".join(f"{k}={v}" for k, v in split.get("skipped", {}).items()) or "none"
        print(
            f"split: {split['figures']} figures, {split['split']} split into {split['panels']} panels, "
            f"{split['whole']} kept whole ({split.get('not_compound', 0)} not compound, "
            f"{split.get('unmatched', 0)} unmatched); "
            f"skipped: {split_skips}",
            file=sys.stderr,
        )
    if report.get("lists"):
        print(f"lists: {report['lists']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    main_parser, steps = build_parsers()
    name = argv[0] if argv and argv[0] in steps else "run"
    parser = steps.get(name, main_parser)
    if name == "split" and parser.get_default("_split_run") is None:
        print(
            "error: the split step needs the subfigure splitter (package data.subfigure), which is not in this "
            "checkout; build the lists from whole figures with `scrape.py lists --no_split`",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv[1:] if name != "run" else argv)
    if name == "figures":
        return print_figures(args.xml)
    if name == "split":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        return int(args._split_run(args) or 0)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return _run_step(name, args)
    except (ConfigError, ManifestError, QueryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RefusedError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except FetchError as exc:
        print(f"stopped: {exc}. Everything so far is saved; rerun the same command to resume.", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("interrupted: everything so far is saved; rerun the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
