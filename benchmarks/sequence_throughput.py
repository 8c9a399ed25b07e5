"""Sequence puzzles on CPU: training steps/s, and the wall time of the palindrome length sweep.

1. Steps/s of the engine's training loop (a fresh batch generated each step, forward, backward, clip,
   RMSprop), read from the runs' own `train/ms_per_batch`: palindrome length 20 with the hand-written
   `rnn` and `lstm`, addition with 10 digits and `gru`. Beside them, the hand-written model and
   torch.nn.RNN / nn.LSTM of the same size in the same plain loop, taking turns: what unrolling by hand costs.
2. The palindrome length sweep 5, 10, 15, 20 (vanilla RNN, course settings) at quick scale, each
   length a separate run through the runner: wall time per length and in all, test accuracy and
   convergence step.

Throughput is measured with each torch intra-op thread count of --threads: on a small CPU shared with
other work, a second thread can cost more than it brings to these small sequential matmuls.
Prints one JSON object (and, with --markdown, the tables for benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/sequence_throughput.py [--steps 300] [--quick-steps 2000] [--threads 1,2] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from sweeplab.engine.runner import RunOptions, execute
from sweeplab.models.sequence import HandLSTM, VanillaRNN
from sweeplab.store import open_store
from sweeplab.tasks import resolve

THROUGHPUT = {
    "palindrome L20 rnn": ("palindrome", {"model": "rnn", "data.length": 20}),
    "palindrome L20 lstm": ("palindrome", {"model": "lstm", "data.length": 20}),
    "addition 10 digits gru": ("addition", {"model": "gru", "data.max_digits": 10}),
}
SWEEP_LENGTHS = (5, 10, 15, 20)


def run(task: str, overrides: dict, store_url: str) -> tuple[dict[str, float], float]:
    cfg = resolve(task, {"device": "cpu", **overrides})
    start = time.perf_counter()
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    return result.metrics, time.perf_counter() - start


def engine_steps_per_s(task: str, overrides: dict, steps: int, store_url: str) -> float:
    """One epoch of `steps` steps; the engine times it (data generation included, evaluation not).
    `store_url` must be a fresh store: in one that has this config, the run would not be trained again."""
    metrics, _ = run(task, {**overrides, "train.max_steps": steps, "train.eval_every": steps,
                            "train.eval_batch_size": 100, "data.test_size": 100}, store_url)
    return 1000.0 / metrics["train/ms_per_batch"]


def plain_loop_steps_per_s(kind: str, length: int, steps: int, rounds: int = 5) -> dict[str, float]:
    """The hand-written model and torch's own layer of the same size (scalar input, batch 128, hidden 128)
    in the same plain loop on a fixed batch, taking turns in `rounds` rounds (median): what unrolling by
    hand costs, apart from the engine's data generation and bookkeeping."""
    x, y = torch.randint(0, 10, (128, length - 1, 1)).float(), torch.randint(0, 10, (128,))
    hand = {"rnn": VanillaRNN, "lstm": HandLSTM}[kind](1, 128, 10)
    layer, head = {"rnn": nn.RNN, "lstm": nn.LSTM}[kind](1, 128, batch_first=True), nn.Linear(128, 10)
    loops = {"hand": _plain_loop(list(hand.parameters()), hand, x, y),
             "torch_layer": _plain_loop([*layer.parameters(), *head.parameters()],
                                        lambda v: head(layer(v)[0][:, -1]), x, y)}
    for step in loops.values():
        for _ in range(10):  # warm-up steps are not timed
            step()
    per_round = max(steps // rounds, 1)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, step in loops.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            times[name].append(per_round / (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def _plain_loop(params: list, model, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.RMSprop(params, lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    return step


def length_sweep(quick_steps: int, store_url: str) -> dict:
    rows, start = [], time.perf_counter()
    for length in SWEEP_LENGTHS:
        metrics, wall = run("palindrome", {"data.length": length, "train.max_steps": quick_steps}, store_url)
        rows.append({"length": length, "wall_s": round(wall, 2), "test_acc": metrics["test/acc"],
                     "convergence_step": metrics.get("convergence_step")})
    return {"quick_steps": quick_steps, "threads": torch.get_num_threads(), "runs": rows,
            "total_wall_s": round(time.perf_counter() - start, 2)}


def throughput(steps: int, threads: list[int], root: str) -> dict[str, dict[str, float]]:
    """{configuration: {"engine@T": steps/s, "torch_layer@T": steps/s}} for each thread count T."""
    rows: dict[str, dict[str, float]] = {name: {} for name in THROUGHPUT}
    for n in threads:
        torch.set_num_threads(n)
        store_url = f"sqlite:///{root}/threads{n}.sqlite"
        for name, (task, overrides) in THROUGHPUT.items():
            rows[name][f"engine@{n}"] = round(engine_steps_per_s(task, overrides, steps, store_url), 1)
            if task == "palindrome":
                plain = plain_loop_steps_per_s(overrides["model"], 20, steps)
                rows[name][f"hand_plain@{n}"] = round(plain["hand"], 1)
                rows[name][f"torch_layer@{n}"] = round(plain["torch_layer"], 1)
                rows[name][f"hand_vs_torch@{n}"] = round(plain["hand"] / plain["torch_layer"], 3)
    return rows


def markdown(report: dict) -> str:
    threads = report["machine"]["threads_measured"]
    head = ([f"engine, {n} thread(s)" for n in threads] + [f"hand-written, plain loop, {n} thread(s)" for n in threads]
            + [f"torch layer, plain loop, {n} thread(s)" for n in threads] + [f"hand / torch, {n} thread(s)" for n in threads])
    lines = ["| configuration (steps/s) | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in report["throughput"].items():
        cells = [f"{row[f'engine@{n}']:.0f}" for n in threads]
        for key, fmt in (("hand_plain", ".0f"), ("torch_layer", ".0f"), ("hand_vs_torch", ".2f")):
            cells += [f"{row[f'{key}@{n}']:{fmt}}" if f"{key}@{n}" in row else "—" for n in threads]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sweep = report["sweep"]
    lines += ["", f"Palindrome length sweep, vanilla RNN, course settings, {sweep['quick_steps']} steps per run, "
              f"{sweep['threads']} thread(s):", "",
              "| length | wall s | test acc | convergence step |", "|---|---|---|---|"]
    for row in sweep["runs"]:
        step = "not converged" if row["convergence_step"] is None else f"{row['convergence_step']:.0f}"
        lines.append(f"| {row['length']} | {row['wall_s']:.1f} | {row['test_acc']:.4f} | {step} |")
    lines.append(f"| all four | {sweep['total_wall_s']:.1f} | | |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per throughput configuration")
    parser.add_argument("--quick-steps", type=int, default=2000, help="steps per run of the length sweep")
    parser.add_argument("--threads", default="1,2", help="torch intra-op thread counts to measure throughput with")
    parser.add_argument("--sweep-threads", type=int, default=0, help="threads of the length sweep, 0 = default")
    parser.add_argument("--markdown", action="store_true", help="also print the tables for RESULTS.md")
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(",")]
    default_threads = torch.get_num_threads()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as root:
        os.environ["SWEEPLAB_CACHE"] = os.path.join(root, "cache")
        rows = throughput(args.steps, threads, root)
        torch.set_num_threads(args.sweep_threads or default_threads)
        sweep = length_sweep(args.quick_steps, f"sqlite:///{root}/sweep.sqlite")
    report = {"machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads_measured": threads,
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP's default"),
                          "torch": torch.__version__, "python": platform.python_version(),
                          "load_avg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)]},
              "throughput": rows, "sweep": sweep}
    print(json.dumps(report))
    if args.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
