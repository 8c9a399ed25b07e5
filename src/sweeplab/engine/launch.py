"""Starting the ranks of one DDP run on this machine (`train.nproc=N`), with torch.distributed.run's machinery.

`execute` is how a command runs one config: in this process (engine/runner.py), or, when it asks for more
than one process and none was started by a launcher, on N local ranks that `launch` starts.
`launch` runs torchelastic's agent (what `torchrun` runs), which starts the N ranks as
`python -m sweeplab.engine.launch JOB` (plain subprocesses, so a daemonic sweep worker can start them too),
gives each the variables torchrun gives (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), watches
them, and stops the others when one fails instead of leaving them waiting in a collective. The job (config,
store URL, options) is a file only this user can read: the store URL may hold a password, never put on a
command line. Each rank runs `execute` (engine/runner.py), which joins the group (engine/distributed.py).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from sweeplab.config import RunConfig, flatten, run_key
from sweeplab.engine import distributed, runner
from sweeplab.engine.runner import RunHeld, RunOptions, RunResult, done_already, sigterm_as_interrupt, stored_result
from sweeplab.errors import UserError
from sweeplab.store import Store, open_store
from sweeplab.store.db import FINAL_STATUSES
from sweeplab.tasks import resolve

SHUTDOWN_GRACE_S = 30  # after Ctrl-C or SIGTERM: how long the ranks get to checkpoint before SIGKILL


def execute(cfg: RunConfig, store: Store, opts: RunOptions | None = None) -> RunResult:
    """Run `cfg` to the end (or resume it): in this process, or on `train.nproc` local ranks when it asks for
    more than one and no launcher started this process (under torchrun each rank runs it here)."""
    opts = opts or RunOptions()
    if cfg.train.nproc > 1 and not distributed.current().active and not opts.dry_run:
        distributed.check_request(cfg.device, cfg.train.nproc, cfg.train.batch_size)
        return _execute_ddp(cfg, store, opts)
    return runner.execute(cfg, store, opts)


def _execute_ddp(cfg: RunConfig, store: Store, opts: RunOptions) -> RunResult:
    """Start the ranks and wait; the run's row, written by rank 0, tells how it ended."""
    existing = store.find_by_key(run_key(cfg))
    if done_already(existing, opts):
        return stored_result(store, existing)
    if existing and (holder := store.holder(existing)) and not opts.wait:
        raise RunHeld(f"run {existing.id} ({existing.name}) is being trained by {holder}; --wait waits for it to end")
    interrupted = False
    try:
        with sigterm_as_interrupt():
            outcome = launch(cfg.to_dict(), store.url, asdict(opts), cfg.train.nproc)
    except KeyboardInterrupt:
        outcome, interrupted = {}, True
    row = store.find_by_key(run_key(cfg))
    if "error" in outcome:
        if row and row.status not in FINAL_STATUSES:
            store.update_run(row.id, status="failed", error=outcome["error"], ended_at=time.time())
        raise (UserError if outcome["user_error"] else RuntimeError)(outcome["error"])
    if row is None:
        raise RuntimeError("the DDP ranks ended without creating the run")
    if row.status == "running":  # rank 0 was stopped before it could say so
        store.update_run(row.id, status="interrupted" if interrupted else "failed", ended_at=time.time(),
                         error="DDP ranks stopped", owner=None)
        row = store.get_run(row.id)
    return stored_result(store, row)


def launch(config: dict[str, Any], store_url: str, options: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Run one config on `nproc` local ranks; returns rank 0's outcome ({"status"} or {"error", "user_error"}).

    Ctrl-C or SIGTERM reaches the agent, which passes it to every rank (each ends `interrupted`, resumable),
    and is raised here as KeyboardInterrupt."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # its own failure reports: ours say it
    with tempfile.TemporaryDirectory(prefix="sweeplab-ddp-") as tmp:
        job_file = Path(tmp) / "job.json"
        outcomes = [Path(tmp) / f"rank{r}.json" for r in range(nproc)]
        job = {"config": config, "store": store_url, "options": options, "outcomes": [str(p) for p in outcomes]}
        job_file.touch(mode=0o600)
        job_file.write_text(json.dumps(job))
        launch_config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"sweeplab-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", local_addr="127.0.0.1",
            max_restarts=0, monitor_interval=0.2, logs_specs=DefaultLogsSpecs(log_dir=str(Path(tmp) / "logs")),
            shutdown_timeout=SHUTDOWN_GRACE_S)
        handlers = {sig: signal.getsignal(sig) for sig in _AGENT_SIGNALS}  # the agent installs its own, for good
        try:
            elastic_launch(launch_config, sys.executable)("-m", "sweeplab.engine.launch", str(job_file))
        except SignalException:
            raise KeyboardInterrupt from None
        except ChildFailedError:
            pass  # the failing rank's outcome file says why
        finally:
            _restore(handlers)
        results = [json.loads(p.read_text()) if p.exists() else None for p in outcomes]
    errors = [r for r in results if r and "error" in r]
    if errors:  # a rank's own failure, not the interruption the others then saw
        return errors[0]
    if results[0] is None:
        failed = next((r for r, found in enumerate(results) if found is None), 0)
        return {"error": f"DDP rank {failed} exited without an outcome (killed?)", "user_error": False}
    return results[0]


_AGENT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _restore(handlers: dict[int, Any]) -> None:
    """Put back this process's signal handlers (a sweep worker ignores Ctrl-C: its parent decides)."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _interrupt_once(signum: int, frame: Any) -> None:
    """The first Ctrl-C or SIGTERM ends training cleanly; the copies that follow (the terminal's SIGINT reaches
    every rank, and the agent passes its own on) do not interrupt the checkpoint being written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _rank_main(job_file: str) -> int:
    """One rank: rebuild the config, run it, and leave the outcome where `launch` reads it."""
    job = json.loads(Path(job_file).read_text())
    rank = int(os.environ["RANK"])
    if rank != 0:
        job["options"]["quiet"] = True  # rank 0 speaks for the group
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    outcome: dict[str, Any]
    try:
        cfg = resolve(job["config"]["task"], flatten(job["config"]))
        result = runner.execute(cfg, open_store(job["store"]), RunOptions(**job["options"]))
        outcome = {"status": result.status}
    except UserError as exc:
        outcome = {"error": str(exc), "user_error": True}
    except KeyboardInterrupt:
        outcome = {"status": "interrupted"}
    except Exception as exc:  # noqa: BLE001 - reported by the launcher; execute marked the run failed
        outcome = {"error": f"{type(exc).__name__}: {exc}", "user_error": False}
    Path(job["outcomes"][rank]).write_text(json.dumps(outcome))
    return 0 if "status" in outcome else 1


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1]))
