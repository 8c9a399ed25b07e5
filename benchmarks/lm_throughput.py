"""LM training throughput on WikiText-2: the engine's step vs a plain word_language_model loop, fp32 vs bf16.

Prints one JSON object. For each configuration of the course report (batch 20, bptt 35): ms/batch and
tokens/s of sweeplab's training step in fp32 and bf16, the same model in a plain pytorch/examples-style
loop (fp32), the trainable parameters, the fraction of this machine's measured matmul peak the step
reaches (and, on a CPU, that its matmul kernels reach by themselves, from torch.profiler), and whether the
bf16 loss curve agrees with fp32's (the loops draw the same dropout masks at each step).

    SWEEPLAB_DATA=../shared/data .venv/bin/python benchmarks/lm_throughput.py [--steps 30] [--device cpu]
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
from torch import nn

from sweeplab.engine.trainer import Trainer
from sweeplab.models.device import get_device, keep_freed_memory, synchronize
from sweeplab.registry import TASKS
from sweeplab.store import open_store
from sweeplab.tasks import resolve
from sweeplab.tasks.lm import repackage_hidden

CONFIGS = {
    "LSTM 300x1": {"model": "lstm", "model.nlayers": 1},
    "LSTM 300x2": {"model": "lstm", "model.nlayers": 2},
    "GRU 300x1": {"model": "gru", "model.nlayers": 1},
    "Transformer 300 L2 H2": {"model": "transformer", "model.nlayers": 2, "model.nhead": 2, "optim.lr": 5.0},
}
BASE = {"model.emsize": 300, "model.nhid": 300, "train.batch_size": 20, "train.bptt": 35, "train.clip": 0.25,
        "optim.lr": 20.0, "data.eval_tokens": 1000}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def step_flops(model: nn.Module, tokens: int) -> float:
    """Matmul FLOPs of one training step: 2 per multiply-add, forward + backward = 3x forward.
    Embedding lookups are not matmuls; attention's T x T products are small at bptt 35 and left out."""
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "encoder" not in n.split(".")[0])
    return 6.0 * weights * tokens


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def matmul_kernel_fraction(loop, batches: list, flops_per_step: float, dtype: torch.dtype) -> float:
    """FLOP/s inside the matmul kernels alone (the nn.Linear layers' FLOPs over the self time torch.profiler
    gives the matmul ops; the recurrence runs in its own kernels, counted in neither), over the matmul
    peak measured just before: how near its peak the decoder's GEMMs run, apart from the rest of the step."""
    peak = matmul_peak(torch.device("cpu"), dtype)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for k, batch in enumerate(batches):
            seeded_step(loop, batch, k)
    seconds = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS) / 1e6
    return flops_per_step * len(batches) / max(seconds, 1e-9) / peak


def linear_flops(model: nn.Module, tokens: int) -> float:
    """Matmul FLOPs of the nn.Linear layers in one training step (forward + backward = 3x forward)."""
    return 6.0 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) * tokens


def build(name: str, precision: str, device: str, store_url: str, root: str) -> Trainer:
    cfg = resolve("lm", {**BASE, **CONFIGS[name], "train.precision": precision, "device": device})
    torch.manual_seed(cfg.seed)
    task = TASKS.get("lm").obj(cfg, get_device(device))
    model = task.build()
    trainer = Trainer(task, model, store=open_store(store_url), run_id="bench", run_dir=__import__("pathlib").Path(root))
    return trainer


class EngineLoop:
    """sweeplab's training step (Trainer.train_step: autocast, clipping, optimizer), batch after batch."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.losses = trainer, []
        trainer.task.hidden = None
        trainer.model.train()

    def step(self, batch) -> None:
        self.losses.append(self.trainer.train_step(batch).loss.detach())


class PlainLoop:
    """pytorch/examples word_language_model main.py's train() loop, on the same model class."""

    def __init__(self, model: nn.Module, lr: float, clip: float = 0.25):
        self.model, self.lr, self.clip, self.losses = model, lr, clip, []
        self.criterion = nn.CrossEntropyLoss()
        self.hidden = model.init_hidden(20)
        model.train()

    def step(self, batch) -> None:
        data, targets = batch
        self.model.zero_grad()
        self.hidden = repackage_hidden(self.hidden)
        output, self.hidden = self.model(data, self.hidden)
        loss = self.criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        for p in self.model.parameters():
            p.data.add_(p.grad, alpha=-self.lr)
        self.losses.append(loss.detach())


def seeded_step(loop, batch, k: int) -> None:
    """Step k of every loop draws the same dropout masks: the loops share torch's global generator, and
    without this each would see the masks the others left it, and their loss curves would differ by that."""
    torch.manual_seed(1000 + k)
    loop.step(batch)


