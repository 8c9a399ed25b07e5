"""What the report needs of an experiment: its name, cells in table order, seeds, columns and figures.

The experiment comes from the YAML file (through the sweep engine's loader) or, given a sweep name,
from the `sweeps` table, where `sweeplab sweep` stored the loaded file. Either way it is read into a
`ReportSpec`, so the rest of the report never depends on the loader's classes.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.store import Store

AGGREGATES = ("final", "best", "min", "max", "mean", "at-epoch")
FIGURE_KINDS = ("curves", "versus", "text", "attention", "boundary")


@dataclass(frozen=True)
class Column:
    """One column of the results table."""

    title: str  # header text
    metric: str  # `split/name` of a metric series, or a summary key such as `params`
    aggregate: str = "final"  # final | best | min | max | mean | at-epoch
    epoch: int | None = None  # the epoch an `at-epoch` column reads


@dataclass(frozen=True)
class FigureSpec:
    """One figure the experiment asks for."""

    kind: str  # curves | versus | text | attention | boundary
    metrics: tuple[str, ...] = ()  # curves: one panel per metric
    x: str | None = None  # versus: the config key on the x axis (e.g. data.length)
    metric: str | None = None  # versus: the metric on the y axis
    aggregate: str = "final"  # versus: how one run's series becomes one point
    title: str | None = None  # optional caption


@dataclass
class ReportSpec:
    name: str  # the sweep name: runs are stored with runs.sweep = name
    title: str  # table caption
    task: str | None
    cells: list[str]  # expected cell labels, in table order
    seeds: int  # expected seeds per cell
    columns: list[Column]
    figures: list[FigureSpec]
    scale: str | None = None  # quick | full, as last swept
    scale_note: str | None = None  # what the scale reduces, from the experiment file
    source: str = ""  # where the experiment was read from
    convergence_threshold: float | None = None  # analysis: accuracy that counts as converged
    plan: dict[str, Any] = field(default_factory=dict)  # the planner's plan, when stored
    scales_notes: dict[str, str] = field(default_factory=dict)  # scale -> its note, from the experiment file
    run_keys: set[str] = field(default_factory=set)  # keys of the runs the last `sweeplab sweep` asked for


# ---------------------------------------------------------------------------------------- loading
def load_target(target: str, store: Store) -> ReportSpec:
    """An experiment file path (loaded with the sweep engine's loader) or a sweep name in the store."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"report: experiment file {target} does not exist")
        experiment = _load_experiment_file(path)
        spec = spec_from_experiment(experiment, source=str(path))
        stored = _get_sweep(store, spec.name)
        if stored:  # the scale and plan of the last `sweeplab sweep` of this file
            _apply_stored(spec, stored)
        return spec
    stored = _get_sweep(store, target)
    if stored:
        spec = spec_from_experiment(_stored_experiment(stored), source=f"store (sweep {target!r})")
        spec.name = target
        _apply_stored(spec, stored)
        return spec
    if store.list_runs(sweep=target):  # runs of a sweep whose experiment was not stored
        return ReportSpec(name=target, title=target, task=None, cells=[], seeds=1, columns=[], figures=[],
                          source=f"store (runs of sweep {target!r}; no stored experiment)")
    raise UserError(f"report: {target!r} is neither an experiment file nor a stored sweep; "
                    f"stored sweeps: {', '.join(_sweep_names(store)) or '(none)'}")


def _load_experiment_file(path: Path) -> Any:
    try:
        from sweeplab.sweep.experiment import load_experiment
    except ImportError:  # the sweep engine is not installed: read the file as the contract describes it
        from sweeplab.config import load_yaml

        data = load_yaml(path.read_text(encoding="utf8"))
        if not isinstance(data, dict):
            raise UserError(f"{path}: an experiment file is a YAML mapping") from None
        data.setdefault("name", path.stem)
        return data
    return load_experiment(path)


def _get_sweep(store: Store, name: str) -> dict[str, Any] | None:
    getter = getattr(store, "get_sweep", None)  # absent before the store's sweeps migration
    return getter(name) if getter else None


def _sweep_names(store: Store) -> list[str]:
    lister = getattr(store, "list_sweeps", None)
    names = [_field(s, "name") for s in lister()] if lister else []
    return sorted({str(n) for n in names if n} | {r.sweep for r in store.list_runs() if r.sweep})


def _stored_experiment(stored: Any) -> Any:
    """The stored spec through the sweep engine's own parser (for its cell order), else as plain JSON."""
    data = _spec_of(stored)
    try:
        from sweeplab.sweep.experiment import experiment_from_spec
    except ImportError:
        return data
    try:
        return experiment_from_spec(data)
    except UserError:  # a spec stored by another version: read what the contract promises
        return data


def _spec_of(stored: Any) -> dict[str, Any]:
    spec = _field(stored, "spec") or {}
    if isinstance(spec, str):
        import json

        spec = json.loads(spec)
    return as_mapping(spec)


def _apply_stored(spec: ReportSpec, stored: Any) -> None:
    data = _spec_of(stored)
    spec.scale = _field(stored, "scale") or data.get("scale") or spec.scale
    spec.scale_note = data.get("scale_note") or spec.scales_notes.get(spec.scale or "") or spec.scale_note
    cells = data.get("cells") if isinstance(data.get("cells"), list) else []
    spec.run_keys = {c["key"] for c in cells if isinstance(c, dict) and isinstance(c.get("key"), str)}
    plan = data.get("plan")
    if plan is not None:
        spec.plan = as_mapping(plan) if not isinstance(plan, list) else {"cells": plan}


# ---------------------------------------------------------------------------------- normalising
def spec_from_experiment(experiment: Any, *, source: str) -> ReportSpec:
    """A loaded experiment (the loader's object, or its JSON as stored) as a ReportSpec."""
    data = as_mapping(experiment)
    name = str(data.get("name") or Path(source).stem)
    where = f"{source}: "
    seeds = data.get("seeds", 1)
    analysis = as_mapping(data.get("analysis") or {})
    return ReportSpec(
        name=name,
        title=str(data.get("title") or name),
        task=data.get("task"),
        cells=_cell_labels(experiment, data),
        seeds=len(seeds) if isinstance(seeds, list | tuple) else int(seeds or 1),
        columns=[_column(c, where) for c in data.get("columns") or []],
        figures=[_figure(f, where) for f in data.get("figures") or []],
        scale=data.get("scale") if isinstance(data.get("scale"), str) else None,
        source=source,
        convergence_threshold=analysis.get("convergence_threshold"),
        scales_notes={k: as_mapping(v).get("note") or "" for k, v in as_mapping(data.get("scales") or {}).items()},
    )


def _column(raw: Any, where: str) -> Column:
    c = as_mapping(raw)
    if not c.get("metric"):
        raise UserError(f"{where}columns: every column needs a `metric` (got {dict(c)})")
    aggregate = str(c.get("aggregate") or "final")
    if aggregate not in AGGREGATES:
        raise UserError(f"{where}columns.{c['metric']}.aggregate: {aggregate!r} is not accepted; "
                        f"accepted: {', '.join(AGGREGATES)}")
    epoch = c.get("epoch", c.get("at_epoch"))
    if aggregate == "at-epoch" and epoch is None:
        raise UserError(f"{where}columns.{c['metric']}: aggregate at-epoch needs `epoch: N`")
    return Column(str(c.get("title") or c["metric"]), str(c["metric"]), aggregate,
                  None if epoch is None else int(epoch))


def _figure(raw: Any, where: str) -> FigureSpec:
    f = as_mapping(raw)
    kind = str(f.get("kind", ""))
    if kind not in FIGURE_KINDS:
        raise UserError(f"{where}figures.kind: {kind!r} is not accepted; accepted: {', '.join(FIGURE_KINDS)}")
    if kind == "versus" and not (f.get("x") and f.get("metric")):
        raise UserError(f"{where}figures: a `versus` figure needs `x` (a config key) and `metric`")
    metrics = f.get("metrics") or ([f["metric"]] if kind == "curves" and f.get("metric") else [])
    return FigureSpec(kind, tuple(str(m) for m in metrics), f.get("x"), f.get("metric"),
                      str(f.get("aggregate") or "final"), f.get("title"))


def _cell_labels(experiment: Any, data: Mapping[str, Any]) -> list[str]:
    """Cell labels in table order: the loader's own expansion when it offers one, else the contract's rule."""
    for method in ("cell_labels", "cells"):
        expand = getattr(experiment, method, None)
        if callable(expand):
            labels = [c if isinstance(c, str) else (_field(c, "label") or _field(c, "cell")) for c in expand()]
            if all(isinstance(label, str) for label in labels):
                return list(dict.fromkeys(labels))
    stored = data.get("cells")
    if isinstance(stored, list) and stored:
        labels = [c if isinstance(c, str) else _field(c, "label") or _field(c, "cell") for c in stored]
        if all(isinstance(label, str) for label in labels):
            return list(dict.fromkeys(labels))
    return contract_labels(as_mapping(data.get("variants") or {}), as_mapping(data.get("axes") or {}))


def contract_labels(variants: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> list[str]:
    """Variant name; `key=value,key=value` for a grid; `NAME,key=value` for a variant crossed with a grid."""
    grid = [",".join(f"{k}={format_value(v)}" for k, v in zip(axes, values, strict=True))
            for values in itertools.product(*axes.values())] if axes else []
    if variants and grid:
        return [f"{name},{point}" for name in variants for point in grid]
    return list(variants) or grid


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


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


# ------------------------------------------------------------------------------------ helpers
def as_mapping(obj: Any) -> dict[str, Any]:
    """A pydantic model, dataclass, mapping or plain object as a dict of its fields."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    raise TypeError(f"cannot read {type(obj).__name__} as an experiment")


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
