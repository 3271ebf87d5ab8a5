"""Skipped-record accounting: counts by reason plus the first offenders, summed over ranks.

A long run skips a bad record (missing or truncated image, empty caption) instead
of dying; this is where those skips are counted so the log can say how many, why
and where. Plain types only, so the state goes into checkpoints loaded with
``weights_only=True``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from engine.distributed import all_gather_object

__all__ = ["SkipCounter"]


class SkipCounter:
    """Counts skipped records by reason and keeps the first few offenders.

    ``where`` is an image path for run-time skips and ``file[index]`` for
    records dropped at load. Plain types only, so its state goes into
    checkpoints loaded with ``weights_only=True``.
    """

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: list[tuple[str, str]] = []

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((reason, where))

    def update(self, records: Iterable[Sequence[str]]) -> None:
        """Add ``(reason, where)`` pairs, e.g. a batch's ``batch["skipped"]``."""
        for reason, where in records:
            self.add(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()
        self.examples.clear()

    def merged_across_ranks(self) -> "SkipCounter":
        """Sum of every rank's counter (a collective: call on all ranks; identity without DDP)."""
        merged = SkipCounter(self.max_examples)
        for state in all_gather_object(self.state_dict()):
            other = SkipCounter.from_state_dict(state)
            merged.counts.update(other.counts)
            for reason, where in other.examples:
                if len(merged.examples) < merged.max_examples:
                    merged.examples.append((reason, where))
        return merged

    def summary(self, what: str = "samples") -> str:
        """One line for logs: ``3 samples skipped (missing 2, truncated 1); first: ...``."""
        if not self.total:
            return f"0 {what} skipped"
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items()))
        first = "; ".join(f"{where} [{reason}]" for reason, where in self.examples)
        return f"{self.total} {what} skipped ({by_reason}); first: {first}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "examples": [list(pair) for pair in self.examples],
            "max_examples": self.max_examples,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "SkipCounter":
        counter = cls(int(state.get("max_examples", 5)))
        counter.counts.update({str(k): int(v) for k, v in state["counts"].items()})
        counter.examples = [(str(r), str(w)) for r, w in state["examples"]]
        return counter
