"""What a model needs to train, known before it is built.

The model is first built on PyTorch's meta device (shapes, no storage) while every parameter and buffer is
counted as it is registered, so a size typed by hand (`model.emsize=10000000`) is refused in one line instead
of allocating until the machine gives out. Counting stops at the limit, so not even the meta build is finished
(layer counts are bounded in the configs: each layer costs Python objects, even on the meta device).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_buffer_registration_hook, register_module_parameter_registration_hook

from sweeplab.config import RunConfig
from sweeplab.errors import UserError
from sweeplab.limits import MODEL_BYTES

TRAIN_COPIES = 4  # weights, gradients and Adam's two moments: each parameter is held four times while training


class _OverLimit(Exception):
    pass


class _Tally:
    """Bytes of the tensors registered so far, each counted once (a tied weight is registered twice)."""

    def __init__(self, limit: int):
        self.limit, self.bytes, self.seen = limit, 0, set()

    def add(self, tensor: torch.Tensor | None, copies: int) -> None:
        if tensor is None or id(tensor) in self.seen:
            return
        self.seen.add(id(tensor))
        self.bytes += tensor.numel() * tensor.element_size() * copies
        if self.bytes > self.limit:
            raise _OverLimit


def training_bytes(create: Callable[..., nn.Module], args: tuple[Any, ...], limit: int) -> tuple[int, bool]:
    """Bytes `create(*args)` holds while it trains (buffers once, parameters TRAIN_COPIES times), counted on the
    meta device, and whether the count stopped early, past `limit`."""
    tally = _Tally(limit)
    hooks = [register_module_parameter_registration_hook(lambda _m, _n, p: tally.add(p, TRAIN_COPIES)),
             register_module_buffer_registration_hook(lambda _m, _n, b: tally.add(b, 1))]
    try:
        with torch.device("meta"):
            create(*args)
    except _OverLimit:
        return tally.bytes, True
    finally:
        for hook in hooks:
            hook.remove()
    return tally.bytes, False


def check_fits(create: Callable[..., nn.Module], args: tuple[Any, ...], cfg: RunConfig, device: torch.device) -> None:
    """UserError, in one line, when the model `create(*args)` would not fit in memory to train."""
    allowed = MODEL_BYTES.from_env()
    limit = allowed or device_memory(device)
    needed, over = training_bytes(create, args, limit)
    if not over:
        return
    memory = f"the {_gib(limit)} that {MODEL_BYTES.env} allows" if allowed else (
        f"the {_gib(limit)} of memory of {'this machine' if device.type == 'cpu' else device}")
    sizes = [f"model.{name}" for name, field in type(cfg.model).model_fields.items()
             if (field.json_schema_extra or {}).get("size")]
    raise UserError(f"model {cfg.model_name}: training it needs {_gib(needed)} or more (its parameters "
                    f"{TRAIN_COPIES} times, for weights, gradients and optimizer state), more than {memory}; "
                    f"lower {', '.join(sizes) or 'the size of the data'}; to allow more, use {MODEL_BYTES.env}=BYTES")


def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return host_memory()


def host_memory() -> int:
    """The machine's memory, or the container's share of it where a cgroup caps it."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        cap = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # "max" when uncapped
    except OSError:
        return total
    return min(total, int(cap)) if cap.isdigit() else total


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
