"""Progress: a rich bar with rate and ETA on a terminal, pytorch/examples-style log lines otherwise."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sweeplab.terminal import printable

_console = Console(stderr=True)


def fmt_metrics(values: dict[str, float]) -> str:
    return " | ".join(f"{k} {_fmt(v)}" for k, v in values.items())


def _fmt(value: float) -> str:
    if value != value or abs(value) == float("inf"):
        return str(value)
    return f"{value:8.2f}" if abs(value) >= 100 else f"{value:5.4f}" if abs(value) < 1 else f"{value:5.2f}"


class EpochProgress:
    """One epoch's progress. `quiet` prints nothing (sweep workers report through the store)."""

    def __init__(self, *, epoch: int, total: int, unit: str, epoch_name: str = "epoch", quiet: bool = False):
        self.epoch, self.total, self.unit, self.epoch_name = epoch, total, unit, epoch_name
        self.interactive = not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self._bar: Progress | None = None
        if self.interactive:
            self._bar = Progress(TextColumn(f"{epoch_name} {epoch:>3}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=_console, transient=True)
            self._task = self._bar.add_task("train", total=total, info="")
            self._bar.start()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def log(self, batch: int, lr: float, ms_per_batch: float, metrics: dict[str, Any]) -> None:
        info = f"| lr {lr:.4g} | ms/batch {ms_per_batch:7.2f} | {fmt_metrics(metrics)}"
        if self._bar is not None:
            self._bar.update(self._task, info=info)
        elif not self.quiet:
            line = f"| {self.epoch_name} {self.epoch:3d} | {batch:5d}/{self.total:5d} {self.unit} {info}"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def say(message: str, quiet: bool = False) -> None:
    """One line on stderr; names and errors in it are shown with their control characters escaped."""
    if not quiet:
        print(printable(message), file=sys.stderr, flush=True)
