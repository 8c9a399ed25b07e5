"""What a sweep worker does with one cell: `execute` it, quietly, and say how it ended.

The same `run_job` serves local worker processes (`worker_main`, fed through a pipe) and Ray tasks.
"""
from __future__ import annotations

import functools
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sweeplab.config import RunConfig, run_key
from sweeplab.errors import UserError
from sweeplab.store import Store, open_store
from sweeplab.store.db import LeaseLost


@dataclass(frozen=True)
class Job:
    index: int  # position of the cell in the sweep
    cfg: RunConfig
    name: str  # run name
    sweep: str
    cell: str
    note: str | None
    retry_failed: bool


@dataclass(frozen=True)
class Outcome:
    index: int
    status: str  # finished diverged interrupted failed
    run_id: str | None
    error: str | None
    wall_s: float  # build + train + final evaluation, as the worker measured it
    user_error: bool = False  # failed on input a user can fix (e.g. a dataset that is absent)
    pid: int = 0  # the worker process that ran the cell


def run_job(job: Job, store: Store) -> Outcome:
    """Train one cell. Errors end the cell (status failed, reason stored), never the worker."""
    from sweeplab.engine.runner import RunHeld, RunOptions, execute

    start = time.perf_counter()
    opts = RunOptions(name=job.name, retry_failed=job.retry_failed, sweep=job.sweep, cell=job.cell, note=job.note,
                      quiet=True)
    ended = functools.partial(Outcome, job.index, pid=os.getpid())
    try:
        result = execute(job.cfg, store, opts)
        return ended(result.status, result.run_id, None, time.perf_counter() - start)
    except (RunHeld, LeaseLost) as exc:  # another process trains it: its run, not this cell's failure
        row = store.find_by_key(run_key(job.cfg))
        return ended("running", row.id if row else None, str(exc), time.perf_counter() - start)
    except UserError as exc:  # e.g. a dataset that is not there: stored, so the report can say why the cell is empty
        run_id = record_failure(store, job, str(exc), user_error=True)
        return ended("failed", run_id, str(exc), time.perf_counter() - start, user_error=True)
    except Exception as exc:  # noqa: BLE001 - an internal error ends this cell; execute marked the run failed
        error = f"{type(exc).__name__}: {exc}"
        run_id = record_failure(store, job, error, traceback.format_exc())
        return ended("failed", run_id, error, time.perf_counter() - start)


def record_failure(store: Store, job: Job, error: str, trace: str | None = None, *, user_error: bool = False) -> str:
    """Mark the cell's run failed (creating the row if the run never started) and keep the traceback.
    `env.user_error` remembers whether the user can fix the cause (a later sweep's exit code says so)."""
    from sweeplab.engine.runner import default_name

    row = store.find_by_key(run_key(job.cfg))
    env = {**(row.env if row else {"pid": os.getpid()}), "user_error": user_error}
    if row is None:
        run_id = store.create_run(key=run_key(job.cfg), name=job.name or default_name(job.cfg), task=job.cfg.task,
                                  config=job.cfg.to_dict(), env=env, status="failed", sweep=job.sweep,
                                  cell=job.cell, note=job.note)
    else:
        run_id = row.id
    store.update_run(run_id, status="failed", error=error, ended_at=time.time(), env=env, owner=None)
    if trace:
        run_dir = store.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "traceback.txt").write_text(trace)
        store.push_artifacts(run_id)
    return run_id


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose.

    Spinning threads wait for CPU time that other processes on the same cores hold: on 2 loaded cores the
    engine's sequence steps ran 6-13x slower with 2 threads than with 1 under OpenMP's default; passive, 2
    threads were as fast as 1 (benchmarks/RESULTS.md, "Sweep workers", with its command). OpenMP reads it
    once, as torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def worker_main(conn: Connection, store_url: str, threads: int, artifacts: str | None = None) -> None:
    """A local worker process: set its share of the cores, then train the cells the parent sends."""
    quiet_openmp()  # before torch loads OpenMP, which reads its settings once
    import torch

    import sweeplab.tasks  # noqa: F401 - fills the registries before the first cell arrives

    # Ctrl-C reaches every process of the terminal; the parent alone decides, and stops workers with
    # SIGTERM, which `execute` turns into a clean `interrupted` (resumable) run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)  # N workers x (cores // N) threads: no oversubscription
    store = open_store(store_url, artifacts)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        conn.send(run_job(job, store))
