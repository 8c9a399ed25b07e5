"""Checkpoints: one file per epoch under <run_dir>/checkpoints, written and read through sweeplab.io.

A checkpoint always loads onto the CPU and its state dicts are then copied to wherever the run trains
(`load_state_dict` copies into the parameters' device), so a run saved on a GPU resumes on a CPU and the
other way round, and the generator states, which must be CPU tensors, stay where torch wants them.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from sweeplab import io
from sweeplab.io import DamagedFile, UnreadableFile, save_atomic
from sweeplab.store.runfiles import open_run_file

__all__ = ["STATE_KEYS", "DamagedFile", "UnreadableFile", "epoch_path", "get_rng_state", "list_epochs", "load",
           "load_from_run", "prune", "save_atomic", "set_aside", "set_rng_state"]

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
STATE_KEYS = ("model", "optimizer", "scaler", "train_state", "rng")  # what Trainer.save_checkpoint writes


def load(path: Path, *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint's contents, on the CPU. DamagedFile: it never will load; UnreadableFile: not now (I/O)."""
    return io.load(path, "cpu", keys=keys)


def load_from_run(run_dir: Path, epoch: int) -> dict[str, Any]:
    """Another run's checkpoint, for a command that reads it (generate, attention, compare): opened through
    store.runfiles, so a link out of the run folder, a FIFO or a device is refused, never loaded. Its weights
    are all such a command needs: a file without them is damaged."""
    name = f"checkpoints/epoch_{epoch:03d}.pt"
    file = open_run_file(run_dir, name)
    if file is None:
        raise UnreadableFile(f"{run_dir / name}: file not found")
    with file:
        return io.load(run_dir / name, "cpu", keys=("model",), file=file)


def epoch_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"


def list_epochs(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _EPOCH_FILE.match(p.name)))


def prune(run_dir: Path, keep: set[int]) -> None:
    for epoch in list_epochs(run_dir):
        if epoch not in keep:
            epoch_path(run_dir, epoch).unlink(missing_ok=True)


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the way (never deleted: someone may want to look at it); pruning
    and resuming only ever see `epoch_NNN.pt` names."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    return target


# -- generators ---------------------------------------------------------------------------------------
# The data a task draws is a pure function of (seed, epoch, batch), and checkpoints fall on epoch ends, so
# the checkpoint's epoch is the data position. What else draws random numbers (dropout) reads the global
# generators: the CPU one and one per CUDA device, all saved and restored.

def get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    """Restore `get_rng_state()`'s result (or the CPU state alone, as checkpoints before the dict held it).
    CUDA states are restored for the devices this machine has; a run resumed on the CPU needs none."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state.get("cuda", [])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
