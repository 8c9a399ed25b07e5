"""Where data lives: `$SWEEPLAB_DATA` (else ~/.cache/sweeplab/data), and the prepared-data cache."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from sweeplab.errors import UserError


def data_root() -> Path:
    return Path(os.environ.get("SWEEPLAB_DATA") or Path.home() / ".cache" / "sweeplab" / "data")


def cache_dir() -> Path:
    """Prepared data (token ids, uint8 tensors), keyed by the source files' checksums. The folder is made by the
    first write into it (sweeplab.io), so a write that fails leaves none behind."""
    return Path(os.environ.get("SWEEPLAB_CACHE") or Path.home() / ".cache" / "sweeplab" / "cache")


def dataset_dir(path: str, default_folder: str, name: str) -> Path:
    """`data.path` if given, else the dataset's usual folder under the data root."""
    folder = Path(os.path.expandvars(path)).expanduser() if path else data_root() / default_folder
    if not folder.is_dir():
        from sweeplab.data.catalog import SOURCES  # the catalog knows each dataset's files

        where = f"data.path={path}" if path else f"{folder} (data root: $SWEEPLAB_DATA or ~/.cache/sweeplab/data)"
        files = f" holding {', '.join(SOURCES[name].files)}" if name in SOURCES and SOURCES[name].files else ""
        raise UserError(f"dataset {name!r}: folder not found: {where}; put the folder there{files}, "
                        f"or run `sweeplab data fetch {name}`, or point data.path at a folder in the same layout")
    return folder


def require_file(path: Path, name: str) -> Path:
    if not path.is_file():
        raise UserError(f"dataset {name!r}: missing file {path}; `sweeplab data fetch {name}` says where it comes from")
    return path


def sha256_files(paths: Iterable[Path]) -> str:
    """One checksum over several files' contents (and names), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