def time_interleaved(loops: dict, batches: list, warmup: int, rounds: int, device: torch.device) -> dict[str, float]:
    """Median ms/batch per loop over `rounds` rounds. The loops take turns, in an order that rotates
    each round, so drift in the machine's speed (other load, clocks) falls on all of them alike."""
    for loop in loops.values():
        for k, batch in enumerate(batches[:warmup]):
            seeded_step(loop, batch, k)
    per_round = len(batches[warmup:]) // rounds
    times: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(rounds):
        first = warmup + r * per_round
        chunk = batches[first: first + per_round]
        names = list(loops)
        for name in names[r % len(names):] + names[: r % len(names)]:
            loop = loops[name]
            synchronize(device)
            start = time.perf_counter()
            for k, batch in enumerate(chunk, start=first):
                seeded_step(loop, batch, k)
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000 / len(chunk))
    return {name: statistics.median(t) for name, t in times.items()}


def bench(name: str, args: argparse.Namespace, peaks: dict[str, float], root: str) -> dict:
    """The three loops start from the same weights (same seed) and see the same batches."""
    store_url = f"sqlite:///{root}/bench.sqlite"
    fp32 = build(name, "fp32", args.device, store_url, root)
    batches = list(_take(fp32.task.train_batches(1), args.warmup + args.steps))
    tokens = batches[0][1].numel()
    plain = build(name, "fp32", args.device, store_url, root)
    loops = {"plain_fp32": PlainLoop(plain.model, plain.task.cfg.optim.lr), "fp32": EngineLoop(fp32),
             "bf16": EngineLoop(build(name, "bf16", args.device, store_url, root))}
    ms = time_interleaved(loops, batches, args.warmup, args.rounds, fp32.device)
    curves = {label: [float(v) for v in loop.losses] for label, loop in loops.items()}  # before any profiled step
    flops = step_flops(fp32.model, tokens)
    row: dict = {"params": fp32.task.count_params(fp32.model)}
    for label, peak in (("plain_fp32", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")):
        row[label] = {"ms_per_batch": round(ms[label], 2), "tokens_per_s": round(tokens * 1000 / ms[label]),
                      "fraction_of_matmul_peak": round(flops / (ms[label] / 1000) / peaks[peak], 3)}
    if fp32.device.type == "cpu":  # the profiler's CPU times mean nothing for CUDA kernels
        for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            fraction = matmul_kernel_fraction(loops[label], batches[-3:], linear_flops(fp32.model, tokens), dtype)
            row[label]["matmul_kernels_fraction_of_peak"] = round(fraction, 3)
    row["engine_vs_plain"] = round(ms["plain_fp32"] / ms["fp32"], 3)  # >= 1: the engine is no slower
    row["bf16_speedup"] = round(ms["fp32"] / ms["bf16"], 3)
    tail = max(len(curves["fp32"]) // 3, 1)  # early steps at lr 20 are chaotic; compare where curves settle
    row["mean_loss_last_third"] = {label: round(statistics.fmean(c[-tail:]), 3) for label, c in curves.items()}
    row["bf16_vs_fp32_loss_last_third"] = round(row["mean_loss_last_third"]["bf16"] - row["mean_loss_last_third"]["fp32"], 3)
    row["bf16_vs_plain"] = round(ms["plain_fp32"] / ms["bf16"], 3)
    row["loss_first"] = {label: round(c[0], 3) for label, c in curves.items()}
    return row


def agreement(name: str, steps: int, device: str, root: str) -> dict:
    """fp32 and bf16 engine steps from the same weights over the same batches and dropout masks, for
    `steps` steps: the mean training loss over the last third of each, where the curves have settled
    (the first few dozen steps at lr 20 are chaotic: any rounding difference moves them by tenths)."""
    store_url = f"sqlite:///{root}/agree.sqlite"
    loops = {label: EngineLoop(build(name, label, device, store_url, root)) for label in ("fp32", "bf16")}
    batches = _take(loops["fp32"].trainer.task.train_batches(1), steps)
    for loop in loops.values():
        for k, batch in enumerate(batches):
            seeded_step(loop, batch, k)
    tail = max(steps // 3, 1)
    means = {label: statistics.fmean(float(v) for v in loop.losses[-tail:]) for label, loop in loops.items()}
    return {"steps": steps, "mean_loss_last_third": {k: round(v, 3) for k, v in means.items()},
            "bf16_minus_fp32": round(means["bf16"] - means["fp32"], 3)}


def _take(iterable, n: int) -> list:
    out = []
    for item in iterable:
        out.append(item)
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps, split into --rounds rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc as it is")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--agreement", type=int, default=0, metavar="STEPS",
                        help="instead of timing: train fp32 and bf16 for STEPS steps and compare their losses")
    args = parser.parse_args()
    device = get_device(args.device)
    if device.type == "cpu" and not args.default_malloc:
        keep_freed_memory()  # as every sweeplab run on a CPU does (engine/runner.py)
    load_at_start = os.getloadavg()[0]
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    if args.agreement:
        with tempfile.TemporaryDirectory() as root:
            print(json.dumps({name: agreement(name, args.agreement, args.device, root) for name in names}, indent=1))
        return
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    with tempfile.TemporaryDirectory() as root:
        results = {name: bench(name, args, peaks, root) for name in names}
    print(json.dumps({"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                                  "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                                  "load_avg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)]},
                      "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
                      "batch_size": 20, "bptt": 35, "steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
