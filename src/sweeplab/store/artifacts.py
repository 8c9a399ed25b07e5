"""Where a run's artifacts live: a folder (on this machine, or shared by all, e.g. NFS) or an object store.

`--artifacts URI` / `$SWEEPLAB_ARTIFACTS` names the root; each run's files sit under `<root>/<run_id>/`
(checkpoints/, tb/, figures, generated text, vocabularies) and the run row records that location, so
`resume`, `report`, `generate`, `attention` and `compare` find them wherever the run was trained.

A folder is read and written in place. An fsspec URL (`s3://bucket/prefix`, with s3fs installed) is
mirrored: the code reads and writes a local copy under the cache, `pull` brings the stored files down
and `push` sends what changed up, one PUT per file, which an object store applies atomically (a reader
sees the old checkpoint or the new one, never part of one). Ray Train keeps its `storage_path` the
same way. Files whose names start with "." (an atomic write's temp file) never travel.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.store.runfiles import list_run_files
from sweeplab.terminal import redact_url

OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory")  # a single PUT replaces a key atomically
CHECKPOINTS = "checkpoints"


def is_remote(uri: str) -> bool:
    """An fsspec URL other than a plain file path (`file://` is a folder like any other)."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()


def shown(uri: str) -> str:
    """A URI without any credentials written into it (fsspec accepts s3://KEY:SECRET@bucket, and keys in the
    query): the user information goes whole, secret query values become ***."""
    scheme, sep, rest = redact_url(uri).partition("://")
    head, q, query = rest.partition("?")
    if sep and "@" in head:
        head = head.rpartition("@")[2]
    return f"{scheme}{sep}{head}{q}{query}"


class Artifacts:
    """The artifact root of a store: where new runs put their files."""

    def __init__(self, root: str):
        self.remote = is_remote(root)
        if shown(root) != root:  # the URI is recorded on every run row: no secret may be part of it
            raise UserError(f"--artifacts {shown(root)}: credentials in the URL would be stored with every run; "
                            "give them as the backend reads them (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws)")
        self.root = root.rstrip("/") if self.remote else str(local_path(root).resolve())
        if self.remote:
            _filesystem(self.root)  # fail now, in one line, if the backend is not installed

    def check(self, *, write: bool) -> None:
        """One line now, before anything trains, if runs cannot keep their files here (`write`) or, for the
        read commands, if there is nothing to read: storage that vanishes with the process (memory://), a file
        where the folder should be, a folder that cannot be created or written, a host that does not answer."""
        where = f"--artifacts {shown(self.root)}"
        if self.root.startswith("memory://") and write:
            raise UserError(f"{where}: memory:// lives inside one process, and a run's files would vanish when it "
                            "ends; accepted: a folder, or an object store such as s3://bucket/prefix")
        if self.remote:
            _probe_remote(self.root, where, write)
            return
        path = Path(self.root)
        if path.exists() and not path.is_dir():
            raise UserError(f"{where}: {path} is a file; expected a folder for the runs' files")
        if not write:
            if not path.is_dir():
                raise UserError(f"{where}: no such folder; expected the folder the runs were trained with")
            return
        try:
            path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()  # created and deleted: the folder takes files
        except OSError as exc:
            raise UserError(f"{where}: cannot write there ({exc.strerror or exc}); expected a folder this user "
                            "can write") from None

    def run_uri(self, run_id: str) -> str:
        return f"{self.root}/{run_id}" if self.remote else str(Path(self.root) / run_id)

    def folder(self, uri: str | None, run_id: str) -> RunFolder:
        """The folder of a run: where its row says (a moved folder of runs is looked for under this root)."""
        uri = uri or self.run_uri(run_id)
        if is_remote(uri):
            return RemoteFolder(uri)
        if not local_path(uri).exists() and not self.remote and (Path(self.root) / run_id).exists():
            uri = self.run_uri(run_id)  # e.g. a copy of runs/ on another machine: the recorded path is elsewhere
        return RunFolder(uri)


class RunFolder:
    """A run's artifact folder on a file system this machine mounts: read and written in place."""

    mirrored = False  # written through a local copy that `push` sends

    def __init__(self, uri: str):
        self.uri = uri
        self.path = local_path(uri)

    def pull(self, *, checkpoints: bool = True) -> Path:
        return self.path

    def push(self) -> None:
        """Nothing to send: every write already landed in the (shared) folder."""

    def files(self) -> list[str]:
        """The run's regular files; no link is followed or listed (a run folder is untrusted: runfiles)."""
        return list_run_files(self.path)


