"""Data-parallel training (DDP): one run, `train.nproc` processes, one shard of every batch each.

`execute` calls `launch` when a run asks for more than one process. `launch` starts the ranks as
`python -m sweeplab.engine.distributed` (plain subprocesses, so a daemonic sweep worker can start them
too), hands each its job on stdin (the store URL may hold a password: never on a command line), and
watches them: when one rank fails, the others are stopped instead of waiting forever in a collective.

Inside a rank, `execute` runs as usual with a `Dist` describing the group. Rank 0 alone writes the
store, the checkpoints and the artifacts; every rank trains on its shard (gradients averaged by
DistributedDataParallel), and every rank evaluates with the same weights, so all agree on the
metrics, on the best epoch and on a divergence.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sweeplab.errors import UserError

_JOB_ENV = "SWEEPLAB_DIST_JOB"  # marks a rank process; its job arrives on stdin


@dataclass(frozen=True)
class Dist:
    """Where this process stands in its group; `Dist()` is a plain single-process run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_sum(self, values: dict[str, Any], device: torch.device) -> dict[str, float]:
        """Sum per-rank totals (loss sums, counts) over the group, in one collective."""
        keys = sorted(values)
        if not self.active:
            return {k: float(values[k]) for k in keys}
        packed = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device) for k in keys])
        torch_dist.all_reduce(packed)
        return dict(zip(keys, packed.tolist(), strict=True))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def current() -> Dist:
    """The group this process was started in (by `launch`), or a single process."""
    if _JOB_ENV not in os.environ:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("WORLD_SIZE is set (torchrun?): sweeplab starts its own DDP processes; "
                            "run it once, with train.nproc=N")
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]))


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, under torch.compile and DistributedDataParallel."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def check_request(device_name: str, nproc: int, batch_size: int) -> None:
    """A DDP request this machine can serve, or one clear line."""
    if nproc == 1:
        return
    if device_name.startswith("cuda:"):
        raise UserError(f"device: {device_name!r} names one GPU, but train.nproc={nproc} needs {nproc}; "
                        "accepted with train.nproc > 1: device=cuda (GPUs 0..N-1), device=cpu")
    gpus = torch.cuda.device_count()
    if (device_name == "cuda" or (device_name == "auto" and gpus)) and nproc > gpus:
        raise UserError(f"train.nproc: {nproc} processes asked for, but {gpus} GPU(s) are available; "
                        f"accepted: 1..{max(gpus, 1)}")
    if batch_size % nproc:
        raise UserError(f"train.batch_size: {batch_size} does not split evenly over train.nproc={nproc} processes; "
                        f"accepted: a multiple of {nproc}")


def rank_device(device: torch.device, rank: int) -> torch.device:
    """Rank r trains on GPU r; CPU ranks share the cores."""
    if device.type == "cuda":
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return device


def init_group(dist: Dist, device: torch.device) -> None:
    if not dist.active or torch_dist.is_initialized():
        return
    if device.type == "cpu":  # the ranks split the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world)


# -- the launcher -----------------------------------------------------------------------------------

def launch(config: dict[str, Any], store_url: str, options: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Run one config on `nproc` ranks; returns rank 0's outcome ({"status"} or {"error", "user_error"}).

    Ctrl-C or SIGTERM (turned into KeyboardInterrupt by the caller) stops every rank with SIGTERM, which each
    turns into a clean `interrupted` end, and is then re-raised.
    """
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="sweeplab-ddp-") as tmp:
        outcomes = [Path(tmp) / f"rank{r}.json" for r in range(nproc)]
        procs = []
        for rank in range(nproc):
            env = {**os.environ, _JOB_ENV: "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            proc = subprocess.Popen([sys.executable, "-m", "sweeplab.engine.distributed"], stdin=subprocess.PIPE,
                                    env=env, text=True)
            job = {"config": config, "store": store_url, "options": options, "outcome": str(outcomes[rank])}
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            procs.append(proc)
        try:
            _wait_all(procs)
        except KeyboardInterrupt:
            _stop(procs)
            raise
        results = [json.loads(p.read_text()) if p.exists() else None for p in outcomes]
    errors = [r for r in results if r and "error" in r]
    if errors:  # a rank's own failure, not the interruption the others then saw
        return errors[0]
    if results[0] is None:
        failed = next((r for r, p in enumerate(procs) if p.returncode), 0)
        return {"error": f"DDP rank {failed} exited with code {procs[failed].returncode}", "user_error": False}
    return results[0]


def _wait_all(procs: list[subprocess.Popen]) -> None:
    """Until every rank has exited; the first failure stops the rest (they would wait in a collective)."""
    while any(p.poll() is None for p in procs):
        if any(p.returncode for p in procs if p.returncode is not None):
            _stop(procs)
            return
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL for a rank still blocked in a collective (a signal cannot reach it there)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main() -> int:
    """One rank: rebuild the config, run it, and leave the outcome where `launch` reads it."""
    from sweeplab.config import flatten
    from sweeplab.engine.runner import RunOptions, execute
    from sweeplab.store import open_store
    from sweeplab.tasks import resolve

    job = json.load(sys.stdin)
    if os.environ["RANK"] != "0":
        job["options"]["quiet"] = True  # rank 0 speaks for the group
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides, and stops ranks with SIGTERM
    outcome: dict[str, Any]
    try:
        cfg = resolve(job["config"]["task"], flatten(job["config"]))
        result = execute(cfg, open_store(job["store"]), RunOptions(**job["options"]))
        outcome = {"status": result.status}
    except UserError as exc:
        outcome = {"error": str(exc), "user_error": True}
    except Exception as exc:  # noqa: BLE001 - reported by the launcher; execute marked the run failed
        outcome = {"error": f"{type(exc).__name__}: {exc}", "user_error": False}
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    Path(job["outcome"]).write_text(json.dumps(outcome))
    return 0 if "status" in outcome else 1


if __name__ == "__main__":
    sys.exit(_rank_main())
