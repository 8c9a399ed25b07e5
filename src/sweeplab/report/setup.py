"""The setup sections the course reports left empty ("Data Preparation", "Technical Details"), generated.

From the stored runs: the settings that vary and those held fixed, hardware and software versions, and
time per run. The data statistics and each model's layers come from rebuilding a run's task from its
stored config (on the CPU, nothing trained), which needs the dataset on this machine: where it is not,
the section says so instead of guessing.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from sweeplab.report.collect import CellData, RunData
from sweeplab.report.values import fmt_count, short

ENV_KEYS = (("device", "device"), ("threads", "CPU threads"), ("processes", "processes"), ("torch", "PyTorch"),
            ("python", "Python"), ("numpy", "NumPy"), ("platform", "platform"), ("git_commit", "sweeplab commit"))
HIDDEN = {"seed"}  # said by the seeds line of the table, not a setting of the experiment


@dataclass
class ModelFacts:
    row: str
    layers: str  # top-level modules with their parameter counts
    params: str  # as the run recorded it


@dataclass
class Setup:
    data: list[str] = field(default_factory=list)
    models: list[ModelFacts] = field(default_factory=list)
    varied: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    hardware: list[str] = field(default_factory=list)
    timing: list[str] = field(default_factory=list)


def describe_setup(cells: list[CellData]) -> Setup:
    runs = [(cell, run) for cell in cells for run in cell.runs]
    setup = Setup()
    if not runs:
        return setup
    setup.varied, setup.fixed = settings(run for _, run in runs)
    setup.hardware = hardware([run for _, run in runs])
    setup.timing = timing(cells)
    described: set[str] = set()
    for cell in cells:
        run = next((r for r in cell.runs if r.done), cell.runs[0] if cell.runs else None)
        if run is not None:
            _describe_run(cell, run, setup, described)
    return setup


def _describe_run(cell: CellData, run: RunData, setup: Setup, described: set[str]) -> None:
    params = run.summary.get("params")
    recorded = f"{params:,.0f}" if params is not None else "not recorded"
    if "params" in run.row.config:  # a training function builds its own data and model: nothing to rebuild
        setup.models.append(ModelFacts(cell.label, f"built by the training function {run.row.task}", recorded))
        return
    try:
        task, model = rebuild(run)
    except Exception as exc:  # noqa: BLE001 - descriptive only: a missing dataset must not stop the report
        setup.models.append(ModelFacts(cell.label, f"not rebuilt here: {short(str(exc) or type(exc).__name__, 140)}",
                                       recorded))
        return
    setup.models.append(ModelFacts(cell.label, layers_text(model), recorded))
    for line in data_lines(task, run):
        if line not in described:
            described.add(line)
            setup.data.append(line)


def rebuild(run: RunData) -> tuple[Any, Any]:
    """The run's task and model from its stored config, on the CPU."""
    import torch

    from sweeplab.registry import TASKS
    from sweeplab.tasks import resolve

    cfg = resolve(run.row.task, {**run.flat_config, "device": "cpu"})
    task = TASKS.get(cfg.task).obj(cfg, torch.device("cpu"))
    return task, task.build()


def layers_text(model: Any) -> str:
    parts = []
    for name, child in model.named_children():
        count = sum(p.numel() for p in child.parameters())
        head = repr(child).splitlines()[0].rstrip("(") if not list(child.children()) else type(child).__name__
        parts.append(f"{name}: {head} ({count:,})")
    return "; ".join(parts) or type(model).__name__


def data_lines(task: Any, run: RunData) -> list[str]:
    """Per split: tokens and vocabulary, or images and classes, or samples; generated data says so."""
    name = run.flat_config.get("data", "?")
    corpus = getattr(task, "corpus", None)
    if corpus is not None:
        used = {s: int(t.numel()) for s, t in getattr(task, "splits", {}).items()}
        full = {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)}
        splits = ", ".join(f"{s} {used.get(s, n):,} of {n:,} tokens" for s, n in full.items())
        return [f"{name}: vocabulary {len(corpus.dictionary):,} words; {splits}"]
    data = getattr(task, "data", None)
    if data is not None and hasattr(data, "held_out"):
        splits = {"train": len(data.train.y), **{s: len(v.y) for s, v in data.held_out.items()}}
        shape = "×".join(str(d) for d in getattr(data, "shape", ()))
        return [f"{name}: {data.num_classes} classes, images {shape}; "
                + ", ".join(f"{s} {n:,} images" for s, n in splits.items())]
    if data is not None and hasattr(data, "y_train"):
        return [f"{name}: {data.num_classes} classes, {data.x_train.size(1)} features; train "
                f"{len(data.y_train):,}, test {len(data.y_test):,} samples"]
    keys = {k: v for k, v in run.flat_config.items() if k.startswith("data.")}
    return [f"{name}: generated on the fly (fresh examples every batch); "
            + ", ".join(f"{k}={v}" for k, v in keys.items())]


def settings(runs: Any) -> tuple[list[str], list[str]]:
    """(`key: values` of the settings that differ between runs, `key=value` of those every run shares)."""
    values: dict[str, dict[str, None]] = {}
    for run in runs:
        for key, value in run.flat_config.items():
            values.setdefault(key, {})[str(value)] = None
    varied = [f"{k}: {', '.join(v)}" for k, v in values.items() if len(v) > 1 and k not in HIDDEN]
    fixed = [f"{k}={next(iter(v))}" for k, v in values.items() if len(v) == 1 and k not in HIDDEN]
    return varied, fixed


def hardware(runs: list[RunData]) -> list[str]:
    lines = []
    for key, title in ENV_KEYS:
        seen = list(dict.fromkeys(str(run.row.env[key])[:12 if key == "git_commit" else None]
                                  for run in runs if run.row.env.get(key) is not None))
        if seen:
            lines.append(f"{title}: {', '.join(seen)}")
    own = {(p["name"], p["sha256"][:12], p["path"]) for run in runs for p in run.row.config.get("plugins", [])}
    for name, digest, path in sorted(own):  # the users' own code the runs used, as its source was then
        lines.append(f"plugin {name}: {path} (sha256 {digest}…)")
    missing = sum(not run.row.env for run in runs)
    if missing:
        lines.append(f"{missing} run{'s' if missing > 1 else ''} without a stored environment")
    return lines


def timing(cells: list[CellData]) -> list[str]:
    """Wall time of the ended runs: per run, and per configuration where it differs most."""
    times = {(cell.label, repr(run.seed)): run.row.ended_at - run.row.started_at for cell in cells
             for run in cell.runs if run.done and run.row.ended_at and run.row.started_at}
    if not times:
        return ["no ended run has a start and end time"]
    values = sorted(times.values())
    slow = max(times, key=times.get)
    fast = min(times, key=times.get)
    if len(values) == 1:
        return [f"1 ended run: {_duration(values[0])}"]
    return [f"{len(values)} ended runs: median {_duration(statistics.median(values))} per run, total "
            f"{_duration(sum(values))}; fastest {fast[0]} ({_duration(times[fast])}), slowest {slow[0]} "
            f"({_duration(times[slow])})"]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{fmt_count(round(seconds / 3600, 1))} h"
