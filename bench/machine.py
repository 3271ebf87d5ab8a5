"""Machine facts the benchmark reports print next to their figures."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_rate(fn, n: int, repeats: int) -> float:
    """Items per second of ``fn`` (which handles ``n`` items), median of ``repeats`` timed runs."""
    import statistics
    import time

    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def publish(text: str, out: str | Path) -> None:
    """Print a benchmark report and write it (atomically) to ``out`` under docs/benchmarks/."""
    from utils.atomic import atomic_write_text

    print(text)
    atomic_write_text(out, text)
    print(f"written to {out}")
