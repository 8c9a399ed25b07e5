"""`--budget 20m`: fill the whole table within a time budget.

Each distinct cell shape is timed by a short calibration (build, a few optimizer steps, one
evaluation, one checkpoint, the final evaluation) in a throwaway store; a cell's cost is then

    setup + steps * step_s + epochs_run * checkpoint_s + evaluations * eval_s + final_s

and the planner picks one fraction f of every cell's epochs (max_steps for step-based tasks) — the
largest for which the cells, packed onto the workers longest-first, end within the budget. One
fraction for all keeps the rows of a table comparable: every row trains the same share of its run.
"""
from __future__ import annotations

import heapq
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeplab.config import flatten
from sweeplab.errors import UserError
from sweeplab.sweep.expand import Cell

WORKER_START_S = 3.0  # a spawned worker imports torch and the tasks before its first cell (measured: 2-3 s here)
CALIBRATION_STEPS = 12  # timed optimizer steps per calibration (after one warm-up step) ...
CALIBRATION_STEP_TIME_S = 1.0  # ... or fewer, once they took this long (at least 3)
# Keys that do not change what a step costs: cells differing only in these share one calibration.
_COST_FREE = ("seed", "train.clip", "train.epochs", "train.max_steps", "train.schedule", "train.step_size",
              "train.gamma", "train.converged_at")

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_budget(text: str) -> float:
    """`90s`, `20m`, `1.5h`, `1h30m` -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groups()):
        raise UserError(f"--budget: {text!r} is not a duration; accepted: e.g. 90s, 20m, 1.5h, 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UserError(f"--budget: {text!r} must be more than zero")
    return total


# ----------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """Measured costs of one cell shape, in seconds."""

    setup_s: float  # data + model + trainer
    step_s: float  # one optimizer step (mean over the timed steps)
    eval_s: float  # one evaluation point (every split in the task's eval_splits)
    checkpoint_s: float  # one checkpoint (written every epoch)
    final_s: float  # final splits with the best weights, plus the task's artifacts (text, figures)
    batches_per_epoch: int
    eval_interval: int  # epochs between evaluations
    log_s: float = 0.0  # one write of a record of metrics to the store (a transaction: it waits for the disk)
    eval_logs: int = 1  # records written per evaluation (one per split)
    final_logs: int = 1  # records written at the end (final splits)
    log_every: int = 0  # steps between interval records ("step" split), 0 = none

    def cost(self, steps: int) -> float:
        """Seconds for a run of `steps` optimizer steps."""
        epochs_run = max(1, math.ceil(steps / self.batches_per_epoch))
        evaluations = epochs_run // self.eval_interval + (1 if epochs_run % self.eval_interval else 0)
        interval_logs = steps // self.log_every if self.log_every else 0
        logs = epochs_run + evaluations * self.eval_logs + self.final_logs + interval_logs
        return (self.setup_s + steps * self.step_s + epochs_run * self.checkpoint_s + evaluations * self.eval_s
                + self.final_s + logs * self.log_s)


def cost_signature(cell: Cell) -> str:
    flat = flatten(cell.cfg.to_dict())
    return repr(sorted((k, v) for k, v in flat.items() if k not in _COST_FREE and not k.startswith("optim")))


def calibrate(cell: Cell) -> Calibration:
    """Time the pieces of one run of `cell` in a throwaway store (nothing reaches the sweep's store)."""
    from sweeplab.engine.device import get_device, synchronize
    from sweeplab.store import open_store

    cfg = cell.cfg
    device = get_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="sweeplab-calibration-") as tmp:
        store = open_store(f"sqlite:///{tmp}/calibration.sqlite")
        run_dir = Path(tmp) / "run"
        # Set up once untimed: a dataset's first build prepares its cache and a process's first trainer
        # loads TensorBoard; a sweep's runs pay neither (the cache is shared, each worker loads it once).
        _setup(cfg, device, store, Path(tmp) / "warm-up").recorder.close()
        start = time.perf_counter()
        trainer = _setup(cfg, device, store, run_dir)
        setup_s = time.perf_counter() - start
        task, model = trainer.task, trainer.model
        try:
            step_s = _time_steps(trainer, lambda: synchronize(device))
            eval_s = _timed(lambda: [task.evaluate(trainer.forward_model, s) for s in task.eval_splits])
            checkpoint_s = _timed(lambda: trainer.save_checkpoint(1))
            final_s = _timed(lambda: ([task.evaluate(trainer.forward_model, s) for s in task.final_splits],
                                      task.finish(model, run_dir)))
            log_s = _time_log(trainer)
        finally:
            trainer.recorder.close()
        return Calibration(setup_s, step_s, eval_s, checkpoint_s, final_s, task.batches_per_epoch(),
                           task.eval_interval(), log_s, len(task.eval_splits), len(task.final_splits),
                           cfg.train.log_every)


