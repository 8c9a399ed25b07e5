"""One run, start to end: resolve -> build -> store row -> train -> summary. Used by `run` and `sweep`."""
from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sweeplab.config import RunConfig, json_safe, run_key
from sweeplab.engine import distributed
from sweeplab.engine.distributed import Dist
from sweeplab.engine.progress import say
from sweeplab.engine.trainable import train_function
from sweeplab.engine.trainer import Trainer
from sweeplab.engine.watchdog import Watchdog, stall_seconds
from sweeplab.errors import Diverged, UserError, interrupted
from sweeplab.models.device import device_name, get_device, keep_freed_memory
from sweeplab.registry import TASKS
from sweeplab.store import RunRow, Store
from sweeplab.store.db import FINAL_STATUSES, LeaseLost, lease_seconds, new_owner, redact
from sweeplab.tasks.function import FunctionTask


@dataclass
class RunResult:
    """What `--json` prints: the contract of SPEC §1."""

    run_id: str | None
    status: str
    task: str
    config: dict[str, Any]
    params: int
    metrics: dict[str, float] = field(default_factory=dict)
    ms_per_batch: float | None = None
    device: str = "cpu"
    store: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON has no NaN or infinity: a diverged run's non-finite values become null."""
        return json_safe({"run_id": self.run_id, "status": self.status, "task": self.task, "config": self.config,
                          "params": self.params, "metrics": self.metrics, "ms_per_batch": self.ms_per_batch,
                          "device": self.device, "store": self.store})


@dataclass
class RunOptions:
    name: str | None = None
    dry_run: bool = False
    retry_failed: bool = True  # a failed run with the same key is resumed rather than skipped
    sweep: str | None = None
    cell: str | None = None
    note: str | None = None
    quiet: bool = False
    wait: bool = False  # a run another live process trains: wait for it to end instead of refusing


class RunHeld(UserError):
    """The run is being trained by another live process: it is never trained by two at once."""


WAIT_POLL_S = 2.0  # how often `--wait` looks at a held run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_name(cfg: RunConfig) -> str:
    return "-".join(p for p in (cfg.task, cfg.model_name, run_key(cfg)[:6]) if p)


def execute(cfg: RunConfig, store: Store, opts: RunOptions | None = None) -> RunResult:
    """Run `cfg` to the end (or resume it) in this process. Bad input raises UserError before any row is written.

    In a process a launcher started as one rank of several (sweeplab's own for `train.nproc=N`, or torchrun),
    this process trains its share of the run with the others; `train.nproc` then is the group's size. A run of
    several processes that no launcher started goes through sweeplab.engine.launch.execute, which starts them."""
    opts = opts or RunOptions()
    dist = distributed.current()
    if dist.active:
        cfg = _joined(cfg, dist.world)
    device = get_device(cfg.device)
    distributed.check_request(cfg.device, cfg.train.nproc, cfg.train.batch_size, launched=dist.active)
    if cfg.train.nproc > 1 and not dist.active and not opts.dry_run:
        raise RuntimeError("a run of train.nproc > 1 starts its ranks through sweeplab.engine.launch.execute")
    if dist.active:
        device = distributed.rank_device(device, dist)
        distributed.init_group(dist, device)
    try:
        return _execute_here(cfg, store, opts, device, dist)
    finally:
        if dist.active:
            distributed.leave_group()


def _joined(cfg: RunConfig, world: int) -> RunConfig:
    """The config of a rank that a launcher started in a group of `world`: `train.nproc` is the group's size
    (left at 1, it is taken from the launcher; a different number is a contradiction, said in one line)."""
    if cfg.train.nproc == world:
        return cfg
    if cfg.train.nproc != 1:
        raise UserError(f"train.nproc: {cfg.train.nproc}, but the launcher started {world} processes (WORLD_SIZE); "
                        f"accepted under a launcher: train.nproc={world} or leave it out")
    return replace(cfg, train=cfg.train.model_copy(update={"nproc": world}))


