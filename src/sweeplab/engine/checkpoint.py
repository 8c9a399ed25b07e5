"""Checkpoints: one file per epoch under <run_dir>/checkpoints, written and read through sweeplab.io."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sweeplab import io
from sweeplab.io import UnreadableFile, save_atomic

__all__ = ["STATE_KEYS", "UnreadableFile", "epoch_path", "list_epochs", "load", "prune", "save_atomic"]

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
STATE_KEYS = ("model", "optimizer", "scaler", "train_state", "rng")  # what Trainer.save_checkpoint writes


def load(path: Path, map_location: str | torch.device = "cpu", *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint's contents; any failure is an UnreadableFile naming `path`."""
    return io.load(path, map_location, keys=keys)


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
