"""One number per run and per cell: aggregates of a metric series, seeds as mean ± std (n), formatting.

Where a number cannot be given, the reason is given instead (not run, running, failed, diverged...):
nothing in the report is blank without saying why.
"""
from __future__ import annotations

import contextvars
import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sweeplab.report.collect import CellData, Point, RunData
from sweeplab.report.facts import convergence

_DIRECTIONS: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("directions", default=None)


def direction(metric: str) -> int:
    """+1 if higher is better, -1 if lower is better, 0 if undeclared (params, epochs, a function's own metric
    without a column's `better:`): what `declared_directions` holds for the report being built, never a guess
    from the name. A full key (`test/acc`) is looked up first, then its name (`acc`)."""
    table = _DIRECTIONS.get() or {}
    return table.get(metric, table.get(metric.split("/")[-1], 0))


@contextmanager
def declared_directions(directions: dict[str, int]) -> Iterator[None]:
    """The directions `direction` reads while one experiment's report is built."""
    token = _DIRECTIONS.set(directions)
    try:
        yield
    finally:
        _DIRECTIONS.reset(token)


@dataclass(frozen=True)
class RunValue:
    value: float | None  # None: no number; `reason` says why
    reason: str | None = None


def run_value(run: RunData, metric: str, aggregate: str = "final", epoch: int | None = None,
              threshold: float | None = None) -> RunValue:
    """A run's `metric` reduced by `aggregate`; a summary value when the run has no such series.
    Convergence columns come from `facts.convergence` (with the experiment's `threshold`), as the analysis does."""
    if metric in CONVERGENCE_KEYS:
        return convergence_value(run, threshold)
    points = run.series.get(metric)
    if not points:
        if metric in run.summary and math.isfinite(run.summary[metric]):
            return RunValue(run.summary[metric])
        return RunValue(None, missing_reason(run, metric))
    if aggregate == "at-epoch":
        at = [p for p in points if p.epoch == epoch]
        if not at:
            return RunValue(None, f"no epoch {epoch} (ran {max(p.epoch for p in points)})")
        points = at[-1:]
    if aggregate in ("final", "at-epoch"):
        last = points[-1].value
        return RunValue(last) if math.isfinite(last) else RunValue(None, status_reason(run))
    return _reduce(run, points, metric, aggregate)


def _reduce(run: RunData, points: list[Point], metric: str, aggregate: str) -> RunValue:
    finite = [p.value for p in points if math.isfinite(p.value)]
    if not finite:
        return RunValue(None, status_reason(run))
    if aggregate == "best":
        aggregate = "max" if direction(metric) > 0 else "min"
    reduce = {"min": min, "max": max, "mean": statistics.fmean}[aggregate]
    return RunValue(reduce(finite))


CONVERGENCE_KEYS = ("convergence_step", "convergence_epoch")


def convergence_value(run: RunData, threshold: float | None) -> RunValue:
    found = convergence(run, threshold)
    if found is None:
        return RunValue(None, status_reason(run) if not run.done else "no accuracy to judge convergence on")
    if found.relative:  # only "settled near its own best": not a convergence step
        return RunValue(None, f"no convergence threshold set (settles at {found.unit} {found.at:,.0f}, "
                              f"{found.detail})")
    return RunValue(found.at) if found.at is not None else RunValue(None, found.detail)


def missing_reason(run: RunData, metric: str) -> str:
    if not run.done:
        return status_reason(run)
    if metric.startswith("convergence") and run.summary.get("converged") == 0:
        return f"not converged by {run.progress()}"  # the task stores converged = 0 and no step
    return f"{metric} not recorded"


def status_reason(run: RunData) -> str:
    """Why a run has no (final) number, in a few words."""
    row = run.row
    progress = run.progress()
    if row.status == "running":
        return f"running ({progress} stored)"
    if row.status == "interrupted":
        return f"interrupted after {progress}"
    if row.status == "failed":
        return f"failed: {short(row.error or 'no error stored')}"
    if row.status == "diverged":
        where = run.divergence()
        return f"diverged at epoch {where.epoch}" if where else "diverged"
    if row.status in ("finished", "imported"):  # the store keeps inf and NaN as NULL
        return "overflow (not finite)"
    return row.status


