"""A run's files, read as untrusted input.

In the shared set-up the README recommends (one NFS folder or bucket for a team), anyone who can train a run
can write its folder. Whoever reads it (report, runs show, generate, attention, compare) must not be pointed
at their own files, hung or flooded by it. So a run's file is read only when:

- the run folder is not itself a symbolic link;
- no component from the run folder down is a link: each is opened relative to the one above with O_NOFOLLOW,
  so a link swapped in after a check is refused too (sweeplab never writes a link into a run folder, so any
  link there is someone else's), and the file has no other name (a hard link to a file elsewhere);
- it is a regular file (a FIFO would block the reader forever, a device never ends) of a kind listed in
  MAX_BYTES, and no bigger than that kind's cap.

A file that is not there is None; one that is there but fails a check raises `RefusedFile`, a UserError: a
command that asked for it says why in one line, a report draws without it and says why in the gap.
POSIX only (dir_fd, O_NOFOLLOW), as is the shared set-up.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sweeplab.errors import UserError

MB = 1 << 20
# The most a reader takes of each kind, by file name, else by suffix: a figure is a few hundred KB, a sample or
# a class list a few KB, a vocabulary of a million words under 20 MB. None: a checkpoint is as big as its model
# (torch reads it with weights_only=True, so its contents can be tensors and plain data only).
MAX_BYTES: dict[str, int | None] = {"vocab.txt": 64 * MB, ".svg": 20 * MB, ".png": 20 * MB, ".txt": 5 * MB,
                                    ".pt": None}
OUTSIDE = "a run's files are read only inside its own folder"
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # O_NONBLOCK: opening a FIFO must not wait for a writer


class RefusedFile(UserError):
    """A run's file (or the run folder: `folder`) that is there but is not read; `reason` says why without the
    path, for a report that may be shared."""

    def __init__(self, path: Path, reason: str, *, folder: bool = False):
        super().__init__(f"{'run folder ' if folder else ''}{path}: refused: {reason}")
        self.reason, self.folder = reason, folder


def open_run_file(run_dir: Path, name: str) -> BinaryIO | None:
    """`name` ('/'-separated, below the run folder) opened for reading; None where it is absent."""
    limit = _limit(name)
    fd = _open_below(run_dir, PurePosixPath(name).parts, run_dir / name)
    if fd is None:
        return None
    try:
        _check_opened(os.fstat(fd), run_dir / name, limit)
    except RefusedFile:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_run_file(run_dir: Path, name: str) -> bytes | None:
    """The bytes of a run's file; None where it is absent (RefusedFile where it is there but fails a check)."""
    file = open_run_file(run_dir, name)
    if file is None:
        return None
    limit = _limit(name)
    with file:
        data = file.read() if limit is None else file.read(limit + 1)
    if limit is not None and len(data) > limit:  # it grew after the size was checked
        raise RefusedFile(run_dir / name, f"over {limit:,} bytes; at most {limit:,} are read of a {_kind(name)} file")
    return data


def list_run_files(run_dir: Path) -> list[str]:
    """Names of the run folder's regular files, walked without following or listing any link."""
    if run_dir.is_symlink():
        raise RefusedFile(run_dir, f"a symbolic link; {OUTSIDE}", folder=True)
    found = [Path(folder, name) for folder, _, names in os.walk(run_dir) for name in names]  # links not entered
    return sorted(str(p.relative_to(run_dir)) for p in found if not p.is_symlink() and p.is_file())


def _limit(name: str) -> int | None:
    kind = _kind(name)
    if kind not in MAX_BYTES:  # a caller's mistake, not the folder's: every name read is a known kind
        raise ValueError(f"{name}: not a kind of run file sweeplab reads ({', '.join(MAX_BYTES)})")
    return MAX_BYTES[kind]


def _kind(name: str) -> str:
    base = PurePosixPath(name).name
    return base if base in MAX_BYTES else PurePosixPath(name).suffix


def _open_below(run_dir: Path, parts: tuple[str, ...], path: Path) -> int | None:
    """A descriptor of run_dir/parts, opened one component at a time, each relative to the one above."""
    if not parts or any(part in ("/", ".", "..") for part in parts):
        raise ValueError(f"{path}: a run file is named by a relative path without '..'")
    fd = _open_step(None, str(run_dir), _FOLDER, run_dir)
    for i, part in enumerate(parts):
        if fd is None:
            return None
        try:
            inner = _open_step(fd, part, _FILE if i == len(parts) - 1 else _FOLDER, path)
        finally:
            os.close(fd)
        fd = inner
    return fd


def _open_step(folder: int | None, part: str, flags: int, path: Path) -> int | None:
    try:
        return os.open(part, flags, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = f"a symbolic link; {OUTSIDE}" if _is_link(folder, part) else exc.strerror or type(exc).__name__
        if folder is None:  # the run folder itself
            raise RefusedFile(path, reason, folder=True) from None
        raise RefusedFile(path, reason if part == path.name else f"{part!r}: {reason}") from None


def _is_link(folder: int | None, part: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_opened(info: os.stat_result, path: Path, limit: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise RefusedFile(path, "not a regular file (a FIFO, a device or a folder)")
    if info.st_nlink > 1:  # a hard link is another name of a file that may live anywhere on the file system
        raise RefusedFile(path, f"a hard link (the file has {info.st_nlink} names); {OUTSIDE}")
    if limit is not None and info.st_size > limit:
        raise RefusedFile(path, f"{info.st_size:,} bytes; at most {limit:,} are read of a {_kind(path.name)} file")