def _time_log(trainer: Any, repeats: int = 3) -> float:
    """Median seconds of one metrics record (six values, as an epoch's training record holds)."""
    values = {name: 1.0 for name in ("loss", "ppl", "lr", "ms_per_batch", "items_per_s", "epoch_time_s")}
    times = [_timed(lambda: trainer.recorder.log(step=0, epoch=1, split="train", values=values))
             for _ in range(repeats)]
    return sorted(times)[len(times) // 2]


def _setup(cfg: Any, device: Any, store: Any, run_dir: Path) -> Any:
    """What `execute` does before the first step: seed, data, model, run row, trainer."""
    from sweeplab.engine.runner import seed_everything
    from sweeplab.engine.trainer import Trainer
    from sweeplab.registry import TASKS

    seed_everything(cfg.seed)
    task = TASKS.get(cfg.task, key="task").obj(cfg, device)
    model = task.build()
    run_id = store.create_run(key="calibration", name="calibration", task=cfg.task, config={}, env={})
    return Trainer(task, model, store=store, run_id=run_id, run_dir=run_dir, quiet=True)


def _time_steps(trainer: Any, sync: Callable[[], None]) -> float:
    """Mean seconds per optimizer step, after one warm-up step (first-call allocations, lazy init)."""
    times: list[float] = []
    for epoch, batch in _batches(trainer.task):
        start = time.perf_counter()
        trainer.set_lr(epoch)
        trainer.train_step(batch)
        sync()
        times.append(time.perf_counter() - start)
        timed = times[1:]
        if len(timed) >= CALIBRATION_STEPS or (len(timed) >= 3 and sum(timed) >= CALIBRATION_STEP_TIME_S):
            break
    timed = times[1:] or times
    return sum(timed) / len(timed)


def _batches(task: Any) -> Iterator[tuple[int, Any]]:
    """Training batches, epoch after epoch (a tiny epoch may hold fewer batches than calibration needs)."""
    for epoch in range(1, 1000):
        for batch in task.train_batches(epoch):
            yield epoch, batch


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Calibrate with the threads one worker will have: N workers share the cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------- the plan
@dataclass
class CellPlan:
    ident: str  # label@seed
    label: str
    seed: int
    full_key: str  # run key of the cell without reduction: a stored plan is reused only for the same cells
    unit: str = "epochs"  # epochs | steps
    full: int = 0  # units of the unreduced cell
    chosen: int = 0  # units the plan gives it
    est_full_s: float = 0.0
    est_s: float = 0.0
    done: bool = False  # already finished in the store: costs nothing
    error: str | None = None  # calibration failed (e.g. data missing): the cell will fail the same way

    @property
    def reduced(self) -> bool:
        return not self.done and self.error is None and self.chosen < self.full


@dataclass
class Plan:
    budget: str | None  # as given, e.g. "20m"
    budget_s: float | None
    workers: int
    scale: str | None
    overrides: dict[str, Any]
    cells: list[CellPlan]
    calibration_s: float = 0.0
    work_s: float = 0.0  # sum of the planned cells' estimates
    makespan_s: float = 0.0  # estimated wall time with `workers` workers
    fits: bool = True
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{**data, "cells": [CellPlan(**c) for c in data["cells"]]})

    def note(self, cp: CellPlan) -> str:
        return f"{cp.chosen} of {cp.full} {cp.unit} (budget {self.budget})"

    def apply(self, cells: list[Cell], where: str) -> list[Cell]:
        """The cells with the plan's reductions (train.epochs or train.max_steps) and notes."""
        by_ident = {cp.ident: cp for cp in self.cells}
        out = []
        for cell in cells:
            cp = by_ident[cell.ident]
            if cp.reduced:
                key = "train.epochs" if cp.unit == "epochs" else "train.max_steps"
                cell = cell.reduced({key: cp.chosen}, self.note(cp), where)
            out.append(cell)
        return out

    def matches(self, cells: list[Cell], budget_s: float | None, workers: int, scale: str | None,
                overrides: dict[str, Any]) -> bool:
        """A stored plan stands for this invocation: same cells, budget, workers, scale and overrides.
        Reusing it keeps run keys stable, so a re-run resumes instead of re-planning."""
        return (self.budget_s == budget_s and self.workers == workers and self.scale == scale
                and self.overrides == overrides and [(c.ident, c.full_key) for c in self.cells]
                == [(c.ident, c.key) for c in cells])