def _execute_here(cfg: RunConfig, store: Store, opts: RunOptions, device: torch.device, dist: Dist) -> RunResult:
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(cfg.seed)  # the same on every rank: same weights (DDP checks), same data order, resumable
    task = TASKS.get(cfg.task, key="task").obj(cfg, device)
    function = isinstance(task, FunctionTask)  # the user's own loop: it builds its model itself
    model = None if function else task.build()
    device = task.device  # where it really trains (mlp_numpy computes on the host whatever was asked)
    params = task.count_params(model)
    result = RunResult(None, "dry-run", cfg.task, cfg.to_dict(), params, device=device_name(device),
                       store=redact(store.url))
    if opts.dry_run:
        return result
    torch.manual_seed(distributed.rank_seed(cfg.seed, dist.rank))  # dropout: independent masks on each rank
    if dist.is_main:
        store.artifacts.check(write=True)  # before a row exists: storage that cannot keep the run's files is bad input
    run_id, done = dist.broadcast(_open_run(cfg, store, opts, device, dist) if dist.is_main else None)
    if done:
        return stored_result(store, store.get_run(run_id))
    run_dir = store.run_dir(run_id)
    try:
        with Watchdog(stall_seconds(), lambda idle: _stalled(store, run_id, idle)) as watchdog:
            if function:
                result.run_id = run_id
                result.status = train_function(task, store, run_id, quiet=opts.quiet, watchdog=watchdog)
                return _finished(result, store)
            trainer = Trainer(task, model, store=store, run_id=run_id, run_dir=run_dir, quiet=opts.quiet, dist=dist,
                              watchdog=watchdog)
            resume_from(trainer, store, run_id)
            result.run_id = run_id
            result.status = _train(trainer, task, store, run_id, opts.quiet)
    except BaseException as exc:
        if store.holds(run_id):  # failed before training could record it: the claim must not outlive us
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            store.release(run_id, status=status, error=f"{type(exc).__name__}: {exc}", ended_at=time.time())
        raise
    return _finished(result, store)


def _finished(result: RunResult, store: Store) -> RunResult:
    result.metrics = store.summary(result.run_id)
    result.params = int(result.metrics.get("params", result.params))  # a training function's, if it said
    result.ms_per_batch = result.metrics.get("train/ms_per_batch")
    return result


def _stalled(store: Store, run_id: str, idle_s: float) -> None:
    """The watchdog's last act for a run whose steps stopped: on record as failed (resumable from its last
    checkpoint by the next `run`, or `sweep --retry-failed`), its lease given up; the process then ends."""
    error = (f"stalled: no training step or evaluation for {idle_s:.0f} s (a hung collective, data read or "
             f"loader?); limit $SWEEPLAB_STALL_S={stall_seconds():.0f} s; resumable from its last checkpoint")
    print(f"error: run {run_id} {error}", file=sys.stderr, flush=True)
    if store.holds(run_id):
        store.release(run_id, status="failed", error=error, ended_at=time.time())


def _open_run(cfg: RunConfig, store: Store, opts: RunOptions, device: torch.device, dist: Dist) -> tuple[str, bool]:
    """Claim the run's row for this process, new or to resume; (run_id, True) when it must not train again.

    The claim is atomic: a new row is inserted already owned (its key is UNIQUE), an existing one is taken by
    compare-and-set, so of two processes asking at once exactly one trains. A run held by a live owner is
    refused (RunHeld) or, with `wait`, waited for; one whose owner died is taken over."""
    key, owner, env = run_key(cfg), new_owner(), environment(device, dist)
    while True:
        row = store.find_by_key(key)
        if row is None:
            run_id = store.create_run(key=key, name=opts.name or default_name(cfg), task=cfg.task, config=cfg.to_dict(),
                                      env=env, sweep=opts.sweep, cell=opts.cell, note=opts.note, owner=owner)
            if run_id:
                return run_id, False
            continue  # another process inserted it first: look again
        if done_already(row, opts):
            return row.id, True
        holder = store.holder(row)
        if holder is None:
            if store.take_over(row, owner, error=None, env=env, started_at=time.time(), ended_at=None,
                               sweep=opts.sweep or row.sweep, cell=opts.cell or row.cell, note=opts.note or row.note):
                if row.status == "running":
                    say(f"run {row.id}: its owner ({row.owner}) is gone; taking it over", opts.quiet)
                return row.id, False
            continue  # another process took it first
        if not opts.wait:
            raise RunHeld(f"run {row.id} ({row.name}) is being trained by {holder}; one run is trained by one "
                          f"process: --wait waits for it to end (an owner that dies is taken over "
                          f"{lease_seconds():.0f} s after its last heartbeat)")
        say(f"run {row.id} is being trained by {holder}: waiting", opts.quiet)
        time.sleep(WAIT_POLL_S)


