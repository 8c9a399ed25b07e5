"""One run, start to end: resolve -> build -> store row -> train -> summary. Used by `run` and `sweep`."""
from __future__ import annotations

import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sweeplab.config import RunConfig, run_key
from sweeplab.engine import checkpoint
from sweeplab.engine.device import device_name, get_device, keep_freed_memory
from sweeplab.engine.progress import say
from sweeplab.engine.trainer import Trainer
from sweeplab.errors import Diverged
from sweeplab.registry import TASKS
from sweeplab.store import RunRow, Store
from sweeplab.store.db import FINAL_STATUSES, redact


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
        return {"run_id": self.run_id, "status": self.status, "task": self.task, "config": self.config,
                "params": self.params, "metrics": {k: _finite(v) for k, v in self.metrics.items()},
                "ms_per_batch": _finite(self.ms_per_batch), "device": self.device, "store": self.store}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class RunOptions:
    name: str | None = None
    dry_run: bool = False
    retry_failed: bool = True  # a failed run with the same key is resumed rather than skipped
    sweep: str | None = None
    cell: str | None = None
    note: str | None = None
    quiet: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_name(cfg: RunConfig) -> str:
    return f"{cfg.task}-{cfg.model_name}-{run_key(cfg)[:6]}"


def execute(cfg: RunConfig, store: Store, opts: RunOptions | None = None) -> RunResult:
    """Run `cfg` to the end (or resume it). Bad input raises UserError before any row is written."""
    opts = opts or RunOptions()
    device = get_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(cfg.seed)
    task = TASKS.get(cfg.task, key="task").obj(cfg, device)
    model = task.build()
    params = task.count_params(model)
    result = RunResult(None, "dry-run", cfg.task, cfg.to_dict(), params, device=device_name(device),
                       store=redact(store.url))
    if opts.dry_run:
        return result
    key = run_key(cfg)
    existing = store.find_by_key(key)
    if existing and (existing.status in FINAL_STATUSES or (existing.status == "failed" and not opts.retry_failed)):
        say(f"run {existing.id} ({existing.name}) has this config and is {existing.status}: not trained again", opts.quiet)
        return stored_result(store, existing)
    if existing:
        run_id = existing.id
        store.update_run(run_id, status="running", error=None, env=environment(device), sweep=opts.sweep or existing.sweep,
                         cell=opts.cell or existing.cell, note=opts.note or existing.note)
    else:
        run_id = store.create_run(key=key, name=opts.name or default_name(cfg), task=cfg.task, config=cfg.to_dict(),
                                  env=environment(device), sweep=opts.sweep, cell=opts.cell, note=opts.note)
    run_dir = store.run_dir(run_id)
    trainer = Trainer(task, model, store=store, run_id=run_id, run_dir=run_dir, quiet=opts.quiet)
    resume_from(trainer, store, run_id)
    result.run_id = run_id
    result.status = _train(trainer, task, store, run_id, opts.quiet)
    result.metrics = store.summary(run_id)
    result.ms_per_batch = result.metrics.get("train/ms_per_batch")
    return result


def resume_from(trainer: Trainer, store: Store, run_id: str) -> None:
    epochs = checkpoint.list_epochs(trainer.run_dir)
    last = epochs[-1] if epochs else 0
    store.delete_metrics_after(run_id, last)  # rows of the epoch that did not complete
    if last:
        trainer.restore(last)
        say(f"resuming run {run_id} after epoch {last}", trainer.quiet)


def _train(trainer: Trainer, task: Any, store: Store, run_id: str, quiet: bool) -> str:
    status, error = "finished", None
    try:
        with _sigterm_as_interrupt():
            trainer.fit()
            trainer.evaluate_final()
            extra = {**task.finish(trainer.model, trainer.run_dir), **task.summarize(store.metrics(run_id))}
        trainer.prune_final()
    except Diverged as exc:
        status, error, extra = "diverged", str(exc), {}
        say(f"| diverged | {exc}", quiet)
    except KeyboardInterrupt:
        status, error, extra = "interrupted", f"interrupted after epoch {trainer.state.epoch}", {}
        say(f"| interrupted | resumable from epoch {trainer.state.epoch}", quiet)
    except BaseException as exc:
        store.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}", ended_at=time.time(),
                         epoch=trainer.state.epoch, step=trainer.state.step)
        raise
    finally:
        trainer.recorder.close()
    summary = {**trainer.recorder.last, **extra, "params": task.count_params(trainer.model),
               "epochs": trainer.state.epoch, "steps": trainer.state.step}
    if trainer.state.best_epoch:
        summary["best_epoch"] = trainer.state.best_epoch
    store.set_summary(run_id, {k: float(v) for k, v in summary.items()})
    store.update_run(run_id, status=status, error=error, ended_at=time.time(), epoch=trainer.state.epoch,
                     step=trainer.state.step)
    return status


def stored_result(store: Store, row: RunRow) -> RunResult:
    metrics = store.summary(row.id)
    return RunResult(row.id, row.status, row.task, row.config, int(metrics.get("params", 0)), metrics,
                     metrics.get("train/ms_per_batch"), row.env.get("device", "cpu"), redact(store.url))


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
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


def environment(device: torch.device) -> dict[str, Any]:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "host": platform.node(), "device": device_name(device),
            "threads": torch.get_num_threads(), "git_commit": _git_commit(), "pid": os.getpid()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
