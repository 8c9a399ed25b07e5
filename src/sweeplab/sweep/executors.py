"""Where cells run: local worker processes sharing the cores, or a Ray cluster (see `run_ray`).

Local: N spawned processes, each fed one cell at a time through its own pipe, so the parent always
knows which cell a worker holds. A worker that dies (killed, out of memory) fails its cell and is
replaced; the sweep carries on. Workers write to the store themselves (SQLite in WAL mode with a
busy timeout, or PostgreSQL), so nothing passes through the parent but the outcome.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import platform
import signal
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.store import Store, open_store
from sweeplab.store.artifacts import Artifacts
from sweeplab.sweep.board import Board
from sweeplab.sweep.worker import Job, Outcome, record_failure, run_job, worker_main
from sweeplab.tasks import plugins

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
        process = self.ctx.Process(target=worker_main, args=(child, self.store.url, self.threads, self.store.artifacts.root),
                                   daemon=True)
        # A Ctrl-C while the new interpreter imports would end it with a traceback before it can ignore SIGINT:
        # blocked here, the signal waits (the mask is inherited through exec) until the worker has set it aside.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
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
# Each cell is one Ray task. The task gets the cell, the store URL without its password, and the artifact
# root; it claims its run through the store's lease like any process, so a task Ray retries after its
# worker or node died takes the run over and resumes it from the last checkpoint in shared storage.
RAY_RETRIES = 3  # how often Ray runs a cell again whose worker or node died (each time resuming it)
HELD_POLL_S = 2.0  # a retried cell whose previous attempt still holds the lease waits this long between looks
PROBE_TIMEOUT_S = 60.0  # how long the nodes get to say whether they see the artifact folder
CONNECT_TIMEOUT_S = 5.0
PASSWORD_SOURCES = "$SWEEPLAB_STORE on each node, PGPASSWORD, ~/.pgpass, or a role without a password"


def check_ray(store_url: str, address: str | None = None, artifacts: str | None = None) -> None:
    """Before anything starts: a store every node reaches (PostgreSQL), Ray installed, a cluster that
    answers, and artifact storage every node of it sees. Leaves the driver connected to the cluster."""
    if not store_url.startswith(("postgresql://", "postgresql+")):
        raise UserError("--executor ray: needs a PostgreSQL store that every node can reach "
                        "(--store postgresql://USER@HOST/DB or $SWEEPLAB_STORE); a SQLite file is local to one machine")
    _check_password_not_on_command_line(store_url)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--executor ray: Ray is not installed here (pip install 'sweeplab[ray]'); "
                        "accepted executors without it: local") from None
    root = Artifacts(artifacts or os.environ.get("SWEEPLAB_ARTIFACTS") or "runs")
    if root.root.startswith("memory://"):
        raise UserError(f"--artifacts {root.root}: memory:// lives inside one process; with --executor ray use a "
                        "folder every node mounts or an object store (s3://bucket/prefix)")
    connect_ray(address)
    if not root.remote:
        _check_shared_folder(root.root)


def cluster_device() -> str:
    """What `device=auto` means on the connected Ray cluster: cuda when any of its nodes has a GPU."""
    import ray

    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def connect_ray(address: str | None) -> None:
    """Connect this driver to the cluster at `address` (default $RAY_ADDRESS, else the one `ray start` left)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if ray.is_initialized():
        if address == "auto" or address == ray.get_runtime_context().gcs_address:
            return
        ray.shutdown()  # connected elsewhere (a library caller's earlier sweep): this sweep names another cluster
    target = _ray_target(address)
    how = "start one with `ray start --head` (the README's cluster recipe), or pass --address HOST:6379 or ray://HOST:10001"
    if target is None:
        raise UserError(f"--address {address}: no running Ray cluster found on this machine; {how}")
    if not _answers(*target):
        raise UserError(f"--address {address}: no Ray cluster answers at {target[0]}:{target[1]}; {how}")
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING", configure_logging=True,
                 runtime_env=_runtime_env())
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address {address}: cannot connect to the Ray cluster ({_first_line(exc)}); {how}") from None


