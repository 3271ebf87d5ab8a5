"""Does the scraper keep to its request-rate limits, and does it use them?

Runs against the local emulator of E-utilities / the PMC OA bucket that the
tests use (tests/scrape_fakes.py; 127.0.0.1 only, nothing leaves the machine)
and measures request arrival times on the server side.

1. Client level: 8 threads share one limiter and send as fast as it lets them.
2. Pipeline level: the real all-in-one run (search, efetch, bucket metadata,
   image downloads) with NCBI at 3 requests/s and the bucket at 10/s.

Reported per row: configured limit, requests, achieved mean rate
((n - 1) / (last - first arrival)), the most requests seen in any 1-second
window, and achieved / limit. Target: achieved <= limit and >= 90 % of it;
also no 1-second window with more than ``limit`` requests (NCBI counts per second).

    python bench/bench_scrape_rate.py            # prints the table, writes docs/benchmarks/scrape_rate.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.machine import publish  # noqa: E402
from data.scraper.http import HttpClient, HttpSettings, RateLimiter  # noqa: E402
from data.scraper.pipeline import ScrapeContext, run_all  # noqa: E402
from scrape_fakes import FakeServices, fast_config, simple_world  # noqa: E402


def rate_stats(times: list[float]) -> tuple[float, int]:
    """Mean rate over the span, and the largest count in any 1-second window [t, t + 1)."""
    times = sorted(times)
    if len(times) < 2:
        return float("nan"), len(times)
    mean = (len(times) - 1) / (times[-1] - times[0])
    peak, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        peak = max(peak, j - i)
    return mean, peak


def client_level(limit: float, seconds: float, threads: int = 8) -> dict:
    n = max(int(limit * seconds), 20)
    with FakeServices() as services:
        services.bucket_files["bench/x.bin"] = (b"x" * 1024, "application/octet-stream")
        client = HttpClient({"bucket": RateLimiter(limit)}, HttpSettings(read_timeout=10))
        url = f"{services.url}/bucket/bench/x.bin"
        counter = iter(range(n))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                client.fetch(url, service="bucket")

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        times = [r.t for r in services.requests_to("/bucket/bench/")]
    mean, peak = rate_stats(times)
    return {"where": f"client, {threads} threads", "limit": limit, "n": len(times), "mean": mean, "peak": peak}


def pipeline_level(articles: int, figures: int, ncbi: float, bucket: float) -> list[dict]:
    with FakeServices() as services, tempfile.TemporaryDirectory() as tmp:
        simple_world(services, articles, figures)
        config = fast_config(
            Path(tmp),
            services,
            num=articles * figures,
            ncbi_rate=ncbi,
            bucket_rate=bucket,
            workers=8,
            fetch_batch=1,
            search_page=10000,
        )
        with ScrapeContext(config) as ctx:
            report = run_all(ctx)
        assert report["figures"]["downloaded"] == articles * figures, report["figures"]
        ncbi_times = [r.t for r in services.requests_to("/eutils/")]
        bucket_times = [r.t for r in services.requests_to("/bucket")]
    rows = []
    for name, limit, times in (
        ("pipeline: E-utilities", ncbi, ncbi_times),
        ("pipeline: OA bucket", bucket, bucket_times),
    ):
        mean, peak = rate_stats(times)
        rows.append({"where": name, "limit": limit, "n": len(times), "mean": mean, "peak": peak})
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| where | limit (req/s) | requests | achieved (req/s) | max in any 1 s | achieved / limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = r["mean"] / r["limit"]
        lines.append(f"| {r['where']} | {r['limit']:g} | {r['n']} | {r['mean']:.2f} | {r['peak']} | {ratio:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each client-level run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "scrape_rate.md")
    args = parser.parse_args()
    rows = [client_level(limit, args.seconds) for limit in (3.0, 10.0, 25.0)]
    rows += pipeline_level(articles=30, figures=3, ncbi=3.0, bucket=10.0)
    text = table(rows)
    print(text)
    ok = all(0.9 * r["limit"] <= r["mean"] <= r["limit"] for r in rows)
    peak_ok = all(r["peak"] <= r["limit"] for r in rows)
    print("target (achieved <= limit and >= 90 % of it):", "met" if ok else "NOT met")
    print("no 1-second window above the limit:", "met" if peak_ok else "NOT met")
    doc = (
        "# Scraper request rate\n\n"
        "Written by `python bench/bench_scrape_rate.py` against the local emulator of E-utilities and the PMC OA "
        "bucket (tests/scrape_fakes.py); arrival times are taken on the server side. Achieved = (n - 1) / "
        '(last - first arrival); "max in any 1 s" counts arrivals in every window [t, t + 1 s).\n\n'
        f"{text}\n\n"
        f"Target (achieved <= limit and >= 90 % of it): **{'met' if ok else 'NOT met'}**. "
        f"No 1-second window above the limit: **{'met' if peak_ok else 'NOT met'}**.\n\n"
        "The limiter spaces requests 1.03/limit s apart (3 % headroom, burst 1): exactly 1/limit apart, a few "
        "milliseconds of jitter put limit + 1 arrivals into one second (seen in an earlier run of this benchmark: "
        "4 in a second at 3/s), which NCBI's per-second rule does not allow. The price is the 97 % ratio.\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, Python "
        f"{platform.python_version()}; {datetime.date.today().isoformat()}. Timings on a shared machine are "
        "noisy; rates are set by the limiter, not by CPU speed.\n"
    )
    publish(doc, args.out)


if __name__ == "__main__":
    main()
