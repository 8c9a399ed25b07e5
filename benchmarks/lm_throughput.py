"""LM training throughput on WikiText-2: the engine's step vs a plain word_language_model loop, fp32 vs bf16.

Prints one JSON object. For each configuration of the course report (batch 20, bptt 35): ms/batch and
tokens/s of sweeplab's training step in fp32 and bf16, the same model in a plain pytorch/examples-style
loop (fp32), the trainable parameters, the fraction of this machine's measured matmul peak the step
reaches, and whether the bf16 loss curve agrees with fp32's.

    SWEEPLAB_DATA=../shared/data .venv/bin/python benchmarks/lm_throughput.py [--steps 30] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch
from torch import nn

from sweeplab.config import resolve
from sweeplab.engine.device import get_device, synchronize
from sweeplab.engine.trainer import Trainer
from sweeplab.registry import TASKS
from sweeplab.store import open_store
from sweeplab.tasks.lm import repackage_hidden

CONFIGS = {
    "LSTM 300x1": {"model": "lstm", "model.nlayers": 1},
    "LSTM 300x2": {"model": "lstm", "model.nlayers": 2},
    "GRU 300x1": {"model": "gru", "model.nlayers": 1},
    "Transformer 300 L2 H2": {"model": "transformer", "model.nlayers": 2, "model.nhead": 2},
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


def build(name: str, precision: str, device: str, store_url: str, root: str) -> Trainer:
    cfg = resolve("lm", {**BASE, **CONFIGS[name], "train.precision": precision, "device": device})
    torch.manual_seed(cfg.seed)
    task = TASKS.get("lm").obj(cfg, get_device(device))
    model = task.build()
    trainer = Trainer(task, model, store=open_store(store_url), run_id="bench", run_dir=__import__("pathlib").Path(root))
    return trainer


def time_engine(trainer: Trainer, batches: list, warmup: int) -> tuple[float, list[float]]:
    trainer.task.hidden = None
    trainer.model.train()
    losses = []
    for i, batch in enumerate(batches):
        if i == warmup:
            synchronize(trainer.device)
            start = time.perf_counter()
        losses.append(trainer.train_step(batch).loss.detach())
    synchronize(trainer.device)
    return (time.perf_counter() - start) * 1000 / (len(batches) - warmup), [float(v) for v in losses]


def time_plain(model: nn.Module, batches: list, warmup: int, lr: float = 20.0, clip: float = 0.25) -> float:
    """pytorch/examples word_language_model main.py's train() loop, verbatim in spirit."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    hidden = model.init_hidden(20)
    for i, (data, targets) in enumerate(batches):
        if i == warmup:
            synchronize(data.device)
            start = time.perf_counter()
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
    synchronize(batches[0][0].device)
    return (time.perf_counter() - start) * 1000 / (len(batches) - warmup)


def bench(name: str, args: argparse.Namespace, peaks: dict[str, float], root: str) -> dict:
    store_url = f"sqlite:///{root}/bench.sqlite"
    fp32 = build(name, "fp32", args.device, store_url, root)
    batches = list(_take(fp32.task.train_batches(1), args.warmup + args.steps))
    tokens = batches[0][1].numel()
    plain_model = build(name, "fp32", args.device, store_url, root).model
    row: dict = {"params": fp32.task.count_params(fp32.model)}
    ms_plain = time_plain(plain_model, batches, args.warmup)
    ms_fp32, loss_fp32 = time_engine(fp32, batches, args.warmup)
    bf16 = build(name, "bf16", args.device, store_url, root)
    ms_bf16, loss_bf16 = time_engine(bf16, batches, args.warmup)
    flops = step_flops(fp32.model, tokens)
    for label, ms, peak in (("plain_fp32", ms_plain, "fp32"), ("fp32", ms_fp32, "fp32"), ("bf16", ms_bf16, "bf16")):
        row[label] = {"ms_per_batch": round(ms, 2), "tokens_per_s": round(tokens * 1000 / ms),
                      "fraction_of_matmul_peak": round(flops / (ms / 1000) / peaks[peak], 3)}
    row["engine_vs_plain"] = round(ms_plain / ms_fp32, 3)
    row["bf16_speedup"] = round(ms_fp32 / ms_bf16, 3)
    diffs = [abs(a - b) for a, b in zip(loss_fp32, loss_bf16)]
    row["bf16_loss_max_abs_diff"] = round(max(diffs), 4)
    row["loss_first_last_fp32"] = [round(loss_fp32[0], 3), round(loss_fp32[-1], 3)]
    row["loss_first_last_bf16"] = [round(loss_bf16[0], 3), round(loss_bf16[-1], 3)]
    return row


def _take(iterable, n: int) -> list:
    out = []
    for item in iterable:
        out.append(item)
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    args = parser.parse_args()
    device = get_device(args.device)
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    names = [n for n in CONFIGS if not args.only or n in args.only.split(",")]
    with tempfile.TemporaryDirectory() as root:
        results = {name: bench(name, args, peaks, root) for name in names}
    print(json.dumps({"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                                  "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                                  "threads": torch.get_num_threads(), "torch": torch.__version__},
                      "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
                      "batch_size": 20, "bptt": 35, "steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
