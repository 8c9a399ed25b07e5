"""A watchdog for runs whose steps stop advancing.

The store's heartbeat proves that a process is alive, not that it trains: a rank blocked in a collective whose
peer died, a data read hung on a dead network folder, or a deadlocked loader keep the heartbeat thread beating
and hold the run's lease forever. The trainer beats the watchdog at every step and evaluation; when no beat comes
for `$SWEEPLAB_STALL_S` seconds (default 30 minutes: longer than any evaluation or compilation of the course's
experiments), the watchdog calls its `on_stall` (which records the run as failed and resumable, and gives up
its lease) and ends the process: a thread blocked in C++ cannot be interrupted any other way.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

DEFAULT_STALL_S = 1800.0
EXIT_STALLED = 75  # EX_TEMPFAIL: try again later (the run resumes from its last checkpoint)


def stall_seconds() -> float:
    return float(os.environ.get("SWEEPLAB_STALL_S") or DEFAULT_STALL_S)


class Watchdog:
    def __init__(self, limit_s: float, on_stall: Callable[[float], None], *, exit_process: bool = True):
        self.limit_s, self.on_stall, self.exit_process = limit_s, on_stall, exit_process
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def off(cls) -> Watchdog:
        return cls(float("inf"), lambda idle: None, exit_process=False)

    def beat(self) -> None:
        """Progress was made (a step, an evaluation): one float written, nothing more."""
        self.last = time.monotonic()

    def __enter__(self) -> Watchdog:
        self.beat()
        if self.limit_s != float("inf"):
            self._thread = threading.Thread(target=self._watch, daemon=True, name="sweeplab-watchdog")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(self.limit_s / 4, 10.0)):
            idle = time.monotonic() - self.last
            if idle >= self.limit_s:
                self.on_stall(idle)
                if self.exit_process:
                    os._exit(EXIT_STALLED)
                return
