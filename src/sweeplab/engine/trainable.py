"""Running a function trainable (sweeplab.tasks.function): the `run` handle it is given, and how its run ends.

The function owns its loop; `run` gives it what the engine gives a built-in task:

    run.log(step=, epoch=, split="train", **metrics)   metrics into the store (and TensorBoard)
    run.save(state) / run.restore()                    an atomic checkpoint / the newest one, or None
    run.should_stop()                                  True once Ctrl-C or SIGTERM asked the run to end
    run.summarize(**values)                            extra summary values (e.g. params)
    run.config, run.seed, run.device, run.dir, run.id

A restored run continues where its checkpoint was saved: the generators (torch, NumPy, Python's) are those
of that moment and the metrics logged after it are dropped, so a run killed and resumed ends with the numbers
of one that never stopped. A function that starts over without `restore()` starts its history over too.
"""
from __future__ import annotations

import io as _io
import math
import random
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeplab import io
from sweeplab.engine.progress import say
from sweeplab.engine.trainer import SPLIT_WORDS, Recorder
from sweeplab.engine.watchdog import Watchdog
from sweeplab.errors import Diverged, UserError, interrupted
from sweeplab.store import Store, checkpoint
from sweeplab.store.db import LeaseLost
from sweeplab.tasks.function import FunctionTask

KEEP_CHECKPOINTS = 2  # the newest and the one before it (a resume falls back to it if the newest is damaged)


