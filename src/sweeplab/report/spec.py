"""What the report needs of an experiment: its name, cells in table order, seeds, columns and figures.

The experiment comes from the YAML file (through the sweep engine's loader) or, given a sweep name,
from the `sweeps` table, where `sweeplab sweep` stored the loaded file. Either way it is read into a
`ReportSpec`, with what the last sweep stored (scale, plan, the run keys it asked for).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.experiment import (
    Column,
    Experiment,
    Figure,
    Question,
    Reference,
    experiment_from_spec,
    format_value,
)
from sweeplab.registry import TASKS
from sweeplab.report.labels import Labels
from sweeplab.store import Store
from sweeplab.sweep.expand import load_experiment

__all__ = ["Column", "ReportSpec", "cell_key", "load_target"]


@dataclass
class ReportSpec:
    name: str  # the sweep name: runs are stored with runs.sweep = name
    title: str  # table caption
    task: str | None
    cells: list[str]  # expected cell labels, in table order
    seeds: int  # expected seeds per cell
    columns: list[Column]
    figures: list[Figure]
    scale: str | None = None  # quick | full, as last swept
    scale_note: str | None = None  # what the scale reduces, from the experiment file
    source: str = ""  # where the experiment was read from
    convergence_threshold: float | None = None  # analysis: accuracy that counts as converged
    plan: dict[str, Any] = field(default_factory=dict)  # the planner's plan, when stored
    scales_notes: dict[str, str] = field(default_factory=dict)  # scale -> its note, from the experiment file
    scales_measures: dict[str, list[str]] = field(default_factory=dict)  # scale -> what it measures, when it says
    run_keys: set[str] = field(default_factory=set)  # keys of the runs the last `sweeplab sweep` asked for
    key_cells: dict[str, str] = field(default_factory=dict)  # each of those keys -> its cell label
    questions: list[Question] = field(default_factory=list)  # what the experiment asks; the first is the main one
    variants: list[str] = field(default_factory=list)  # named rows, in table order
    axes: dict[str, list[str]] = field(default_factory=dict)  # grid axis -> its values, as labels write them
    references: list[Reference] = field(default_factory=list)  # numbers a named source reports for a cell
    labels: Labels = field(default_factory=Labels)  # the words people read for variants, axes and values


# ---------------------------------------------------------------------------------------- loading
def load_target(target: str, store: Store) -> ReportSpec:
    """An experiment file path or a sweep name in the store (where `sweeplab sweep` saved its experiment)."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"report: experiment file {target} does not exist")
        spec = spec_from_experiment(load_experiment(path), source=str(path))
        stored = store.get_sweep(spec.name)
    else:
        stored = store.get_sweep(target)
        if stored is None:
            runs = store.list_runs(sweep=target)
            if runs:  # runs tagged with a sweep whose experiment was not stored (e.g. `sweeplab bench devices`)
                tasks = {r.task for r in runs}
                return ReportSpec(name=target, title=target, task=tasks.pop() if len(tasks) == 1 else None,
                                  cells=list(dict.fromkeys(r.cell or r.name for r in runs)), seeds=1, columns=[],
                                  figures=[], source=f"store (runs of sweep {target!r}; no stored experiment)")
            names = sorted({s["name"] for s in store.list_sweeps()} | {r.sweep for r in store.list_runs() if r.sweep})
            raise UserError(f"report: {target!r} is neither an experiment file nor a stored sweep; "
                            f"stored sweeps: {', '.join(names) or '(none)'}")
        spec = spec_from_experiment(experiment_from_spec(stored["spec"]), source=f"store (sweep {target!r})")
    if stored:  # the scale, plan and cells of the last `sweeplab sweep` of this experiment
        _apply_stored(spec, stored)
    return spec


def _apply_stored(spec: ReportSpec, stored: dict[str, Any]) -> None:
    data = stored["spec"]
    spec.scale = stored.get("scale") or data.get("scale") or spec.scale
    spec.scale_note = data.get("scale_note") or spec.scales_notes.get(spec.scale or "") or spec.scale_note
    spec.key_cells = {c["key"]: c["label"] for c in data.get("cells") or [] if isinstance(c, dict) and "key" in c}
    spec.run_keys = set(spec.key_cells)
    plan = data.get("plan")
    if plan is not None:
        spec.plan = {"cells": plan} if isinstance(plan, list) else dict(plan)


def spec_from_experiment(experiment: Experiment, *, source: str) -> ReportSpec:
    return ReportSpec(
        name=experiment.name,
        title=experiment.title or experiment.name,
        task=experiment.task,
        cells=list(dict.fromkeys(experiment.cell_labels())),
        seeds=len(experiment.seed_list()),
        columns=list(experiment.columns),
        figures=list(experiment.figures),
        source=source,
        convergence_threshold=experiment.analysis.convergence_threshold,
        scales_notes={name: scale.note for name, scale in experiment.scales.items()},
        scales_measures={name: scale.measures for name, scale in experiment.scales.items() if scale.measures is not None},
        questions=list(experiment.questions),
        variants=list(experiment.variants),
        axes={key: [format_value(v) for v in values] for key, values in experiment.axes.items()},
        references=list(experiment.references),
        labels=Labels({k: experiment.labels.get(k, k) for k in experiment.variants}, experiment.axis_labels(),
                      {key: [format_value(v) for v in values] for key, values in experiment.axes.items()}),
    )


def directions(spec: ReportSpec) -> dict[str, int]:
    """Which way each metric is better: what the task declares (Task.directions, by name), then the columns'
    `better:` (by key). A task not installed here declares nothing: its metrics are shown, never ranked."""
    declared = dict(TASKS.get(spec.task).obj.directions) if spec.task in TASKS else {}
    declared.update({c.metric: 1 if c.better == "higher" else -1 for c in spec.columns if c.better})
    return declared


def measured(spec: ReportSpec, metric: str) -> bool:
    """Whether the scale the table was run at measures `metric` (a quick scale may check shapes only)."""
    measures = spec.scales_measures.get(spec.scale or "")
    return measures is None or metric in measures


# ------------------------------------------------------------------------------ cell matching
def cell_key(label: str) -> tuple[str, ...]:
    """A label in a canonical form, so `optim.lr=0.0001` and `optim.lr=1e-4` name the same cell."""
    parts = []
    for part in label.split(","):
        key, sep, value = part.partition("=")
        parts.append(f"{key.strip()}={_canonical(value.strip())}" if sep else part.strip())
    return tuple(sorted(parts))


def _canonical(value: str) -> str:
    lowered = value.lower()
    if lowered in ("true", "false", "none", "null"):
        return lowered
    try:
        number = float(value)
    except ValueError:
        return value
    return repr(int(number)) if math.isfinite(number) and number == int(number) else repr(number)
