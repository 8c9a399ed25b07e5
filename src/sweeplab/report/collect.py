"""Read an experiment's runs from the store, grouped into the cells of its table (one run per seed)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sweeplab.config import flatten
from sweeplab.report.spec import ReportSpec, cell_key
from sweeplab.store import RunRow, Store
from sweeplab.tasks import capable

DONE = ("finished", "imported")  # statuses whose numbers are complete


@dataclass(frozen=True)
class Point:
    epoch: int
    step: int
    value: float  # NaN where the store holds NULL (a diverged run's NaN/inf)


@dataclass
class RunData:
    """One stored run with its metric series and summary, as the report reads it."""

    row: RunRow
    series: dict[str, list[Point]]  # `split/name` -> points in logging order
    summary: dict[str, float]
    run_dir: Path

    @property
    def seed(self) -> Any:
        return self.row.config.get("seed")

    @property
    def done(self) -> bool:
        return self.row.status in DONE

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        try:
            return flatten(self.row.config)
        except (KeyError, AttributeError, TypeError):  # an imported run may hold a partial config
            return dict(self.row.config)

    @property
    def step_based(self) -> bool:
        """Tasks on generated data count optimizer steps; their "epoch" is `train.eval_every` steps."""
        return capable(self.row.task, "steps")

    def progress(self) -> str:
        """How far the run got, against its plan: `epoch 3 of 40` or `step 1,200 of 10,000`."""
        unit, done, key = ("step", self.row.step, "train.max_steps") if self.step_based else \
            ("epoch", self.row.epoch, "train.epochs")
        planned = self.flat_config.get(key)
        of = f" of {planned:,}" if isinstance(planned, int) and planned > 0 else ""
        return f"{unit} {done:,}{of}"

    def divergence(self) -> Point | None:
        """The first non-finite training loss: where the run diverged."""
        points = [p for key in ("train/loss", "step/loss") for p in self.series.get(key, [])]
        bad = [p for p in points if not math.isfinite(p.value)]
        return min(bad, key=lambda p: (p.step, p.epoch)) if bad else None


@dataclass
class CellData:
    """A row of the table: the runs of one cell, newest per seed, ordered by seed."""

    label: str
    runs: list[RunData]
    expected: bool = True  # False: stored under the sweep but not in the experiment's grid
    extra: dict[str, Any] = field(default_factory=dict)


def collect(spec: ReportSpec, store: Store) -> list[CellData]:
    """Every expected cell (with or without runs), then any other cell stored under the sweep."""
    groups: dict[tuple[str, ...], list[RunRow]] = {}
    labels: dict[tuple[str, ...], str] = {}
    for row in store.list_runs(sweep=spec.name):  # oldest first
        label = row.cell or row.name
        groups.setdefault(cell_key(label), []).append(row)
        labels.setdefault(cell_key(label), label)
    listed = {row.id for rows in groups.values() for row in rows}
    for key, label in spec.key_cells.items():  # the same run made by `sweeplab run` or another sweep fills the cell
        row = store.find_by_key(key)
        if row and row.id not in listed:
            groups.setdefault(cell_key(label), []).append(row)
    keys = spec.run_keys
    cells = [_cell(label, groups.pop(cell_key(label), []), store, keys) for label in spec.cells]
    cells += [_cell(labels[key], rows, store, keys, expected=False) for key, rows in groups.items()]
    for cell in cells:
        cell.extra["adopted"] = [run for run in cell.runs if run.row.sweep != spec.name]
    return cells


def origin(row: RunRow) -> str:
    """Where a run that fills a cell of another sweep came from, in words."""
    return f"sweep {row.sweep!r}" if row.sweep else f"`sweeplab run` (run {row.name!r})"


def _cell(label: str, rows: list[RunRow], store: Store, keys: set[str], expected: bool = True) -> CellData:
    """One run per seed: the run the last sweep asked for (its key), else the newest of that seed."""
    chosen: dict[str, RunRow] = {}
    for row in rows:  # oldest first: a later run of the same seed (another scale, a retry) replaces an earlier one
        seed = repr(row.config.get("seed"))
        if seed not in chosen or row.key in keys or chosen[seed].key not in keys:
            chosen[seed] = row
    ordered = sorted(chosen.values(), key=lambda r: (_sortable(r.config.get("seed")), r.created_at))
    cell = CellData(label, [load_run(store, row) for row in ordered], expected)
    if keys:  # a run from another scale or budget stands in for a run the last sweep has not made yet
        cell.extra["stale"] = [run for run in cell.runs if run.row.key not in keys and run.row.status != "imported"]
    return cell


def load_run(store: Store, row: RunRow) -> RunData:
    series: dict[str, list[Point]] = {}
    for m in store.metrics(row.id):
        series.setdefault(m.key, []).append(Point(m.epoch, m.step, m.value))
    return RunData(row, series, store.summary(row.id), store.run_dir(row.id, checkpoints=False))  # figures, text


def _sortable(seed: Any) -> tuple[int, Any]:
    return (0, seed) if isinstance(seed, int | float) else (1, repr(seed))