def _ray_target(address: str) -> tuple[str, int] | None:
    """(host, port) the driver will dial, to refuse an unreachable cluster at once (Ray itself retries for
    minutes); None when `auto` finds no cluster started on this machine."""
    if address == "auto":
        try:
            from ray._private.utils import read_ray_address  # where `ray start` writes the head's address

            address = read_ray_address() or ""
        except (ImportError, OSError):
            address = ""
        if not address:
            return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto, HOST:PORT (the head's GCS port, 6379 by default) "
                        "or ray://HOST:10001 (Ray Client)")
    return host.strip("[]"), int(port)


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _runtime_env() -> dict[str, Any]:
    """What every task's process gets from the driver: the lease length, which must be the same cluster-wide.
    Nothing secret: Ray shows a job's runtime environment in its dashboard."""
    lease = os.environ.get("SWEEPLAB_LEASE_S")
    return {"env_vars": {"SWEEPLAB_LEASE_S": lease}} if lease else {}


def _check_password_not_on_command_line(store_url: str) -> None:
    """Ray's dashboard lists each driver's command line: a password there would be shown to all who open it."""
    import sys

    password = _password(store_url)
    if password and any(password in arg for arg in sys.argv[1:]):
        raise UserError("--store: with --executor ray, keep the password off the command line (Ray's dashboard shows "
                        "the driver's command); put the URL in $SWEEPLAB_STORE, or the password in PGPASSWORD or "
                        "~/.pgpass, and pass --store postgresql://USER@HOST/DB")


def _check_shared_folder(root: str) -> None:
    """A folder works for a cluster only if every node sees it at the same path: each node is asked to read a
    file the driver has just written there."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    token = uuid.uuid4().hex
    marker = Path(root) / f".sweeplab-probe-{token}"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        _write_marker(marker, token)
    except OSError as exc:
        raise UserError(f"--artifacts {root}: cannot write there ({exc.strerror}); expected a folder every node "
                        "mounts, writable by this user") from None
    try:
        blind = _nodes_not_seeing(nodes, str(marker), token)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        ray.shutdown()
        raise UserError(f"--artifacts {root}: a folder only this machine sees, but the Ray cluster has {len(nodes)} "
                        f"nodes and {', '.join(blind)} cannot read it; pass a folder every node mounts at the same path "
                        "(NFS) or an object store URL (--artifacts s3://bucket/prefix)")


def _write_marker(marker: Path, token: str) -> None:
    marker.write_text(token)


def _nodes_not_seeing(nodes: list[dict[str, Any]], marker: str, token: str) -> list[str]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(_reads_marker)
    refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(marker, token): n for n in nodes}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    blind = []
    for ref, node in refs.items():
        try:
            sees = ref in ready and ray.get(ref)
        except ray.exceptions.TaskUnschedulableError:  # the node left the cluster since ray.nodes(): it runs no cell
            continue
        if not sees:
            blind.append(f"node {node['NodeManagerAddress']}")
    return blind


def _reads_marker(marker: str, token: str) -> bool:
    try:
        return Path(marker).read_text() == token
    except OSError:
        return False


def _password(url: str) -> str | None:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).password
    except Exception:  # noqa: BLE001 - a malformed URL: the store itself reports it when opened
        return None


def url_without_password(url: str) -> str:
    """What travels with a task: the store's address, never its password."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url)  # (URL.set(password=None) would keep the password: None means "unchanged")
    return sa.engine.URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query) \
        .render_as_string(hide_password=False)


def worker_store_url(plain_url: str) -> str:
    """The store URL a task opens: this node's $SWEEPLAB_STORE when it names the same database (it may
    carry the password), else the plain URL (libpq then reads PGPASSWORD or ~/.pgpass)."""
    local = os.environ.get("SWEEPLAB_STORE")
    if local and local.startswith("postgresql") and url_without_password(local) == plain_url:
        return local
    return plain_url


def ray_cell(index: int, job_blob: bytes, store_url: str, artifacts: str, threads: int) -> Outcome:
    """One cell on a Ray worker. A retried cell whose previous attempt still holds the run (its node died
    but its lease has not run out yet) waits for the lease and then takes the run over.

    The job arrives pickled by the driver and is read here, once the node's registries hold the users' plugins
    ($SWEEPLAB_PLUGINS, from the task's runtime environment): its config refers to their classes by module
    name, a name that holds the source's hash, so a node whose copy of a plugin differs cannot read it."""
    import torch

    failed = functools.partial(Outcome, index, "failed", None, wall_s=0.0, user_error=True, pid=os.getpid())
    try:
        import sweeplab.tasks  # noqa: F401 - fills the registries, the plugins' included
        job = pickle.loads(job_blob)
    except (UserError, ImportError, AttributeError) as exc:
        return failed(error=f"node {platform.node()} cannot load the cell's plugins as the driver has them "
                            f"({_first_line(exc)}); every node needs the same files at the same paths "
                            f"({plugins.environment()})")
    torch.set_num_threads(threads)
    try:
        store = open_store(worker_store_url(store_url), artifacts)
    except UserError as exc:
        return failed(error=f"{exc} (a Ray worker reads the store password from {PASSWORD_SOURCES}; it never "
                            "travels with a task)")
    while True:
        outcome = run_job(job, store)
        if outcome.status != "running":
            return outcome
        time.sleep(HELD_POLL_S)


