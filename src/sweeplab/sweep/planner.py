"""`--budget 20m`: fill the whole table within a time budget.

Each distinct cell shape is timed by a short calibration in a throwaway store: build, a few optimizer
steps, a few batches of each evaluated split (scaled by the split's batch count), one checkpoint, the
task's end-of-run artifacts. Cells that differ only in cost-free keys (seed, clipping, schedule,
optimizer settings, run length) share one calibration. A cell's cost is then

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
from functools import partial
from pathlib import Path
from typing import Any

from sweeplab.config import flatten
from sweeplab.errors import UserError
from sweeplab.sweep.expand import Cell
from sweeplab.tasks.function import LENGTH_KEY

WORKER_START_S = 3.0  # a spawned worker imports torch and the tasks before its first cell (measured: 2-3 s here)
# Optimizer steps are timed (after one warm-up step) until they took CALIBRATION_STEP_TIME_S, at least
# CALIBRATION_MIN_STEPS and at most CALIBRATION_MAX_STEPS of them. A fixed dozen steps of a few milliseconds
# is a 50 ms sample, which a busy machine's scheduler skews by half (measured: 2.4 to 4.7 ms against the
# run's 4.2); half a second of steps is cheap and steady.
CALIBRATION_STEP_TIME_S = 0.5
CALIBRATION_MIN_STEPS = 3
CALIBRATION_MAX_STEPS = 500
# Timed evaluation batches per split, after one warm-up batch: a longer split is scaled by its batch count
# (a full-scale WikiText-2 evaluation is 620 + 700 batches through a 33k-word decoder: minutes per shape).
CALIBRATION_EVAL_BATCHES = 8
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
    if not math.isfinite(total):  # 400 digits read as a float are infinite: the stored plan would not be JSON
        raise UserError(f"--budget: {text[:40]!r}... is longer than any sweep; accepted: e.g. 90s, 20m, 1.5h, 1h30m")
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
    whole_epochs: bool = False  # a training function's: `step_s` is one whole epoch, set-up and evaluation included

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


def calibrate(cell: Cell, *, warm_up: bool = True) -> Calibration:
    """Time the pieces of one run of `cell` in a throwaway store (nothing reaches the sweep's store).

    `warm_up`: set up once untimed first. A dataset's first build prepares its cache and a process's
    first trainer loads TensorBoard; a sweep's runs pay neither (the cache is shared, each worker loads
    it once), so only the first calibration of each dataset in a process needs it."""
    from sweeplab.models.device import get_device, synchronize
    from sweeplab.store import open_store

    cfg = cell.cfg
    device = get_device(cfg.device)
    if cfg.params is not None:
        return _calibrate_function(cell, device)
    with tempfile.TemporaryDirectory(prefix="sweeplab-calibration-") as tmp:
        store = open_store(f"sqlite:///{tmp}/calibration.sqlite")
        run_dir = Path(tmp) / "run"
        if warm_up:
            _setup(cfg, device, store, Path(tmp) / "warm-up").recorder.close()
        start = time.perf_counter()
        trainer = _setup(cfg, device, store, run_dir)
        setup_s = time.perf_counter() - start
        task, model = trainer.task, trainer.model
        try:
            step_s = _time_steps(trainer, lambda: synchronize(device))
            rate: list[float] = []  # seconds per evaluation batch, once timed: every split's batches are alike
            eval_s = _time_evaluation(task, trainer.forward_model, task.eval_splits, rate)
            checkpoint_s = _time_checkpoint(trainer)
            final_s = (_time_evaluation(task, trainer.forward_model, task.final_splits, rate)
                       + _timed(lambda: task.finish(model, run_dir)))
            log_s = _time_log(trainer)
        finally:
            trainer.recorder.close()
        return Calibration(setup_s, step_s, eval_s, checkpoint_s, final_s, task.batches_per_epoch(),
                           task.eval_interval(), log_s, len(task.eval_splits), len(task.final_splits),
                           cfg.train.log_every)


def _calibrate_function(cell: Cell, device: Any) -> Calibration:
    """A training function's cost: one epoch (its config's `epochs` field set to 1, and `run.should_stop()` true
    once an epoch is logged), timed whole in a throwaway store; every epoch of the cell is then counted at that
    cost (its set-up included: an overestimate)."""
    from dataclasses import replace

    from sweeplab.engine.runner import seed_everything
    from sweeplab.engine.trainable import train_function
    from sweeplab.engine.watchdog import Watchdog
    from sweeplab.registry import TASKS
    from sweeplab.store import open_store

    task_cls = TASKS.get(cell.cfg.task, key="task").obj
    length = task_cls.length_key()
    if length is None:
        raise UserError(f"{cell.cfg.task} has no `epochs: int` field in its config: --budget cannot shorten it "
                        "(leave --budget out, or give the function's config an `epochs` field)")
    cfg = replace(cell.cfg, params={**cell.cfg.params, length: 1})
    with tempfile.TemporaryDirectory(prefix="sweeplab-calibration-") as tmp:
        store = open_store(f"sqlite:///{tmp}/calibration.sqlite")
        run_id = store.create_run(key="calibration", name="calibration", task=cfg.task, config={}, env={})
        seed_everything(cfg.seed)
        start = time.perf_counter()
        status = train_function(task_cls(cfg, device), store, run_id, quiet=True, watchdog=Watchdog.off(),
                                stop_after_epoch=1)
        epoch_s = time.perf_counter() - start
        if status != "finished":
            raise UserError(f"its one-epoch calibration ended {status}: {store.get_run(run_id).error}")
    return Calibration(setup_s=0.0, step_s=epoch_s, eval_s=0.0, checkpoint_s=0.0, final_s=0.0, batches_per_epoch=1,
                       eval_interval=1, final_logs=0, whole_epochs=True)


def _time_evaluation(task: Any, model: Any, splits: tuple[str, ...], rate: list[float]) -> float:
    """Seconds of one evaluation of `splits`. A split of more than 2 x CALIBRATION_EVAL_BATCHES batches is
    timed on that many after a warm-up batch, and every long split is scaled by its batch count from that
    rate (kept in `rate`: a task's evaluation batches have one size, whatever the split). A shorter split
    is timed whole, after an untimed pass (a run evaluates many times: first-call allocations are not the rate)."""
    total = 0.0
    for split in splits:
        batches = task.eval_batch_count(split)
        if batches is None or batches <= 2 * CALIBRATION_EVAL_BATCHES:
            task.evaluate(model, split)
            total += _timed(partial(task.evaluate, model, split))
            continue
        if not rate:
            task.evaluate(model, split, limit_batches=1)
            timed = _timed(partial(task.evaluate, model, split, limit_batches=CALIBRATION_EVAL_BATCHES))
            rate.append(timed / CALIBRATION_EVAL_BATCHES)
        total += rate[0] * batches
    return total


def _time_checkpoint(trainer: Any, repeats: int = 3) -> float:
    """Median seconds of one checkpoint, after an untimed one (it also creates the folder). A run writes
    one per epoch, so one slow write (the disk is shared) would count as many times: measured, 0.26 s
    against 5-15 ms, x 30 epochs."""
    trainer.save_checkpoint(1)
    times = sorted(_timed(partial(trainer.save_checkpoint, epoch)) for epoch in range(2, 2 + repeats))
    return times[len(times) // 2]


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
    # Run keys are unique in a store: the warm-up and the timed set-up each get their own.
    run_id = store.create_run(key=f"calibration-{run_dir.name}", name="calibration", task=cfg.task, config={}, env={})
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
        if len(timed) >= CALIBRATION_MAX_STEPS or (len(timed) >= CALIBRATION_MIN_STEPS
                                                   and sum(timed) >= CALIBRATION_STEP_TIME_S):
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
                if cell.cfg.params is not None:  # a training function's own field
                    key = LENGTH_KEY
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
    if cell.cfg.params is not None:  # a training function: its `epochs` (calibrated one at a time)
        return "epochs", cell.cfg.params[LENGTH_KEY]
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
    calibrations = Calibrations(cells, done, say)
    plans = []
    with torch_threads(threads):
        for cell in cells:
            cp = CellPlan(cell.ident, cell.label, cell.seed, cell.key, done=cell.key in done)
            if not cp.done:
                calibration = calibrations.get(cell)
                if isinstance(calibration, str):
                    cp.error = calibration
                else:
                    cp.unit, cp.full = unit_of(cell, calibration)
                    cp.est_full_s = calibration.cost(steps_of(cp.unit, cp.full, calibration))
            plans.append((cp, calibrations.cache.get(cost_signature(cell))))
    calibration_s = time.perf_counter() - start
    budget_s = parse_budget(budget) if budget is not None else None
    plan = Plan(budget, budget_s, workers, scale, dict(overrides), [cp for cp, _ in plans], calibration_s)
    _choose(plan, plans, None if budget_s is None else budget_s - calibration_s)
    return plan


class Calibrations:
    """One calibration per cell shape (cost signature), with a progress line before and after each."""

    def __init__(self, cells: list[Cell], done: set[str], say: Callable[[str], None]):
        self.cache: dict[str, Calibration | str] = {}  # signature -> calibration, or why it failed
        self.shapes = len({cost_signature(c) for c in cells if c.key not in done})
        self.warm: set[str] = set()  # datasets already set up once in this process
        self.say = say

    def get(self, cell: Cell) -> Calibration | str:
        signature = cost_signature(cell)
        if signature not in self.cache:
            self.say(f"calibrating {cell.label} (shape {len(self.cache) + 1} of {self.shapes}) ...")
            data = _data_signature(cell)
            start = time.perf_counter()
            try:
                self.cache[signature] = calibrate(cell, warm_up=data not in self.warm)
            except UserError as exc:
                self.cache[signature] = str(exc)
            self.warm.add(data)
            self.say(f"  {_describe(self.cache[signature], time.perf_counter() - start)}")
        return self.cache[signature]


def _data_signature(cell: Cell) -> str:
    data = {k: v for k, v in flatten(cell.cfg.to_dict()).items() if k == "data" or k.startswith("data.")}
    return repr((cell.cfg.task, sorted(data.items())))


def _describe(calibration: Calibration | str, took_s: float) -> str:
    """One short line (a narrow terminal wraps it): the rates that decide the estimate, and the time taken."""
    if isinstance(calibration, str):
        return f"failed: {calibration}"
    c = calibration
    if c.whole_epochs:
        return f"{_duration(c.step_s)}/epoch of the function, timed whole (took {_duration(took_s)})"
    return (f"{_duration(c.step_s)}/step x {c.batches_per_epoch} steps/epoch, evaluation {_duration(c.eval_s)}, "
            f"end {_duration(c.final_s)} (took {_duration(took_s)})")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


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
