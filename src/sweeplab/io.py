"""The one home for writing and reading sweeplab's tensor files: checkpoints and prepared-data caches.

Writes are atomic (temp file, fsync, rename, fsync of the folder): a crash leaves the old file or the new
one, never half of one. Reads use `weights_only=True` always, so a file can hold tensors and plain data but
never code, and every way a read can fail (missing, truncated, garbage, refused objects, the wrong
contents) is one `UnreadableFile` naming the path. torch's own message is not passed on: it advises
`weights_only=False`, which would execute whatever the file holds.
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from sweeplab.errors import UserError


class UnreadableFile(UserError):
    """A checkpoint or cache file that cannot be loaded. The message names the file and why."""


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable: without it a power loss can bring back the old entry."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder cannot be opened for reading here (Windows): the rename is all we have
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: Path, map_location: str | torch.device = "cpu", *, keys: Iterable[str] = ()) -> Any:
    """The file's contents, tensors on `map_location`. With `keys`, the contents must be a dict holding them."""
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean "unreadable"
        raise UnreadableFile(f"{path}: cannot be loaded: {_reason(exc)}") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        found = f"keys {sorted(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise UnreadableFile(f"{path}: cannot be loaded: expected the keys {missing}, found {found}")
    return obj


def _reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in text:
        return "it holds Python objects other than tensors and plain data, which are never unpickled"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return "truncated, damaged, or not a torch file"


def load_cache(path: Path, *, keys: Iterable[str]) -> dict | None:
    """A prepared-data cache, or None when it must be (re)built: absent, or unreadable (said in one line)."""
    if not path.exists():
        return None
    try:
        return load(path, keys=keys)
    except UnreadableFile as exc:
        print(f"warning: {exc}; rebuilding it from the source files", file=sys.stderr, flush=True)
        return None
