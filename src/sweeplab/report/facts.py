"""Per-run facts the table and the analysis share, so the two can never disagree: convergence.

A run converges at the first evaluation from which its held-out accuracy stays at or above a threshold:
the experiment's `analysis.convergence_threshold` when it sets one (it always wins over what the task
wrote), else the task's own (`convergence_step` from `train.converged_at`). A task summary that only says
where accuracy settled relative to the run's own best (toy2d's `convergence_epoch`) is not convergence:
a run stuck at 50% settles too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sweeplab.report.collect import RunData


@dataclass(frozen=True)
class Convergence:
    at: float | None  # step or epoch of convergence; None: not (yet) converged
    unit: str  # "step" or "epoch"
    detail: str = ""  # why not converged, or what "converged" was measured on
    relative: bool = False  # only "settled near its own best" (no threshold): never called converged


def convergence(run: RunData, threshold: float | None = None) -> Convergence | None:
    """None for a run without a notion of convergence (no accuracy series, no threshold, no summary)."""
    unit = "step" if run.step_based else "epoch"
    metric = accuracy_metric(run)
    if threshold is None:
        if _usable(run.summary.get("convergence_step")):
            return Convergence(run.summary["convergence_step"], "step", _measured(run, metric))
        threshold = run.flat_config.get("train.converged_at")
        if threshold is None and _usable(run.summary.get("convergence_epoch")):
            best = run.summary.get("best_test_acc")
            detail = f"within 0.01 of its own best accuracy ({best:.4f})" if best is not None else ""
            return Convergence(run.summary["convergence_epoch"], "epoch", detail, relative=True)
    if threshold is None or metric is None:
        return Convergence(None, unit, not_reached(run, None, None)) if run.summary.get("converged") == 0 else None
    at = first_held(run, metric, threshold)
    return Convergence(at, unit, _measured(run, metric, threshold) if at is not None else
                       not_reached(run, metric, threshold))


def first_held(run: RunData, metric: str, threshold: float) -> int | None:
    """The first evaluation from which `metric` stays at or above `threshold` to the end."""
    at = None
    for p in run.series[metric]:
        if not (math.isfinite(p.value) and p.value >= threshold):
            at = None
        elif at is None:
            at = p.step if run.step_based else p.epoch
    return at


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def accuracy_metric(run: RunData) -> str | None:
    """The held-out accuracy convergence is judged on: valid, else test."""
    for split in ("valid", "test"):
        for key in run.series:
            if key.startswith(split + "/") and key.split("/")[1] == "acc":
                return key
        for key in run.series:
            if key.startswith(split + "/") and "acc" in key.split("/")[1]:
                return key
    return None


def _measured(run: RunData, metric: str | None, threshold: float | None = None) -> str:
    level = threshold if threshold is not None else run.flat_config.get("train.converged_at")
    return f"{metric} ≥ {level:g} from then on" if metric and level is not None else ""


def not_reached(run: RunData, metric: str | None, threshold: float | None) -> str:
    """Why a run has not converged, with the numbers: a final accuracy that looks converged says why not."""
    text = f"not converged by {run.progress()}" if run.done else f"not converged yet at {run.progress()}"
    if not metric or threshold is None:
        return text
    values = [p.value for p in run.series[metric] if math.isfinite(p.value)]
    if not values:
        return f"{text} ({metric} has no finite value)"
    best, last = max(values), values[-1]
    if best >= threshold:  # it got there and fell back: the final (best-checkpoint) accuracy can look converged
        return f"{text} ({metric} reached {best:.4f} but fell to {last:.4f}; it must stay ≥ {threshold:g})"
    return f"{text} ({metric} best {best:.4f}, below {threshold:g})"
