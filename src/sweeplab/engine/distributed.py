"""Data-parallel training (DDP) inside a rank: one run, `train.nproc` processes, a share of every batch each.

A process is a rank when a launcher has set `RANK` and `WORLD_SIZE`: sweeplab's own (`engine/launch.py`,
which `execute` calls for `train.nproc=N`), or `torchrun`, SLURM's or Kubernetes' launchers, which set the
same variables. `execute` then joins the group and runs as usual with a `Dist` describing it. Rank 0 alone
writes the store, the checkpoints and the artifacts; every rank trains on its part of each batch, its
mean loss weighted by its share (so the ranks' averaged gradient is the whole batch's, for any batch size,
an empty part included); BatchNorm layers compute the whole batch's statistics (`SyncBatchNorm`, below);
evaluation is shared out and the sums added up, so all ranks agree on the metrics, on the best epoch and
on a divergence.

Dropout masks: each rank's generators are seeded from (seed, rank), so the ranks' masks are independent,
as a single process's masks for different items are; they are not the masks one process would draw for
the whole batch, so a DDP run with dropout equals the single-process run in distribution, not bit for bit.
Without dropout the two agree to float rounding (tests/test_distributed.py).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from sweeplab.errors import UserError

# The differentiable all-reduce SyncBatchNorm needs; its suggested replacement (functional collectives) has no
# autograd support yet.
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in its group; `Dist()` is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the rank among this machine's processes: its GPU

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

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on rank 0 (the others get [obj] back)."""
        if not self.active:
            return [obj]
        received = [None] * self.world if self.is_main else None
        torch_dist.gather_object(obj, received, dst=0)
        return received if self.is_main else [obj]

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
        """DistributedDataParallel around `model`, its BatchNorm layers synchronised over the ranks first."""
        if not self.active:
            return model
        sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def current() -> Dist:
    """The group a launcher started this process in (sweeplab's, torchrun, SLURM, Kubernetes), or a single
    process. Launchers say so through RANK and WORLD_SIZE (and LOCAL_RANK for the device of this node)."""
    try:
        world = int(os.environ.get("WORLD_SIZE") or 1)
        rank = int(os.environ.get("RANK") or 0)
        local = int(os.environ.get("LOCAL_RANK") or rank)
    except ValueError:
        raise UserError(f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: the launcher's "
                        "environment is not numbers; accepted: the variables torchrun sets") from None
    if world > 1 and not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside WORLD_SIZE={world}; accepted: 0..{world - 1}")
    return Dist(rank=rank, world=world, local_rank=local) if world > 1 else Dist()


def rank_seed(seed: int, rank: int) -> int:
    """The generators' seed of a rank after the model is built: rank 0 keeps the run's own stream."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % 2**63


def check_request(device_name: str, nproc: int, batch_size: int, *, launched: bool = False) -> None:
    """A DDP request this machine can serve, or one clear line. Under a launcher (`launched`), the processes
    exist already, possibly on several machines: only the batch's split is checked."""
    if nproc == 1:
        return
    if batch_size % nproc:
        raise UserError(f"train.batch_size: {batch_size} does not split evenly over train.nproc={nproc} processes; "
                        f"accepted: a multiple of {nproc}")
    if launched:
        return
    if device_name.startswith("cuda:"):
        raise UserError(f"device: {device_name!r} names one GPU, but train.nproc={nproc} needs {nproc}; "
                        "accepted with train.nproc > 1: device=cuda (GPUs 0..N-1), device=cpu")
    gpus = torch.cuda.device_count()
    if (device_name == "cuda" or (device_name == "auto" and gpus)) and nproc > gpus:
        raise UserError(f"train.nproc: {nproc} processes asked for, but {gpus} GPU(s) are available; "
                        f"accepted: 1..{max(gpus, 1)}")


def rank_device(device: torch.device, dist: Dist) -> torch.device:
    """Local rank r trains on this machine's GPU r; CPU ranks share the cores."""
    if device.type == "cuda":
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return device


def init_group(dist: Dist, device: torch.device) -> None:
    if not dist.active or torch_dist.is_initialized():
        return
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise UserError(f"WORLD_SIZE={dist.world} is set but {' and '.join(missing)} is not: a launcher sets them all "
                        "(torchrun, srun, a Kubernetes job); for processes on this machine use train.nproc=N instead")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # the ranks split the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=dist.rank, world_size=dist.world)


def leave_group() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# -- BatchNorm over the whole batch -----------------------------------------------------------------

class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the whole global batch, on any backend.

    torch's nn.SyncBatchNorm runs on GPUs only; this one sums over the ranks with `torch.distributed.nn`'s
    all-reduce, which is differentiable and works with gloo on the CPU as with NCCL, so the gradient flows
    through the shared mean and variance exactly as in one process's BatchNorm. Two passes (the mean, then
    the squared deviations from it), as a single process computes them. The parameters and buffers keep
    their names: checkpoints are the same as without DDP."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch_dist.is_initialized()):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]  # every dimension but the channels
        xf = x.float()
        count = xf.new_full((1,), x.numel() / max(x.size(1), 1))  # a fill on the device: no host-to-device copy
        totals = dist_fn.all_reduce(torch.cat([xf.sum(dims), count]))  # (C + 1,): sums, then the item count
        n = totals[-1]
        mean = totals[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / n  # biased: what normalises the batch
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n.detach())
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm layer of `model` a SyncBatchNorm, in place: the class changes, the parameter and
    buffer objects stay (the optimizer, built before, holds them; checkpoints keep their keys)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.__class__ = SyncBatchNorm
    return model