class RemoteFolder(RunFolder):
    """A run's artifacts in an object store, mirrored in a local folder under the cache."""

    mirrored = True

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.remote = _filesystem(uri)
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        self.path = _cache_root() / digest / uri.rstrip("/").rsplit("/", 1)[-1]
        self._synced: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) as last pulled/pushed
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.atomic_put = any(p in OBJECT_STORES for p in protocols)

    def pull(self, *, checkpoints: bool = True) -> Path:
        """Make the local copy equal the stored files (checkpoints too, unless told not to)."""
        stored = self._stored()
        if not checkpoints:
            stored = {k: v for k, v in stored.items() if not k.startswith(CHECKPOINTS + "/")}
        for name, size in stored.items():
            local = self.path / name
            if not local.is_file() or local.stat().st_size != size:
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f".{local.name}.part")
                self.fs.get_file(f"{self.remote}/{name}", str(tmp))
                os.replace(tmp, local)  # a half-downloaded checkpoint never looks like a checkpoint
            self._synced[name] = _signature(local)
        for name in set(self._local()) - set(stored):  # e.g. checkpoints another node pruned since
            if checkpoints or not name.startswith(CHECKPOINTS + "/"):
                (self.path / name).unlink(missing_ok=True)
                self._synced.pop(name, None)
        return self.path

    def push(self) -> None:
        """Send files new or changed since the last pull/push; drop stored files deleted here (pruned)."""
        local = self._local()
        for name, signature in local.items():
            if self._synced.get(name) != signature:
                self._put(self.path / name, f"{self.remote}/{name}")
                self._synced[name] = signature
        for name in [n for n in self._synced if n not in local]:
            self.fs.rm_file(f"{self.remote}/{name}")
            del self._synced[name]

    def files(self) -> list[str]:
        return sorted(self._stored())

    def _put(self, source: Path, target: str) -> None:
        if self.atomic_put:
            self.fs.put_file(str(source), target)
            return
        tmp = target.rsplit("/", 1)
        tmp = f"{tmp[0]}/.{tmp[1]}.part"
        self.fs.put_file(str(source), tmp)
        self.fs.mv(tmp, target)

    def _stored(self) -> dict[str, int]:
        try:
            found = self.fs.find(self.remote, detail=True)
        except FileNotFoundError:
            return {}
        prefix = self.remote.rstrip("/") + "/"
        return {path[len(prefix):]: int(info.get("size") or 0) for path, info in found.items()
                if path.startswith(prefix) and not _hidden(path[len(prefix):]) and info.get("type") != "directory"}

    def _local(self) -> dict[str, tuple[int, int]]:
        if not self.path.is_dir():
            return {}
        return {str(p.relative_to(self.path)): _signature(p) for p in self.path.rglob("*")
                if p.is_file() and not _hidden(str(p.relative_to(self.path)))}


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _cache_root() -> Path:
    """Local copies of remote artifacts: inside the cache (they can always be pulled again)."""
    return Path(os.environ.get("SWEEPLAB_CACHE") or Path.home() / ".cache" / "sweeplab" / "cache") / "artifacts"


def _probe_remote(root: str, where: str, write: bool) -> None:
    """List the root (and, to write, put and remove a small file): an unknown bucket, bad credentials or a
    host that does not answer end here, in one line, instead of after training."""
    fs, path = _filesystem(root)
    probe = f"{path.rstrip('/')}/.sweeplab-probe-{uuid.uuid4().hex[:8]}"
    try:
        if write:
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        else:
            fs.exists(path)
    except Exception as exc:  # noqa: BLE001 - each backend has its own errors (network, permission, no bucket)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: cannot {'write to' if write else 'read'} it ({reason}); expected storage this "
                        "machine reaches, with credentials as the backend reads them") from None


def _filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for a URL, or one line saying what to install."""
    try:
        import fsspec
    except ImportError:
        raise UserError(f"--artifacts {shown(uri)}: fsspec is not installed; pip install 'sweeplab[s3]' "
                        "(or use a folder path)") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        scheme = uri.split("://", 1)[0]
        extra = "pip install 'sweeplab[s3]'" if scheme in ("s3", "s3a") else f"install fsspec's {scheme} backend"
        raise UserError(f"--artifacts {shown(uri)}: the {scheme}:// backend is not installed ({exc}); {extra}, "
                        "or use a folder path") from None
    except ValueError as exc:
        raise UserError(f"--artifacts {shown(uri)}: not a storage URL fsspec knows ({exc}); expected a folder path "
                        "or a URL such as s3://bucket/prefix") from None