def short(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


BUILT = ("params",)  # what a run has from its first step, however it ends: a count is never "(diverged)"


@dataclass(frozen=True)
class CellValue:
    """A cell's number over its seeds, or why there is none."""

    mean: float | None
    std: float | None  # None with fewer than two values
    n: int  # runs that gave a value
    expected: int  # seeds the experiment asks for (or the runs stored, if more)
    reasons: tuple[str, ...]  # why runs gave no value; ("not run: ...",) for a cell without runs
    tags: tuple[str, ...]  # statuses of unfinished runs whose (partial) numbers are in the mean
    unlearned: int = 0  # ended runs in the mean that scored no better than guessing (`learned`)
    count: bool = False  # a count (steps, epochs, params: a summary key of whole numbers), printed as one

    @property
    def ended(self) -> bool:
        """A value every run of which ended (none running or interrupted, whose partial numbers are tagged)."""
        return self.has_value and not self.tags

    @property
    def has_value(self) -> bool:
        return self.mean is not None


def ended_value(cv: CellValue) -> bool:
    """A value that may be bold, or win: every run in its mean ended finished (none diverged, none still
    running or interrupted, whose partial numbers are tagged) and learned something."""
    return cv.ended and not cv.unlearned


def chance(run: RunData, metric: str) -> float | None:
    """What guessing scores on `metric`, as the run's task declared it (`Task.chance`, kept in the summary)."""
    return run.summary.get(f"chance/{metric.split('/')[-1]}")


def learned(run: RunData, metric: str, value: float) -> bool:
    """False when `value` is no better than guessing: a perplexity at or above the vocabulary's size, an accuracy
    at or below one over the classes. Without a declared chance or direction, nothing is claimed (True)."""
    guess, sign = chance(run, metric), direction(metric)
    return guess is None or not sign or value * sign > guess * sign


def cell_value(cell: CellData, metric: str, aggregate: str = "final", epoch: int | None = None,
               expected: int = 1, threshold: float | None = None) -> CellValue:
    values, reasons, tags, unlearned = [], [], [], 0
    for run in cell.runs:
        got = run_value(run, metric, aggregate, epoch, threshold)
        if got.value is None:
            reasons.append(got.reason or "no value")
            continue
        values.append(got.value)
        if not run.done and metric not in BUILT:
            tags.append(run.row.status)
        elif not learned(run, metric, got.value):
            unlearned += 1
    if not cell.runs:
        reasons.append(cell.extra.get("not_run", "not run"))
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    return CellValue(mean, std, len(values), max(expected, len(cell.runs)), tuple(dict.fromkeys(reasons)),
                     tuple(dict.fromkeys(tags)), unlearned, is_count(metric, values))


# ---------------------------------------------------------------------------------- formatting
def fmt(value: float, like: float | None = None) -> str:
    """A number for a table: integers with thousands separators, others with sensible digits.
    `like`: format with the decimals `like` would get (a std next to its mean), never as an integer."""
    ref = abs(value if like is None else like)
    if abs(value) >= 1e12:  # a diverged perplexity: its digits say nothing, its size does
        return f"{value:.3g}"
    if like is None and value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if ref >= 1000:
        return f"{value:,.0f}"
    if ref >= 100:
        return f"{value:.1f}"
    if ref >= 10:
        return f"{value:.2f}"
    if ref >= 1e-3 or ref == 0:  # 0.9997 and 1.0000 alike: an accuracy column never changes its digits at 1
        return f"{value:.4f}"
    return f"{value:.3g}"


def shown(value: float) -> float:
    """The number as the report prints it in sentences and tables (`fmt_value`'s digits). Ties, trends and bold
    compare these: two numbers printed alike are never called different, nor is one bold beside the other."""
    return float(fmt_value(value).replace(",", ""))


def readable(metric: str) -> str:
    """A metric key as words, where no column titles it: `valid/digit_acc` reads `Valid digit acc`."""
    words = metric.replace("/", " ").replace("_", " ")
    return words[:1].upper() + words[1:]


def plural(n: int, noun: str) -> str:
    """`1 cell`, `2 cells`: a count and its noun, agreeing."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def fmt_mean(cv: CellValue, integral: bool = False) -> str:
    """`mean ± std` (the std in the mean's decimals), or the single value; `integral`: a count (params)."""
    if not cv.std:  # one seed, or identical over seeds (a parameter count): no spread to show
        return fmt_count(cv.mean) if integral else fmt_value(cv.mean)
    if integral:  # counts over seeds: a tenth is precision enough
        return f"{cv.mean:,.1f} ± {cv.std:,.1f}"
    return f"{fmt_value(cv.mean)} ± {fmt(cv.std, like=cv.mean)}"


def fmt_cell(cv: CellValue, integral: bool = False) -> str:
    """`mean ± std (n=k)` with several seeds, the value alone with one; unfinished runs tagged;
    without a value, the reason."""
    if cv.mean is None:
        return "; ".join(cv.reasons) or "no value"
    extras = []
    if cv.expected > 1:
        extras.append(f"n={cv.n}" if cv.n == cv.expected else f"n={cv.n} of {cv.expected}")
    extras += cv.tags
    if cv.unlearned:
        extras.append("did not learn" if cv.unlearned == cv.n else f"{cv.unlearned} of {cv.n} did not learn")
    return fmt_mean(cv, integral) + (f" ({'; '.join(extras)})" if extras else "")


def is_count(metric: str, values: list[float]) -> bool:
    """A summary key (params, epochs, convergence_step), not a `split/name` measurement, of whole numbers."""
    return "/" not in metric and all(v == int(v) for v in values)


def integral(metric: str, values: list[CellValue]) -> bool:
    """A column of counts: a summary key (params, epochs, convergence_step), not a `split/name` measurement,
    with every value a whole number."""
    return is_count(metric, [v.mean for v in values if v.mean is not None])


def fmt_count(value: float) -> str:
    """A step, epoch or count: whole numbers as such, a mean over seeds with one decimal."""
    return f"{int(value):,}" if value == int(value) else f"{value:,.1f}"


def fmt_value(value: float) -> str:
    """A metric value in a sentence: always with decimals (4.000, not 4)."""
    return fmt(value, like=value)


# ------------------------------------------------------------------------------ versus a setting
def versus_points(cells: list[CellData], x_key: str, metric: str,
                  aggregate: str = "final") -> dict[str, dict[Any, list[float]]]:
    """{line: {x: [one value per run]}}: a line per value of the other axes (the label without `x_key`)."""
    groups: dict[str, dict[Any, list[float]]] = {}
    for cell in cells:
        line = label_without(cell.label, x_key)
        for run in cell.runs:
            x = run.flat_config.get(x_key, label_value(cell.label, x_key))
            got = run_value(run, metric, aggregate)
            if x is None or got.value is None:
                continue
            x = x if isinstance(x, int | float | str) else str(x)
            groups.setdefault(line, {}).setdefault(x, []).append(got.value)
    return groups


def label_without(label: str, key: str) -> str:
    return ",".join(part for part in label.split(",") if part.partition("=")[0].strip() != key)


def label_value(label: str, key: str) -> str | None:
    for part in label.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None
