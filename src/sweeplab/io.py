"""The one home for writing and reading sweeplab's tensor files: checkpoints and prepared-data caches.

Writes are atomic (temp file, fsync, rename, fsync of the folder): a crash leaves the old file or the new
one, never half of one. Reads use `weights_only=True` always, so a file can hold tensors and plain data but
never code, and every way a read can fail is one `UnreadableFile` naming the path. torch's own message
is not passed on: it advises `weights_only=False`, which would execute whatever the file holds.

Two kinds of failure are told apart, because they call for opposite actions. A `DamagedFile` is the file's
own fault (truncated, garbage, a broken zip, refused objects, the wrong contents): it will never load, so a
resume sets it aside and falls back to an older one. Anything else (an I/O error such as EIO or ESTALE on a
network folder, a permission denied, out of memory) is trouble of the moment: the file may well be fine,
so nothing is set aside or deleted, and the caller fails instead of starting over.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from sweeplab.errors import NO_SPACE, UserError


class UnreadableFile(UserError):
    """A checkpoint or cache file that cannot be loaded now. The message names the file and why."""


class DamagedFile(UnreadableFile):
    """A file whose contents can never load (truncated, garbage, refused objects, the wrong contents)."""


# What torch.load raises for a file that is not a whole torch file: the unpickler's and the zip reader's
# errors, an early end of file, and the legacy format's parse errors on foreign bytes.
_DAMAGE = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError, struct.error, UnicodeDecodeError)


def save_atomic(obj: Any, path: Path, *, before_replace: Callable[[], None] | None = None) -> None:
    """Write `obj` to `path` atomically. `before_replace` runs once the new file is complete and just before it
    takes the name (a fencing check: it raises to leave the old file in place)."""
    _write_atomic(path, lambda f: torch.save(obj, f), before_replace)


def write_bytes(path: Path, data: bytes, *, before_replace: Callable[[], None] | None = None) -> None:
    """A file written atomically (a report page, a figure): the old one or the new one, never half of one."""
    _write_atomic(path, lambda f: f.write(data), before_replace)


def _write_atomic(path: Path, write: Callable[[BinaryIO], Any], before_replace: Callable[[], None] | None = None) -> None:
    """Temp file, fsync, rename, fsync of the folder. On failure nothing stays: not the temp file, nor a folder
    made for it; a full disk is an OSError that names `path` (a write to an open file names none)."""
    created = make_folders(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        for folder in created:  # deepest first: only the ones this write made, and only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        _raise_naming(exc, path)
    _fsync_folder(path.parent)


def make_folders(folder: Path) -> list[Path]:
    """mkdir -p; the folders it created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir(exist_ok=True)
        except OSError as exc:
            _raise_naming(exc, made)
    return missing


def _raise_naming(exc: BaseException, path: Path) -> None:
    """Re-raise `exc`; a full disk or quota as an OSError that names `path` (a write on an open file names none)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None
    raise exc


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


def load(path: Path, map_location: str | torch.device = "cpu", *, keys: Iterable[str] = (),
         file: BinaryIO | None = None) -> Any:
    """The file's contents, tensors on `map_location`. With `keys`, the contents must be a dict holding them.
    `file`: `path` already opened (a run's file, opened without following links: store.runfiles)."""
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path if file is None else file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - sorted below into damage and trouble of the moment
        kind = DamagedFile if _is_damage(exc) else UnreadableFile
        raise kind(f"{path}: cannot be loaded: {_reason(exc)}") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        found = f"keys {sorted(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise DamagedFile(f"{path}: cannot be loaded: expected the keys {missing}, found {found}")
    return obj


def _is_damage(exc: Exception) -> bool:
    if isinstance(exc, IsADirectoryError):  # a folder where the file should be never loads either
        return True
    if isinstance(exc, torch.OutOfMemoryError):  # a RuntimeError, but the file is not to blame
        return False
    if isinstance(exc, RuntimeError):  # the zip reader's errors come as RuntimeError("PytorchStreamReader ...")
        return "PytorchStreamReader" in str(exc) or "zip archive" in str(exc)
    return isinstance(exc, _DAMAGE)


def _reason(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in text:
        return "it holds Python objects other than tensors and plain data, which are never unpickled"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied; the file itself may be sound"
    if isinstance(exc, OSError):
        return f"I/O error ({exc.strerror or type(exc).__name__}); the file itself may be sound"
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return "out of memory; the file itself may be sound"
    if not _is_damage(exc):
        return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}; the file itself may be sound"
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
