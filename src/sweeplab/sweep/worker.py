"""What a sweep worker does with one cell: `execute` it, quietly, and say how it ended.

The same `run_job` serves local worker processes (`worker_main`, fed through a pipe) and Ray tasks.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sweeplab.config import RunConfig, run_key
from sweeplab.errors import UserError, no_space_message
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
    wait: bool = False  # a cell another process trains: wait for it to end (taking it over if its owner dies)


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
    from sweeplab.engine.launch import execute
    from sweeplab.engine.runner import RunHeld, RunOptions

    start = time.perf_counter()
    opts = RunOptions(name=job.name, retry_failed=job.retry_failed, sweep=job.sweep, cell=job.cell, note=job.note,
                      quiet=True, wait=job.wait)
    ended = functools.partial(Outcome, job.index, pid=os.getpid())
    try:
        check_plugins(job.cfg)
        result = execute(job.cfg, store, opts)
        return ended(result.status, result.run_id, None, time.perf_counter() - start)
    except (RunHeld, LeaseLost) as exc:  # another process trains it: its run, not this cell's failure
        row = store.find_by_key(run_key(job.cfg))
        return ended("running", row.id if row else None, str(exc), time.perf_counter() - start)
    except UserError as exc:  # e.g. a dataset that is not there: stored, so the report can say why the cell is empty
        run_id = record_failure(store, job, str(exc), user_error=True)
        return ended("failed", run_id, str(exc), time.perf_counter() - start, user_error=True)
    except Exception as exc:  # noqa: BLE001 - an internal error ends this cell; execute marked the run failed
        if full := no_space_message(exc):  # the user's to fix (free space, raise a quota); then --retry-failed
            return ended("failed", record_failure(store, job, full, user_error=True), full,
                         time.perf_counter() - start, user_error=True)
        error = f"{type(exc).__name__}: {exc}"
        run_id = record_failure(store, job, error, traceback.format_exc())
        return ended("failed", run_id, error, time.perf_counter() - start)


def check_plugins(cfg: RunConfig) -> None:
    """The users' code this process loaded is the code the cell's key was made with: a plugin edited while its
    sweep runs (a worker started after the edit, a node with another copy) fails the cell in one line instead of
    training the new code under the old key."""
    from sweeplab.tasks import plugins  # torch: not at this module's import (see quiet_openmp)

    here = {p.path: p.sha256 for p in plugins.loaded()}
    for name, path, sha256 in cfg.plugins:
        if here.get(path, sha256) != sha256:
            raise UserError(f"plugin {name} ({path}) changed since the sweep started (sha256 {sha256[:12]}… then, "
                            f"{here[path][:12]}… now); run the sweep again to train the new code")


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
        from sweeplab.io import write_bytes  # torch: not at this module's import (see quiet_openmp)

        try:
            write_bytes(store.run_dir(run_id) / "traceback.txt", trace.encode("utf8"))
            store.push_artifacts(run_id)
        except OSError:  # the row says why the cell failed; the traceback is a courtesy
            pass
    return run_id


def quiet_openmp() -> None:
    """Idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose.

    Spinning threads wait for CPU time that other processes on the same cores hold: on 2 loaded cores the
    engine's sequence steps ran 6-13x slower with 2 threads than with 1 under OpenMP's default; passive, 2
    threads were as fast as 1 (benchmarks/RESULTS.md, "Sweep workers", with its command). OpenMP reads it
    once, as torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def end_with_parent() -> None:
    """When the process that started this one dies (even by SIGKILL), this one gets SIGTERM: it checkpoints
    and ends `interrupted` instead of training on for nobody (Linux's PR_SET_PDEATHSIG; elsewhere the pipe's
    end stops an idle worker)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_main(conn: Connection, store_url: str, threads: int, artifacts: str | None = None) -> None:
    """A local worker process: set its share of the cores, then train the cells the parent sends."""
    quiet_openmp()  # before torch loads OpenMP, which reads its settings once
    import torch

    import sweeplab.tasks  # noqa: F401 - fills the registries before the first cell arrives

    # Ctrl-C reaches every process of the terminal; the parent alone decides, and stops workers with
    # SIGTERM, which `execute` turns into a clean `interrupted` (resumable) run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent while it started us
    signal.signal(signal.SIGTERM, _interrupt)  # also while a cell is set up, before training takes it over
    end_with_parent()
    torch.set_num_threads(threads)  # N workers x (cores // N) threads: no oversubscription
    store = open_store(store_url, artifacts)
    try:
        while (job := _next_job(conn)) is not None:
            conn.send(run_job(job, store))
    except KeyboardInterrupt:  # stopped: the cell's run is on record as interrupted, resumable
        return


def _next_job(conn: Connection) -> Job | None:
    try:
        return conn.recv()
    except EOFError:  # the parent is gone
        return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
