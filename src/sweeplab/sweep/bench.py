"""`sweeplab bench devices`: the same run on the CPU, one GPU and N GPUs (DDP), timed side by side.

Each setup is an ordinary stored run capped at `steps` optimizer steps (so a repeated bench reuses the
stored measurement, like a sweep). Its time per batch is the median of the logged intervals after the
first, which holds the warm-up (allocator, cuDNN autotuning, compilation); the time per epoch is that
times the full run's batches per epoch.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch

from sweeplab.config import json_safe, run_key
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import Store
from sweeplab.tasks import resolve

INTERVALS = 5  # log intervals per bench run: the first is warm-up, the median of the others is reported


@dataclass(frozen=True)
class Setup:
    label: str
    device: str
    nproc: int
    skipped: str | None = None  # why this machine cannot run it


@dataclass
class BenchRow:
    setup: str
    device: str  # the device's own name, as the run recorded it
    nproc: int
    run_id: str | None = None
    status: str = "skipped"
    ms_per_batch: float | None = None
    epoch_s: float | None = None  # estimated: ms_per_batch x batches per epoch
    speedup: float | None = None  # against the first row (the CPU)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return json_safe(dict(self.__dict__))  # a diverged setup's NaN timings: JSON has no NaN


def setups(gpus: int | None = None) -> list[Setup]:
    found = torch.cuda.device_count()
    n = found if gpus is None else gpus
    rows = [Setup("cpu", "cpu", 1)]
    rows.append(Setup("1 GPU", "cuda", 1, None if found else "no CUDA device"))
    if 2 <= n <= found:
        rows.append(Setup(f"{n} GPUs (DDP)", "cuda", n))
    else:
        rows.append(Setup(f"{max(n, 2)} GPUs (DDP)", "cuda", max(n, 2), f"{found} GPU(s) here"))
    return rows


def bench_devices(task: str, layer: dict[str, Any], store: Store, *, steps: int, gpus: int | None = None,
                  quiet: bool = False) -> list[BenchRow]:
    """Run `task` with `layer` on every setup this machine has; a row per setup, skipped ones say why."""
    log_every = max(steps // INTERVALS, 1)
    rows: list[BenchRow] = []
    for setup in setups(gpus):
        row = BenchRow(setup.label, setup.device, setup.nproc, note=setup.skipped or "")
        rows.append(row)
        if setup.skipped:
            continue
        cfg = resolve(task, layer, {"device": setup.device, "train.nproc": setup.nproc, "train.max_steps": steps,
                                    "train.log_every": log_every})
        name = f"bench-{task}-{setup.label.split(' (')[0].replace(' ', '').lower()}-{run_key(cfg)[:6]}"
        result = execute(cfg, store, RunOptions(name=name, sweep=f"bench-devices-{task}", quiet=quiet))
        row.run_id, row.status, row.device = result.run_id, result.status, result.device
        row.ms_per_batch = steady_ms_per_batch(store, result.run_id) or result.ms_per_batch
        per_epoch = result.metrics.get("batches_per_epoch")
        if row.ms_per_batch and per_epoch:
            row.epoch_s = row.ms_per_batch * per_epoch / 1000
    base = rows[0].ms_per_batch
    for row in rows:
        if base and row.ms_per_batch:
            row.speedup = base / row.ms_per_batch
    return rows


def steady_ms_per_batch(store: Store, run_id: str | None) -> float | None:
    """Median time per batch over the logged intervals after the first; None with fewer than two intervals."""
    if run_id is None:
        return None
    intervals = [m.value for m in store.metrics(run_id) if m.key == "step/ms_per_batch"]
    return statistics.median(intervals[1:]) if len(intervals) >= 2 else None
