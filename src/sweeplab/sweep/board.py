"""The sweep's view of its cells: a live rich table on a terminal, one plain line per change otherwise.

Progress of a running cell is read from the store (the worker writes metrics there), never from
the worker process itself.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from sweeplab.store import Store
from sweeplab.sweep.expand import Cell
from sweeplab.sweep.worker import Outcome
from sweeplab.terminal import printable

STYLES = {"queued": "dim", "running": "cyan", "submitted": "cyan", "finished": "green", "imported": "green",
          "diverged": "yellow", "interrupted": "magenta", "failed": "red"}
REFRESH_S = 1.0  # how often running cells' progress is read from the store
ACTIVE = ("queued", "running", "submitted")  # cells that have not ended


@dataclass
class CellState:
    cell: Cell
    status: str = "queued"
    run_id: str | None = None
    started: float | None = None
    wall_s: float | None = None
    error: str | None = None
    progress: str = ""
    headline: float | None = None  # the table's first column, once the run has a summary
    skipped: bool = False  # done (or failed) before this sweep started: not run again


class Board:
    def __init__(self, cells: list[Cell], store: Store, headline: tuple[str, str], *, interactive: bool | None = None):
        self.states = [CellState(c) for c in cells]
        self.store = store
        self.headline_title, self.headline_metric = headline
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.console = Console(stderr=True, soft_wrap=True)
        self._live: Live | None = None
        self._last_poll = 0.0

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Board:
        if self.interactive:
            self._live = Live(self.table(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.table())
            self._live.stop()

    # -- events -----------------------------------------------------------------------------------
    def skipped(self, index: int, status: str, run_id: str, error: str | None = None) -> None:
        state = self.states[index]
        state.status, state.run_id, state.error, state.skipped = status, run_id, error, True
        self._read_summary(state)
        self._line(index, f"{status} (stored)")

    def started(self, index: int, status: str = "running") -> None:
        state = self.states[index]
        state.status, state.started = status, time.time()
        self._line(index, status)

    def finished(self, outcome: Outcome) -> None:
        state = self.states[outcome.index]
        state.status, state.run_id, state.error = outcome.status, outcome.run_id, outcome.error
        state.wall_s = outcome.wall_s
        state.progress = ""
        self._read_summary(state)
        self._line(outcome.index, outcome.status)

    def tick(self) -> None:
        """Poll the store for the progress of running cells (at most once a second) and redraw."""
        if time.time() - self._last_poll < REFRESH_S:
            return
        self._last_poll = time.time()
        running = [s for s in self.states if s.status in ("running", "submitted")]
        for state in running:
            if state.run_id is None:
                row = self.store.find_by_key(state.cell.key)
                state.run_id = row.id if row else None
        progress = self.store.progress([s.run_id for s in running if s.run_id])
        for state in running:
            if state.run_id in progress:
                state.progress = _progress_text(state.cell, *progress[state.run_id])
        if self._live is not None:
            self._live.update(self.table())

    # -- rendering --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for state in self.states:
            out[state.status] = out.get(state.status, 0) + 1
        return out

    def table(self) -> Table:
        table = Table("#", "cell", "seed", "status", "progress", "time", escape(self.headline_title),
                      title=", ".join(f"{n} {s}" for s, n in self.counts().items()), title_justify="left")
        for i, state in enumerate(self.states, 1):
            style = STYLES.get(state.status, "")
            status = state.status + (" (stored)" if state.skipped else "")
            table.add_row(str(i), escape(state.cell.label), str(state.cell.seed),  # labels are the user's text
                          f"[{style}]{status}[/]", state.progress, _duration(self._elapsed(state)),
                          _number(state.headline))
        return table

    def _elapsed(self, state: CellState) -> float | None:
        if state.wall_s is not None:
            return state.wall_s
        return time.time() - state.started if state.started and state.status in ("running", "submitted") else None

    def _line(self, index: int, status: str) -> None:
        """Plain mode: one line per change, in the spirit of pytorch/examples' logs."""
        if self.interactive:
            if self._live is not None:
                self._live.update(self.table())
            return
        state = self.states[index]
        # The counter is of cells that have ended so far: it never goes back, whatever order cells run in.
        ended = sum(1 for s in self.states if s.status not in ACTIVE)
        parts = [f"[{ended:3d}/{len(self.states)}] {status:<11} {state.cell.label} seed {state.cell.seed}"]
        if state.wall_s is not None:
            parts.append(f"{state.wall_s:.1f}s")
        if state.headline is not None:
            parts.append(f"{self.headline_title} {_number(state.headline)}")
        if state.error:
            parts.append(state.error)
        print(printable(" | ".join(parts)), file=sys.stderr, flush=True)

    def _read_summary(self, state: CellState) -> None:
        if state.run_id:
            state.headline = self.store.summary(state.run_id).get(self.headline_metric)


def _progress_text(cell: Cell, epoch: int, step: int) -> str:
    train = cell.cfg.train
    if train.max_steps:
        return f"step {step}/{train.max_steps}"
    return f"epoch {epoch}/{train.epochs}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
