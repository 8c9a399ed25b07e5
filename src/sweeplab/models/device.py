"""Device choice, autocast and synchronisation, and the model inside its wrappers."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sweeplab.errors import UserError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def get_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} asked for, but no CUDA device is available; accepted here: auto, cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, glibc's malloc.h
_NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the system.

    A CPU training step allocates and frees tensors of tens of MB (a 700 x 33,278 logits matrix is
    93 MB); glibc serves each from a fresh mmap and unmaps it on free, so every step pays page faults
    on all of it (benchmarks/RESULTS.md, "malloc"). With mmap off and trimming off, freed blocks are
    reused, as a caching allocator would. The price: the process keeps its peak memory until it exits.
    Returns whether the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    # int mallopt(int param, int value). ctypes truncates a Python int to a C int silently, with or without
    # argtypes: the 2**36 passed here before reached glibc as 0, "trim on every free", the opposite of the
    # intent. -1 fits and is glibc's documented "never trim".
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, under torch.compile and DistributedDataParallel."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model