class RunHandle:
    """The handle a training function receives as its second argument (sweeplab.tasks.function.Run)."""

    def __init__(self, task: FunctionTask, store: Store, run_id: str, *, quiet: bool = True,
                 watchdog: Watchdog | None = None, stop_after_epoch: int | None = None):
        cfg = task.cfg
        self.id, self.dir = run_id, store.run_dir(run_id)
        self.seed, self.device = cfg.seed, task.device
        self.config = task.config_for(cfg.params or {}, cfg.seed, cfg.device)
        self.step = self.epoch = 0  # where the function is: the last step and epoch it logged or restored
        self._store, self._quiet = store, quiet
        self._watchdog = watchdog or Watchdog.off()
        self._recorder = Recorder(store, run_id, self.dir)
        self._extra: dict[str, float] = {}
        self._saved = 0  # number of the newest checkpoint
        self._started = False  # the first log, save or restore decides what an earlier attempt's history becomes
        self.stopping = False
        self._stop_after_epoch = stop_after_epoch  # the planner's calibration: one epoch is enough
        self.polls = False  # the function asks should_stop(): a signal then ends it at its next question

    # -- what the function calls -------------------------------------------------------------------
    def log(self, *, step: int | None = None, epoch: int | None = None, split: str = "train", **metrics: Any) -> None:
        """Store `metrics` (numbers, or one-element tensors) as `split/NAME` at (step, epoch); a step or epoch
        left out is the last one given. A NaN or infinite value ends the run as diverged."""
        self._start(restored=False)
        self.step = self.step if step is None else _count("step", step)
        self.epoch = self.epoch if epoch is None else _count("epoch", epoch)
        if not split or not split.isidentifier():
            raise UserError(f"run.log: split {split!r} is not accepted; accepted: a name such as train, valid, test")
        values = {name: _number(name, value) for name, value in metrics.items()}
        if not values:
            raise UserError("run.log: no metrics given; e.g. run.log(step=step, loss=loss.item())")
        self._recorder.log(step=self.step, epoch=self.epoch, split=split, values=values)
        self._watchdog.beat()
        for name, value in values.items():
            if not math.isfinite(value):
                raise Diverged(f"{SPLIT_WORDS.get(split, split)} {name} became {value} ({split}/{name}) "
                               f"at step {self.step} (epoch {self.epoch})")

    def save(self, state: dict[str, Any]) -> None:
        """Checkpoint `state` (state dicts, tensors, numbers, strings, lists, dicts) with the generators and the
        position; atomic, and fenced: a process that lost the run to another writes nothing."""
        self._start(restored=False)
        payload = {"state": state, "position": {"step": self.step, "epoch": self.epoch, "saved": self._saved + 1},
                   "rng": _get_rng(), "summary": dict(self._extra)}
        buffer = _io.BytesIO()
        torch.save(payload, buffer)
        try:  # what cannot be read back safely must not be written: a resume would find it damaged
            torch.load(_io.BytesIO(buffer.getvalue()), weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler's refusal, whatever its type
            why = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__
            raise UserError(f"run.save: the state holds what a checkpoint cannot load safely ({why}); "
                            "accepted: tensors, numbers, strings, lists, dicts (e.g. model.state_dict())") from None
        self._saved += 1
        io.write_bytes(checkpoint.epoch_path(self.dir, self._saved), buffer.getvalue(),  # serialized once
                       before_replace=lambda: self._store.check_lease(self.id))
        checkpoint.prune(self.dir, set(range(self._saved - KEEP_CHECKPOINTS + 1, self._saved + 1)))
        self._recorder.sync()
        self._watchdog.beat()

    def restore(self) -> Any:
        """The state of the newest checkpoint that loads (None: none, start from scratch); the generators and
        the position are back as they were when it was saved. Call it before the first `log`."""
        if self._started:
            raise UserError("run.restore() comes before the first run.log() or run.save()")
        found = _newest(self.dir, self._quiet)
        self._start(restored=found is not None, position=found["position"] if found else None)
        if found is None:
            return None
        _set_rng(found["rng"])
        self._extra.update(found.get("summary", {}))
        say(f"resuming run {self.id} from step {self.step}, epoch {self.epoch}", self._quiet)
        return found["state"]

    def should_stop(self) -> bool:
        """True once Ctrl-C or SIGTERM asked the run to end (it is then `interrupted`, resumable), or, in the
        planner's calibration, once the first epoch is logged."""
        self.polls = True
        self._watchdog.beat()
        return self.stopping or (self._stop_after_epoch is not None and self.epoch >= self._stop_after_epoch)

    def summarize(self, **values: Any) -> None:
        """Summary values beside the last logged metrics (e.g. `params=n`): the report's tables can show them."""
        self._extra.update({name: _number(name, value) for name, value in values.items()})

    # -- the engine's side -------------------------------------------------------------------------
    def _start(self, *, restored: bool, position: dict[str, int] | None = None) -> None:
        """Once: drop an earlier attempt's metrics after the checkpoint restored, or all of them when the
        function starts over; the summary's values start from what remains."""
        if self._started:
            return
        self._started = True
        if position is not None:
            self.step, self.epoch, self._saved = position["step"], position["epoch"], position["saved"]
        self._store.delete_metrics_after(self.id, self.epoch if restored else -1, step=self.step if restored else -1)
        self._recorder.seed(self._store.metrics(self.id))

    def logged_any(self) -> bool:
        return bool(self._recorder.last)

    def summary(self) -> dict[str, float]:
        return {**self._recorder.last, **self._extra, "steps": self.step, "epochs": self.epoch}

    def close(self) -> None:
        self._recorder.close()


def train_function(task: FunctionTask, store: Store, run_id: str, *, quiet: bool, watchdog: Watchdog,
                   stop_after_epoch: int | None = None) -> str:
    """Call the function; the run's row then says how it ended (finished, diverged, interrupted, failed)."""
    run = RunHandle(task, store, run_id, quiet=quiet, watchdog=watchdog, stop_after_epoch=stop_after_epoch)
    status, error = "finished", None
    try:
        with _stop_on_signal(run):
            type(task).function(run.config, run)
        if run.stopping:
            status, error = "interrupted", f"stopped at step {run.step}, epoch {run.epoch}"
        elif not run.logged_any():
            status, error = "diverged", "the function logged no metrics (call run.log(step=..., loss=...))"
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except LeaseLost:
        raise
    except UserError as exc:  # a misuse of `run`: the user's to fix, said as any bad input
        status, error = "failed", f"UserError: {exc}"
        _keep_traceback(store, run_id, exc)
    except BaseException as exc:  # the user's code: its exception ends the run, never the process
        if interrupted(exc):  # Ctrl-C, or an error raised while one unwound
            status, error = "interrupted", f"interrupted at step {run.step}, epoch {run.epoch}"
        elif isinstance(exc, Exception):
            status, error = "failed", _last_line(exc)
            _keep_traceback(store, run_id, exc)
        else:
            raise
    finally:
        run.close()
    if status != "finished":
        say(f"| {status} | {error}", quiet)
    if status == "failed" and not quiet:
        print(f"error: run {run_id} failed: {error} (traceback: {run.dir / 'traceback.txt'})", file=sys.stderr)
    store.set_summary(run_id, {k: float(v) for k, v in run.summary().items()})
    store.release(run_id, status=status, error=error, ended_at=time.time(), epoch=run.epoch, step=run.step)
    return status


@contextmanager
def _stop_on_signal(run: RunHandle) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask a function that polls `should_stop()` to end at its next question; one that
    does not poll, or a second signal, is interrupted at once (KeyboardInterrupt). Either way it is resumable."""
    def handler(signum: int, frame: Any) -> None:
        if run.polls and not run.stopping:
            run.stopping = True
            return
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (a Ray actor's task thread): signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _newest(run_dir: Path, quiet: bool) -> dict[str, Any] | None:
    for number in reversed(checkpoint.list_epochs(run_dir)):
        path = checkpoint.epoch_path(run_dir, number)
        try:
            return checkpoint.load(path, keys=("state", "position", "rng"))
        except io.DamagedFile as exc:
            kept = checkpoint.set_aside(path)
            say(f"warning: {exc}; set aside as {kept.name}; trying the previous one", quiet)
    return None


def _get_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": checkpoint.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss]}


def _set_rng(state: dict[str, Any]) -> None:
    checkpoint.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise UserError(f"run.log: {name}={value!r} is not accepted; accepted: an integer >= 0")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().cpu())
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise UserError(f"run.log: {name}={type(value).__name__} is not accepted; accepted: a number or a "
                        "one-element tensor")
    return float(value)


def _last_line(exc: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(exc) if line.strip()]
    return (lines[-1].strip() if lines else type(exc).__name__)[:500]


def _keep_traceback(store: Store, run_id: str, exc: BaseException) -> None:
    try:
        io.write_bytes(store.run_dir(run_id) / "traceback.txt", "".join(traceback.format_exception(exc)).encode())
        store.push_artifacts(run_id)
    except OSError:  # the row says why the run failed; the traceback is a courtesy
        pass