def run_ray(jobs: list[Job], store: Store, board: Board, *, address: str | None = None, threads: int = 1) -> list[Outcome]:
    """Submit every cell as a Ray task (`num_cpus` = its threads, a GPU for CUDA runs) and collect them as
    they end; the board reads each cell's state from the store. Ctrl-C cancels the tasks: each running
    cell ends `interrupted`, resumable by the same command."""
    import ray

    connect_ray(address)
    futures = _submit(jobs, store, threads)
    outcomes: list[Outcome] = []
    try:
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=len(futures), timeout=1.0)
            for ref in ready:
                outcome = _settle(store, futures.pop(ref), ref)
                outcomes.append(outcome)
                board.finished(outcome)
            _show_running(board, store, futures.values())
            board.tick()
    except KeyboardInterrupt:
        _cancel(futures)
        raise
    return outcomes


def _submit(jobs: list[Job], store: Store, threads: int) -> dict[Any, Job]:
    import ray

    task = ray.remote(ray_cell)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    plain_url = url_without_password(store.url)
    gpus = [_gpus(job, cluster_gpus) for job in jobs]  # every cell checked before the first is submitted
    futures = {}
    passed = plugins.environment()
    plugins_env = {"runtime_env": {"env_vars": {**_runtime_env().get("env_vars", {}), **passed}}} if passed else {}
    for job, num_gpus in zip(jobs, gpus, strict=True):
        options = dict(num_cpus=threads, num_gpus=num_gpus, max_retries=RAY_RETRIES, retry_exceptions=False,
                       name=f"sweeplab {job.name}", **plugins_env)
        futures[task.options(**options).remote(job.index, pickle.dumps(job), plain_url, store.artifacts.root,
                                               threads)] = job
    return futures


def _gpus(job: Job, cluster_gpus: float) -> int:
    """A GPU (one per DDP process) for a run that resolved to CUDA: `cuda`, or `auto` on a cluster with GPUs."""
    device = job.cfg.device
    if device.startswith("cuda") and cluster_gpus == 0:
        raise UserError(f"device={device}: cell {job.cell!r} needs a GPU but the Ray cluster has none; "
                        "accepted here: device=cpu or device=auto")
    return max(1, job.cfg.train.nproc) if device.startswith("cuda") else 0


def _settle(store: Store, job: Job, ref: Any) -> Outcome:
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - its worker or node died more often than Ray retries, or it was cancelled
        error = f"the Ray task ended without a result ({type(exc).__name__}: {_first_line(exc)})"
    row = store.find_by_key(_key(job))
    run_id = row.id if row else None
    if row is None or (row.status == "running" and store.holder(row) is None):  # nobody trains it since
        run_id = record_failure(store, job, error)
    return Outcome(job.index, "failed", run_id, error, 0.0)


def _show_running(board: Board, store: Store, pending: Iterable[Job]) -> None:
    """Queued cells whose run a worker has claimed show as running (with progress, by board.tick)."""
    waiting = {_key(j): j for j in pending if board.states[j.index].status == "queued"}
    if not waiting:
        return
    for row in store.list_runs(status="running"):
        if row.key in waiting and row.owner:
            board.started(waiting[row.key].index)


def _cancel(futures: dict[Any, Job]) -> None:
    """Ctrl-C: queued cells are dropped; running ones get KeyboardInterrupt (they checkpoint and end
    `interrupted`) and STOP_GRACE_S to do so, since the driver's exit would kill its tasks."""
    import ray

    for ref in futures:
        ray.cancel(ref, force=False)
    try:
        ray.wait(list(futures), num_returns=len(futures), timeout=STOP_GRACE_S)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
