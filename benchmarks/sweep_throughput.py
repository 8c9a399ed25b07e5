"""Sweep throughput: cells per minute of a 16-cell sweep with 1 and 2 local workers, and the planner's error.

For each task (toy2d, palindrome; lm on a tiny corpus with --task lm) and each worker count, in a fresh
store: `--plan` first (calibration, per-cell estimates, the estimated wall time), then the sweep itself.
Prints one JSON object: wall time and cells/minute per worker count, the speed-up of 2 workers, the
planner's error (per cell: estimate vs the worker's measured time; per sweep: estimated vs measured wall)
and the planning time.

    .venv/bin/python benchmarks/sweep_throughput.py [--task toy2d palindrome] [--workers 1 2]

With --experiment, the same for an experiment file at a scale (the planner's error on real data), or with
--plan-only just the planning time of `sweeplab sweep FILE --scale S --budget B --plan`:

    .venv/bin/python benchmarks/sweep_throughput.py --experiment experiments/lm_wikitext2.yaml --scale quick
    .venv/bin/python benchmarks/sweep_throughput.py --experiment experiments/lm_wikitext2.yaml --scale full \
        --budget 2h --plan-only
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console

from sweeplab.sweep.planner import cores, cost_signature, threads_per_worker
from sweeplab.sweep.run import SweepOptions, run_sweep

# 16 cells each, two or three seconds of training apiece on this CPU
SWEEPS = {
    "toy2d": {"task": "toy2d", "base": {"model": "mlp", "train.epochs": 100, "data.n_samples": 1000},
              "axes": {"data": ["moons", "circles"], "model.hidden": [16, 32], "optim.lr": [0.03, 0.1, 0.3, 1.0]}},
    "palindrome": {"task": "palindrome", "base": {"model": "rnn", "train.max_steps": 400, "train.eval_every": 100,
                                                  "train.eval_batch_size": 500, "data.test_size": 1000},
                   "axes": {"data.length": [5, 10, 15, 20]}, "seeds": 4},
    "lm": {"task": "lm", "base": {"data": "text", "model.emsize": 32, "model.nlayers": 1, "train.batch_size": 4,
                                  "train.bptt": 10, "train.epochs": 30},
           "axes": {"model": ["lstm", "gru", "rnn_tanh", "rnn_relu"], "model.nhid": [16, 32]}, "seeds": 2},
}


def write_corpus(folder: Path) -> Path:
    words = "the cat sat on the mat and the dog ate the bone while a bird sang in the tree".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 200), ("valid", 40), ("test", 40)):
        text = "\n".join(" ".join(words[(i * 3 + j) % len(words)] for j in range(12)) for i in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


def experiment_file(task: str, folder: Path) -> Path:
    spec = {"name": f"bench_{task}", **SWEEPS[task], "columns": [{"title": "loss", "metric": "valid/loss"}]}
    if task == "lm":
        spec["base"] = {**spec["base"], "data.path": str(write_corpus(folder / "corpus"))}
    path = folder / f"bench_{task}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def measure(task: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sweeplab-bench-") as tmp:
        return measure_file(experiment_file(task, Path(tmp)), None, workers, f"sqlite:///{tmp}/store.sqlite")


def measure_file(path: Path, scale: str | None, workers: int, store_url: str) -> dict:
    """`--plan`, then the sweep, in the store at `store_url` (fresh): wall time, estimate and planning time."""
    opts = dict(scale=scale, workers=workers, store_url=store_url, interactive=False)
    quiet = Console(file=io.StringIO())  # the plan and summary lines; the cells' lines go to stderr
    planned = time_plan(path, SweepOptions(plan_only=True, **opts), quiet)
    plan = planned.pop("plan")
    start = time.perf_counter()
    result = run_sweep(path, SweepOptions(**opts), quiet)
    wall = time.perf_counter() - start
    cells = len(result.cells)
    assert result.failed == 0 and len(result.outcomes) == cells, result.statuses
    # A worker's first cell also loads TensorBoard (the planner counts that in the worker's start): left out.
    firsts = {min(o.index for o in result.outcomes if o.pid == pid) for pid in {o.pid for o in result.outcomes}}
    ratios = [o.wall_s / plan.cells[o.index].est_s for o in result.outcomes if o.index not in firsts] or [math.nan]
    return {"cells": cells, "wall_s": round(wall, 2), "cells_per_min": round(cells / wall * 60, 1),
            "estimated_wall_s": round(plan.makespan_s, 2), "wall_error": round(plan.makespan_s / wall - 1, 3),
            "cell_time_over_estimate": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                                        "max": round(max(ratios), 2)},
            **planned}


def time_plan(path: Path, opts: SweepOptions, console: Console) -> dict:
    """The wall time of a `--plan` (experiment loading, calibration, the choice) and what it planned."""
    start = time.perf_counter()
    result = run_sweep(path, opts, console)
    planning = time.perf_counter() - start
    plan = result.plan
    return {"plan": plan, "planning_s": round(planning, 2), "calibration_s": round(plan.calibration_s, 2),
            "planned_cells": len(plan.cells), "shapes": len({cost_signature(c) for c in result.cells})}


def measure_experiment(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="sweeplab-bench-") as tmp:
        store_url = f"sqlite:///{tmp}/store.sqlite"
        if args.plan_only:
            opts = SweepOptions(scale=args.scale, workers=args.workers[0], budget=args.budget, plan_only=True,
                                store_url=store_url, interactive=False)
            planned = time_plan(args.experiment, opts, Console(stderr=True))  # progress lines on stderr
            plan = planned.pop("plan")
            return {"budget": args.budget, "workers": args.workers[0], **planned,
                    "estimated_wall_s": round(plan.makespan_s, 2), "fits": plan.fits}
        runs = {w: report(f"x{w}", measure_file(args.experiment, args.scale, w, f"sqlite:///{tmp}/store-{w}.sqlite"))
                for w in args.workers}
        return {"by_workers": runs}


def report(what: str, result: dict) -> dict:
    """Each measurement on stderr as it ends: a long benchmark stopped early still leaves its figures."""
    print(what, json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["toy2d", "palindrome"], choices=sorted(SWEEPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--experiment", type=Path, help="an experiment file instead of the built-in sweeps")
    parser.add_argument("--scale", help="with --experiment: the scale (default: the file's quick)")
    parser.add_argument("--budget", help="with --plan-only: the --budget to plan for, e.g. 2h")
    parser.add_argument("--plan-only", action="store_true", help="with --experiment: time the plan only")
    args = parser.parse_args()
    out = {"machine": {"platform": platform.platform(), "cores": cores(), "torch": torch.__version__,
                       "load_average_at_start": os.getloadavg()[0]}, "tasks": {}}
    if args.experiment:
        out["experiment"] = {"file": str(args.experiment), "scale": args.scale, **measure_experiment(args)}
        args.task = []
    for task in args.task:
        runs = {w: report(f"{task} x{w}", measure(task, w)) for w in args.workers}
        out["tasks"][task] = {"by_workers": runs}
        if 1 in runs and 2 in runs:
            out["tasks"][task]["speedup_2_workers"] = round(runs[1]["wall_s"] / runs[2]["wall_s"], 2)
    out["machine"]["load_average_at_end"] = os.getloadavg()[0]
    out["machine"]["torch_threads_per_worker"] = {w: threads_per_worker(w) for w in args.workers}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