def unit_of(cell: Cell, calibration: Calibration) -> tuple[str, int]:
    """What the planner shortens: max_steps where it bounds the run, else epochs; a one-epoch run by steps."""
    train = cell.cfg.train
    epochs = _num_epochs(cell)
    if train.max_steps and train.max_steps <= epochs * calibration.batches_per_epoch:
        return "steps", train.max_steps
    if epochs > 1:
        return "epochs", epochs
    return "steps", calibration.batches_per_epoch


def _num_epochs(cell: Cell) -> int:
    """The task's own count (a step-based task derives it from max_steps); it reads only the config."""
    import torch

    from sweeplab.registry import TASKS

    return TASKS.get(cell.cfg.task, key="task").obj(cell.cfg, torch.device("cpu")).num_epochs()


def steps_of(unit: str, units: int, calibration: Calibration) -> int:
    return units * calibration.batches_per_epoch if unit == "epochs" else units


def make_plan(cells: list[Cell], done: set[str], *, budget: str | None, workers: int, threads: int,
              scale: str | None, overrides: dict[str, Any], say: Callable[[str], None]) -> Plan:
    """Calibrate every distinct cell shape that still has to run, estimate, and choose the reductions."""
    start = time.perf_counter()
    calibrations: dict[str, Calibration | str] = {}
    plans = []
    with torch_threads(threads):
        for cell in cells:
            cp = CellPlan(cell.ident, cell.label, cell.seed, cell.key, done=cell.key in done)
            if not cp.done:
                calibration = _calibration_for(cell, calibrations, say)
                if isinstance(calibration, str):
                    cp.error = calibration
                else:
                    cp.unit, cp.full = unit_of(cell, calibration)
                    cp.est_full_s = calibration.cost(steps_of(cp.unit, cp.full, calibration))
            plans.append((cp, calibrations.get(cost_signature(cell))))
    calibration_s = time.perf_counter() - start
    budget_s = parse_budget(budget) if budget is not None else None
    plan = Plan(budget, budget_s, workers, scale, dict(overrides), [cp for cp, _ in plans], calibration_s)
    _choose(plan, plans, None if budget_s is None else budget_s - calibration_s)
    return plan


def _calibration_for(cell: Cell, cache: dict[str, Calibration | str], say: Callable[[str], None]) -> Any:
    signature = cost_signature(cell)
    if signature not in cache:
        say(f"calibrating {cell.label} ...")
        try:
            cache[signature] = calibrate(cell)
        except UserError as exc:
            cache[signature] = str(exc)
    return cache[signature]


def _choose(plan: Plan, plans: list[tuple[CellPlan, Any]], budget_s: float | None) -> None:
    """One fraction f for every cell: the largest whose longest-first packing ends within the budget."""
    active = [(cp, cal) for cp, cal in plans if not cp.done and cp.error is None]

    def units_at(f: float) -> list[int]:
        return [max(1, math.floor(f * cp.full + 1e-9)) for cp, _ in active]

    def costs(units: list[int]) -> list[float]:
        return [cal.cost(steps_of(cp.unit, u, cal)) for (cp, cal), u in zip(active, units, strict=True)]

    chosen = units_at(1.0)
    if budget_s is not None and makespan(costs(chosen), plan.workers) > budget_s:
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if makespan(costs(units_at(mid)), plan.workers) <= budget_s else (low, mid)
        chosen = units_at(low)
    estimates = costs(chosen)
    for (cp, _), units, est in zip(active, chosen, estimates, strict=True):
        cp.chosen, cp.est_s = units, est
    plan.work_s = sum(estimates)
    plan.makespan_s = makespan(estimates, plan.workers)
    plan.fits = budget_s is None or plan.makespan_s <= budget_s


def makespan(costs: list[float], workers: int) -> float:
    """Wall time of the cells packed longest-first onto `workers` workers (plus their start)."""
    if not costs:
        return 0.0
    loads = [0.0] * max(1, min(workers, len(costs)))
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + cost)
    return max(loads) + WORKER_START_S


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cores() // workers)
