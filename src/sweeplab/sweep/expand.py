"""An experiment as cells: (label, seed) -> a resolved run config and its run key.

Resolution order of a cell's config: task defaults < base < variant < grid point < seed < scale
overrides < planner reduction (train.epochs / train.max_steps) < command-line overrides.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sweeplab.config import RunConfig, flatten, run_key
from sweeplab.errors import UserError
from sweeplab.experiment import Experiment, read_experiment
from sweeplab.registry import TASKS
from sweeplab.tasks import resolve


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a table cell's label and one of its seeds."""

    task: str
    label: str  # runs.cell: the variant name, `key=value,...` for a grid point, `NAME,key=value` for both
    seed: int
    layers: tuple[dict[str, Any], ...]  # base ... scale overrides: everything above the task defaults
    cli: dict[str, Any] = field(default_factory=dict)  # command-line overrides: applied last
    reduction: dict[str, Any] = field(default_factory=dict)  # the planner's train.epochs / train.max_steps
    note: str | None = None  # runs.note: the scale's note and the planner's reduction
    auto_device: str | None = None  # what device=auto means where the cell trains (a Ray cluster's GPUs); None: here
    cfg: RunConfig | None = None

    @property
    def key(self) -> str:
        return run_key(self.cfg)

    @property
    def ident(self) -> str:
        return f"{self.label}@{self.seed}"

    def reduced(self, reduction: dict[str, Any], note: str, where: str = "") -> Cell:
        """The same cell with fewer epochs or steps (the planner's choice)."""
        cell = replace(self, reduction=reduction, note="; ".join(n for n in (self.note, note) if n))
        return resolved(cell, where)


def pick_scale(experiment: Experiment, requested: str | None, where: str) -> str | None:
    """The scale to run: the one asked for, else `quick` when the file has it, else none."""
    if requested is None:
        return "quick" if "quick" in experiment.scales else None
    if requested not in experiment.scales:
        accepted = ", ".join(experiment.scales) or "(this file defines no scales)"
        raise UserError(f"{where}: --scale {requested!r} is not defined in the file; accepted: {accepted}")
    return requested


def expand(experiment: Experiment, scale: str | None, overrides: dict[str, Any] | None = None,
           where: str = "", auto_device: str | None = None) -> list[Cell]:
    """Every (row, seed) of the experiment, resolved; rows in table order, seeds within a row."""
    scale_spec = experiment.scales.get(scale) if scale else None
    scale_layer = dict(scale_spec.overrides) if scale_spec else {}
    note = scale_spec.note if scale_spec and scale_spec.note else None
    cells = []
    for label, row_layers in experiment.rows():
        for seed in experiment.seed_list():
            layers = (dict(experiment.base), *row_layers, {"seed": seed}, scale_layer)
            cell = Cell(experiment.task, label, seed, layers, dict(overrides or {}), note=note, auto_device=auto_device)
            cells.append(resolved(cell, where, scale))
    _check_distinct(cells, where, scale)
    return cells


def resolved(cell: Cell, where: str, scale: str | None = None) -> Cell:
    try:
        cfg = resolve(cell.task, *cell.layers, cell.reduction, cell.cli, auto_device=cell.auto_device)
    except UserError as exc:
        scale_text = f", scale {scale}" if scale else ""
        raise UserError(f"{where}: cell {cell.label} (seed {cell.seed}{scale_text}): {exc}") from None
    return replace(cell, cfg=cfg)


def check_task(experiment: Experiment, where: str) -> None:
    import sweeplab.tasks  # noqa: F401 - fills the task registry

    try:
        TASKS.get(experiment.task, key="task")
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_distinct(cells: list[Cell], where: str, scale: str | None) -> None:
    """Two cells with the same resolved config would be one run: the table could not tell them apart."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.setdefault(cell.key, cell)
        if other is not cell:
            scale_text = f" at scale {scale}" if scale else ""
            raise UserError(f"{where}: cells {other.label} and {cell.label} (seed {cell.seed}) resolve to the same "
                            f"config{scale_text}; make their overrides differ")


def load_experiment(path: str | Path, max_cells: int | None = None, max_seeds: int | None = None) -> Experiment:
    """Read and validate an experiment file and resolve every cell of every scale (sweeplab.experiment.read_experiment
    says what is read). Any problem: UserError naming file and key."""
    experiment = read_experiment(Path(path), max_cells, max_seeds)
    check_cells(experiment, where=str(path))
    return experiment


def check_cells(experiment: Experiment, where: str) -> None:
    """Resolve every cell of every scale, and check what the figures name against the resolved configs."""
    check_task(experiment, where)
    cells: list[Cell] = []
    for scale in list(experiment.scales) or [None]:
        cells = expand(experiment, scale, where=where)
    keys = set(flatten(cells[0].cfg.to_dict()))
    for i, figure in enumerate(experiment.figures):
        if figure.x and figure.x not in keys:
            raise UserError(f"{where}: figures[{i}].x: {figure.x!r} is not a config key of task "
                            f"{experiment.task}; accepted: {', '.join(sorted(keys))}")
