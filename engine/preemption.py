"""SIGTERM / SIGINT become a request to stop, which the training loop honours at a step boundary.

SLURM (preemption, ``scancel``, the time limit) and a terminal's Ctrl-C signal
the whole process group. The handlers here only set a flag; the loop finishes
its current optimizer step, agrees with the other ranks at its next check,
writes a complete checkpoint and returns normally (exit code 0). DataLoader
workers ignore these signals (``data.loader.ignore_stop_signals``) so they do
not die under the loop. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """Signal handlers that only record the request; use as a context manager around the run."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
