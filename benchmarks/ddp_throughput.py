"""DDP through the engine: one run on 1 process against the same run on N processes (train.nproc).

Each configuration runs `--steps` optimizer steps as an ordinary run in a fresh store, once with
train.nproc=1 and once with train.nproc=N, on the device given (cpu: gloo, the ranks sharing the cores;
cuda: NCCL, one GPU per rank). ms/batch is the median of the logged intervals after the first (warm-up),
as `sweeplab bench devices` reports it; the global batch is the same in both, so the ratio is the speed-up.

    .venv/bin/python benchmarks/ddp_throughput.py [--device cpu] [--nproc 2] [--steps 60]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import torch

from sweeplab.engine.runner import RunOptions, execute
from sweeplab.store import open_store
from sweeplab.sweep.bench import INTERVALS, steady_ms_per_batch
from sweeplab.tasks import resolve

CONFIGS = {
    "lm lstm 300x1 wikitext2 (batch 20, bptt 35)": ("lm", {"model": "lstm", "model.nlayers": 1, "model.emsize": 300,
                                                          "model.nhid": 300, "train.batch_size": 20, "data.eval_tokens": 20000}),
    "image vgg8 cifar10 (batch 128)": ("image", {"data": "cifar10", "model": "vgg8", "train.batch_size": 128,
                                                 "data.test_limit": 200}),
    "image resnet18 cifar10 (batch 64)": ("image", {"data": "cifar10", "model": "resnet18",
                                                    "train.batch_size": 64, "data.test_limit": 200}),
}


def measure(task: str, layer: dict, device: str, nproc: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/s.sqlite")
        cfg = resolve(task, layer, {"device": device, "train.nproc": nproc, "train.max_steps": steps,
                                    "train.log_every": max(steps // INTERVALS, 1), "train.keep_checkpoints": "last"})
        result = execute(cfg, store, RunOptions(quiet=True))
        return {"nproc": nproc, "status": result.status, "ms_per_batch": steady_ms_per_batch(store, result.run_id),
                "train_loss": result.metrics.get("train/loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", nargs="*", help="substrings of the configuration names to run")
    args = parser.parse_args()
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__, "device": args.device,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}, "runs": {}}
    for name, (task, layer) in CONFIGS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        one = measure(task, layer, args.device, 1, args.steps)
        many = measure(task, layer, args.device, args.nproc, args.steps)
        speedup = one["ms_per_batch"] / many["ms_per_batch"] if one["ms_per_batch"] and many["ms_per_batch"] else None
        out["runs"][name] = {"single": one, "ddp": many, "speedup": speedup}
        print(json.dumps({name: out["runs"][name]}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
