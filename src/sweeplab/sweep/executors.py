"""Where cells run: local worker processes sharing the cores, or a Ray cluster.

Local: N spawned processes, each fed one cell at a time through its own pipe, so the parent always
knows which cell a worker holds. A worker that dies (killed, out of memory) fails its cell and is
replaced; the sweep carries on. Workers write to the store themselves (SQLite in WAL mode with a
busy timeout, or PostgreSQL), so nothing passes through the parent but the outcome.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from sweeplab.errors import UserError
from sweeplab.store import Store, open_store
from sweeplab.sweep.board import Board
from sweeplab.sweep.worker import Job, Outcome, record_failure, run_job, worker_main

STOP_GRACE_S = 60.0  # after Ctrl-C: how long interrupted workers get to checkpoint their state and report


@dataclass
class Worker:
    process: Any  # multiprocessing.Process
    conn: Connection
    job: Job | None = None


class LocalPool:
    def __init__(self, store: Store, workers: int, threads: int, board: Board):
        self.store, self.size, self.threads, self.board = store, workers, threads, board
        self.ctx = mp.get_context("spawn")  # a fresh interpreter: no torch thread pool inherited through fork
        self.workers: list[Worker] = []
        self.outcomes: list[Outcome] = []

    def run(self, jobs: list[Job]) -> list[Outcome]:
        pending = deque(jobs)
        previous = _sigterm_as_interrupt()
        try:
            while pending or self._busy():
                self._top_up(len(pending))
                for worker in list(self.workers):
                    if worker.job is None and pending:
                        self._give(worker, pending)
                self._collect(timeout=0.5)
                self.board.tick()
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            self._shutdown()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.outcomes

    # -- workers --------------------------------------------------------------------------------
    def _spawn(self) -> Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=worker_main, args=(child, self.store.url, self.threads), daemon=True)
        process.start()
        child.close()
        return Worker(process, parent)

    def _top_up(self, pending: int) -> None:
        """Start workers up to the pool size, but no more than there are cells waiting."""
        idle = sum(1 for w in self.workers if w.job is None)
        while len(self.workers) < self.size and pending > idle:
            self.workers.append(self._spawn())
            idle += 1

    def _give(self, worker: Worker, pending: deque[Job]) -> None:
        job = pending.popleft()
        try:
            worker.conn.send(job)
        except (BrokenPipeError, OSError):  # an idle worker that died: the cell waits for another
            pending.appendleft(job)
            self.workers.remove(worker)
            return
        worker.job = job
        self.board.started(job.index)

    def _busy(self) -> list[Worker]:
        return [w for w in self.workers if w.job is not None]

    def _collect(self, timeout: float) -> None:
        busy = self._busy()
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout)
        for worker in busy:
            if worker.conn in ready or worker.process.sentinel in ready:
                self._settle(worker)

    def _settle(self, worker: Worker) -> None:
        """A worker answered or died: record its cell's outcome; replace a dead worker."""
        job = worker.job
        assert job is not None
        try:
            outcome = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            outcome = None
        if outcome is None:
            worker.process.join(5)
            if worker.process.is_alive():
                return  # the pipe woke us but the worker is still at work
            outcome = self._crashed(job, worker.process.exitcode)
            self.workers.remove(worker)  # _top_up starts a new one if cells are still waiting
        else:
            worker.job = None
        self.outcomes.append(outcome)
        self.board.finished(outcome)

    def _crashed(self, job: Job, exitcode: int | None) -> Outcome:
        how = _exit_text(exitcode)
        error = f"worker process died ({how}) while training this cell"
        row = self.store.find_by_key(_key(job))
        run_id = row.id if row else None
        if row is None or (row.status == "running" and self.store.holder(row) is None):  # not taken over since
            run_id = record_failure(self.store, job, error)
        return Outcome(job.index, "failed", run_id, error, 0.0)

    def _interrupt(self) -> None:
        """Ctrl-C: every busy worker gets SIGTERM (its run ends `interrupted`, resumable) and a grace period."""
        for worker in self._busy():
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        while self._busy() and time.time() < deadline:
            try:
                self._collect(timeout=0.5)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                break

    def _shutdown(self) -> None:
        for worker in self.workers:
            if worker.job is None and worker.process.is_alive():
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for worker in self.workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(5)


def _sigterm_as_interrupt() -> Any:
    """`kill SWEEP_PID` stops the sweep as Ctrl-C does: workers are told, their runs end `interrupted`."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a sweep run from a library's thread)
        return None


def _key(job: Job) -> str:
    from sweeplab.config import run_key

    return run_key(job.cfg)


def _exit_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def run_local(jobs: list[Job], store: Store, workers: int, threads: int, board: Board) -> list[Outcome]:
    return LocalPool(store, workers, threads, board).run(jobs)


# --------------------------------------------------------------------------------------------- Ray
def check_ray(store_url: str) -> None:
    """`--executor ray` needs Ray and a store every node can reach (PostgreSQL, not a local SQLite file)."""
    if not store_url.startswith(("postgresql://", "postgresql+")):
        raise UserError("--executor ray: needs a PostgreSQL store that every node can reach "
                        "(--store postgresql://USER@HOST/DB or $SWEEPLAB_STORE); a SQLite file is local to one machine")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--executor ray: Ray is not installed here (pip install 'sweeplab[ray]'); "
                        "accepted executors without it: local") from None


def _ray_job(job: Job, store_url: str) -> Outcome:
    return run_job(job, open_store(store_url))


def run_ray(jobs: list[Job], store: Store, board: Board) -> list[Outcome]:
    """Submit every cell as a Ray task (Ray schedules them on the cluster's resources); collect as they end.

    Not exercised by the test suite (Ray is not installed where it runs)."""
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(_ray_job)
    futures = {}
    for job in jobs:
        gpus = 1 if job.cfg.device.startswith("cuda") else 0
        futures[remote.options(num_gpus=gpus).remote(job, store.url)] = job
        board.started(job.index, status="submitted")
    outcomes = []
    while futures:
        done, _ = ray.wait(list(futures), num_returns=1, timeout=1.0)
        for ref in done:
            job = futures.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the task or its node died: this cell fails, the sweep goes on
                error = f"Ray task failed: {type(exc).__name__}: {exc}"
                outcome = Outcome(job.index, "failed", record_failure(store, job, error), error, 0.0)
            outcomes.append(outcome)
            board.finished(outcome)
        board.tick()
    return outcomes
