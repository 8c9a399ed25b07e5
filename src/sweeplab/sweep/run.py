"""`sweeplab sweep`: expand an experiment file into cells, skip what the store already holds, plan
(with `--budget`), and train the rest on local workers or Ray, showing every cell's state.

Resumable by construction: a cell is its run key. Finished (and diverged) keys are skipped, an
interrupted or orphaned `running` key continues from its last checkpoint, a failed one only with
`--retry-failed`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweeplab.engine import distributed
from sweeplab.errors import UserError
from sweeplab.experiment import Experiment
from sweeplab.store import RunRow, Store, open_store
from sweeplab.store.db import FINAL_STATUSES, redact
from sweeplab.sweep.board import Board
from sweeplab.sweep.executors import check_ray, cluster_device, run_local, run_ray
from sweeplab.sweep.expand import Cell, expand, load_experiment, pick_scale
from sweeplab.sweep.planner import Plan, make_plan, parse_budget, threads_per_worker
from sweeplab.sweep.worker import Job, Outcome

EXECUTORS = ("local", "ray")


@dataclass
class SweepOptions:
    scale: str | None = None  # default: quick when the file has it
    workers: int = 1
    executor: str = "local"
    budget: str | None = None  # e.g. "20m"
    plan_only: bool = False
    store_url: str | None = None
    artifacts: str | None = None  # artifact root URI (default $SWEEPLAB_ARTIFACTS, else beside the store / ./runs)
    address: str | None = None  # Ray cluster address (default $RAY_ADDRESS, else the cluster `ray start` began here)
    retry_failed: bool = False
    wait: bool = False  # cells other processes train: wait for them to end instead of leaving them to those
    overrides: dict[str, Any] = field(default_factory=dict)  # KEY=VALUE from the command line
    max_cells: int | None = None  # caps above sweeplab.limits' (default $SWEEPLAB_MAX_CELLS, else 10,000)
    max_seeds: int | None = None  # (default $SWEEPLAB_MAX_SEEDS, else 100)
    interactive: bool | None = None  # live table; default: when stderr is a terminal


@dataclass
class SweepResult:
    name: str
    cells: list[Cell]
    statuses: list[str]  # final status per cell
    outcomes: list[Outcome]  # cells trained by this invocation
    plan: Plan | None
    user_errors: int = 0  # failures a user can fix (e.g. a dataset that is absent)

    @property
    def failed(self) -> int:
        return self.statuses.count("failed")

    @property
    def elsewhere(self) -> int:
        """Cells still trained by other processes at the end (without --wait): not finished yet."""
        return sum(1 for s in self.statuses if s not in (*FINAL_STATUSES, "failed", "interrupted"))


def run_sweep(path: str | Path, opts: SweepOptions, console: Console | None = None) -> SweepResult:
    console = console or Console()
    where = str(path)
    experiment = load_experiment(path, opts.max_cells, opts.max_seeds)  # validates the file, resolves every cell
    scale = pick_scale(experiment, opts.scale, where)
    _check_options(opts)
    # device=auto means what the machines that train have: on a Ray cluster, its GPUs (asked of the cluster).
    auto_device = cluster_device() if opts.executor == "ray" else None
    cells = expand(experiment, scale, opts.overrides, where, auto_device)
    store = open_store(opts.store_url, opts.artifacts)
    if not opts.plan_only:
        store.artifacts.check(write=True)  # before the first cell: one line, not a failed row per cell
    threads = threads_per_worker(opts.workers)
    plan = None
    if opts.budget is not None or opts.plan_only:
        plan = _plan(store, experiment, cells, scale, opts, threads, console)
        cells = plan.apply(cells, where)
    store.save_sweep(experiment.name, experiment.task, sweep_spec(experiment, where, scale, cells, plan, opts), scale)
    if opts.plan_only:
        print_plan(plan, cells, console)
        return SweepResult(experiment.name, cells, ["planned"] * len(cells), [], plan)
    return _train(store, experiment, cells, scale, plan, opts, threads)


def _check_options(opts: SweepOptions) -> None:
    if distributed.current().active:
        raise UserError("WORLD_SIZE is set (torchrun?): a sweep starts its cells itself, one process group each; "
                        "run `sweeplab sweep` once, with train.nproc=N for DDP cells")
    if opts.executor not in EXECUTORS:
        raise UserError(f"--executor: {opts.executor!r} is not accepted; accepted: {', '.join(EXECUTORS)}")
    if opts.workers < 1:
        raise UserError(f"--workers: {opts.workers} must be at least 1")
    if opts.budget is not None:
        parse_budget(opts.budget)
    if opts.executor == "ray":
        check_ray(opts.store_url or os.environ.get("SWEEPLAB_STORE") or "sqlite:///", opts.address, opts.artifacts)
    if "seed" in opts.overrides:
        raise UserError("seed: a sweep's seeds come from the experiment file's `seeds:` (n or a list)")


# --------------------------------------------------------------------------------------- planning
def _plan(store: Store, experiment: Experiment, cells: list[Cell], scale: str | None, opts: SweepOptions,
          threads: int, console: Console) -> Plan:
    """The stored plan when it stands for the same cells and settings (keys stay stable); else a new one."""
    budget_s = parse_budget(opts.budget) if opts.budget is not None else None
    stored = store.get_sweep(experiment.name)
    if stored and stored["spec"].get("plan"):
        plan = Plan.from_dict(stored["spec"]["plan"])
        if plan.matches(cells, budget_s, opts.workers, scale, opts.overrides):
            console.print(f"plan: the stored plan for {experiment.name} (same cells, budget and workers)", markup=False)
            return plan
    done = {c.key for c in cells if (row := store.find_by_key(c.key)) and row.status in FINAL_STATUSES}
    return make_plan(cells, done, budget=opts.budget, workers=opts.workers, threads=threads, scale=scale,
                     overrides=opts.overrides, say=lambda text: console.print(text, style="dim", markup=False))


def print_plan(plan: Plan, cells: list[Cell], console: Console) -> None:
    table = Table("cell", "seed", "planned", "estimate", "full run", title=f"plan ({plan.workers} worker(s))",
                  title_justify="left")
    for cp in plan.cells:
        if cp.done:
            table.add_row(escape(cp.label), str(cp.seed), "finished (stored)", "", "")  # labels are the user's text
        elif cp.error:
            table.add_row(escape(cp.label), str(cp.seed), f"[red]cannot run: {escape(cp.error)}[/]", "", "")
        else:
            table.add_row(escape(cp.label), str(cp.seed), f"{cp.chosen} of {cp.full} {cp.unit}", _seconds(cp.est_s),
                          _seconds(cp.est_full_s))
    console.print(table)
    budget = f" (budget {plan.budget} = {_seconds(plan.budget_s)})" if plan.budget else ""
    console.print(f"estimate: {_seconds(plan.makespan_s)} with {plan.workers} worker(s){budget}; "
                  f"{_seconds(plan.work_s)} of training in all; calibration took {_seconds(plan.calibration_s)}")
    if not plan.fits:
        console.print("[yellow]the budget is too small for even 1 epoch/step per cell: the plan above needs "
                      f"{_seconds(plan.makespan_s)}[/]")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}m{seconds:04.1f}s" if minutes else f"{seconds:.1f}s"


def sweep_spec(experiment: Experiment, where: str, scale: str | None, cells: list[Cell], plan: Plan | None,
               opts: SweepOptions) -> dict[str, Any]:
    """What the store keeps of a sweep: the experiment as loaded, plus what this invocation ran.

    `cells` lists each (label, seed) with its run key, so a report can tell this scale's runs from
    runs of another scale or budget stored under the same sweep name."""
    scale_spec = experiment.scales.get(scale) if scale else None
    return {**experiment.model_dump(mode="json"), "file": where, "scale": scale,
            "scale_note": scale_spec.note if scale_spec else None, "overrides": opts.overrides,
            "plan": plan.to_dict() if plan else None,
            "cells": [{"label": c.label, "seed": c.seed, "key": c.key, "note": c.note} for c in cells]}


# --------------------------------------------------------------------------------------- training
def _train(store: Store, experiment: Experiment, cells: list[Cell], scale: str | None, plan: Plan | None,
           opts: SweepOptions, threads: int) -> SweepResult:
    first = experiment.columns[0]
    board = Board(cells, store, (first.title, first.metric), interactive=opts.interactive)
    jobs, skipped = [], []
    for index, cell in enumerate(cells):
        row = store.find_by_key(cell.key)
        reason = _skip_reason(store, row, opts.retry_failed, opts.wait)
        if row and row.sweep in (None, experiment.name) and (row.sweep, row.cell) != (experiment.name, cell.label):
            store.update_run(row.id, sweep=experiment.name, cell=cell.label)  # adopt a matching standalone run
        if reason:
            skipped.append((index, row, reason))
        else:
            jobs.append(Job(index, cell.cfg, f"{experiment.name}/{cell.label}/{cell.seed}", experiment.name,
                            cell.label, cell.note, opts.retry_failed, opts.wait))
    _say_start(board, experiment, scale, jobs, opts, threads, store)
    for index, row, reason in skipped:
        board.skipped(index, row.status, row.id, reason if row.status not in FINAL_STATUSES else None)
    with board:
        if opts.executor == "ray":
            outcomes = run_ray(jobs, store, board, address=opts.address)
        else:
            outcomes = run_local(jobs, store, opts.workers, threads, board) if jobs else []
    user_errors = sum(1 for o in outcomes if o.user_error)
    user_errors += sum(1 for _, row, _ in skipped if row.status == "failed" and row.env.get("user_error"))
    return SweepResult(experiment.name, cells, [s.status for s in board.states], outcomes, plan, user_errors)


def _skip_reason(store: Store, row: RunRow | None, retry_failed: bool, wait: bool = False) -> str | None:
    if row is None:
        return None
    if row.status in FINAL_STATUSES:
        return row.status
    if row.status == "failed" and not retry_failed:
        return f"failed before: {row.error or 'no reason stored'} (--retry-failed runs it again)"
    if not wait and (holder := store.holder(row)):  # another sweep or `run` trains it; a dead owner's run resumes here
        return f"being trained by {holder} (--wait waits for it)"
    return None


def _say_start(board: Board, experiment: Experiment, scale: str | None, jobs: list[Job], opts: SweepOptions,
               threads: int, store: Store) -> None:
    stored = len(board.states) - len(jobs)
    where = f"{opts.workers} local worker(s), {threads} thread(s) each" if opts.executor == "local" else "Ray"
    board.console.print(f"sweep {experiment.name}" + (f" (scale {scale})" if scale else "") +
                        f": {len(board.states)} cells, {stored} already stored, {len(jobs)} to run on {where}; "
                        f"store {redact(store.url)}", markup=False)