def done_already(row: RunRow | None, opts: RunOptions) -> bool:
    """A run with this config that must not train again: it ended, or it failed and failures are not retried."""
    if row and (row.status in FINAL_STATUSES or (row.status == "failed" and not opts.retry_failed)):
        say(f"run {row.id} ({row.name}) has this config and is {row.status}: not trained again", opts.quiet)
        return True
    return False


def resume_from(trainer: Trainer, store: Store, run_id: str) -> None:
    """Continue after the newest checkpoint that loads (0: from scratch). The stored rows after that epoch
    are dropped, so a resumed run neither loses nor repeats any; the rest seed the summary's values."""
    epoch = trainer.restore_latest()
    if trainer.dist.is_main:
        store.delete_metrics_after(run_id, epoch, final_splits=("best", *trainer.task.final_splits))
        trainer.recorder.seed(store.metrics(run_id))
    if epoch:
        say(f"resuming run {run_id} after epoch {epoch}", trainer.quiet)


def _train(trainer: Trainer, task: Any, store: Store, run_id: str, quiet: bool) -> str:
    if not trainer.dist.is_main:  # the other ranks train and evaluate; rank 0 writes what happened
        return _train_rank(trainer)
    status, error = "finished", None
    try:
        with sigterm_as_interrupt():
            trainer.fit()
            trainer.evaluate_final()
            trainer.check_lease()  # the run folder's files are the owner's to write: fenced like the checkpoints
            extra = {**task.finish(trainer.model, trainer.run_dir), **task.summarize(store.metrics(run_id))}
        trainer.prune_final()
    except Diverged as exc:
        status, error, extra = "diverged", str(exc), {}
        say(f"| diverged | {exc}", quiet)
    except LeaseLost:
        raise  # another process trains the run now: write nothing more
    except BaseException as exc:
        if not interrupted(exc):
            store.release(run_id, status="failed", error=f"{type(exc).__name__}: {exc}", ended_at=time.time(),
                          epoch=trainer.state.epoch, step=trainer.state.step)
            raise
        status, error, extra = "interrupted", f"interrupted after epoch {trainer.state.epoch}", {}
        say(f"| interrupted | resumable from epoch {trainer.state.epoch}", quiet)
    finally:
        trainer.recorder.close()
    summary = {**trainer.recorder.last, **extra, "params": task.count_params(trainer.model),
               "epochs": trainer.state.epoch, "steps": trainer.state.step, "batches_per_epoch": task.batches_per_epoch(),
               **{f"chance/{name}": value for name, value in task.chance().items()}}
    if trainer.state.best_epoch:
        summary["best_epoch"] = trainer.state.best_epoch
    store.set_summary(run_id, {k: float(v) for k, v in summary.items()})
    store.release(run_id, status=status, error=error, ended_at=time.time(), epoch=trainer.state.epoch,
                  step=trainer.state.step)
    return status


def _train_rank(trainer: Trainer) -> str:
    try:
        with sigterm_as_interrupt():
            trainer.fit()
            trainer.evaluate_final()
    except Diverged:
        return "diverged"
    except KeyboardInterrupt:
        return "interrupted"
    return "finished"


def stored_result(store: Store, row: RunRow) -> RunResult:
    metrics = store.summary(row.id)
    return RunResult(row.id, row.status, row.task, row.config, int(metrics.get("params", 0)), metrics,
                     metrics.get("train/ms_per_batch"), row.env.get("device", "cpu"), redact(store.url))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C: status `interrupted`, resumable from its last checkpoint."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def environment(device: torch.device, dist: Dist = Dist()) -> dict[str, Any]:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "host": platform.node(), "device": device_name(device),
            "threads": torch.get_num_threads(), "processes": dist.world, "git_commit": _git_commit(), "pid": os.getpid()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
