"""Store: a thin layer over SQLAlchemy Core, safe for many processes on many machines.

One run per config key (a UNIQUE index), claimed atomically and held under a lease: the owner's
heartbeat keeps it, and every row the owner writes is fenced by it, so a process that lost its run
to another (it stalled past the lease, its machine went away) can never write into it again.
SQLite runs in WAL mode with a busy timeout; PostgreSQL serialises migrations with an advisory lock.
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa

from sweeplab.config import json_safe
from sweeplab.errors import UserError
from sweeplab.store.artifacts import Artifacts, RunFolder
from sweeplab.store.schema import MIGRATIONS, metrics, runs, schema_version, summaries, sweeps
from sweeplab.terminal import redact_url

FINAL_STATUSES = ("finished", "diverged", "imported")
DEFAULT_LEASE_S = 60.0  # a `running` run whose owner has not been heard of for this long may be taken over
_MIGRATION_LOCK = 0x5377_6C62  # PostgreSQL advisory lock id serialising migrations ("Swlb")


def lease_seconds() -> float:
    return float(os.environ.get("SWEEPLAB_LEASE_S") or DEFAULT_LEASE_S)


class LeaseLost(UserError):
    """This process no longer holds its run: another took it over after the lease ran out."""


def default_store_url() -> str:
    return os.environ.get("SWEEPLAB_STORE") or "sqlite:///runs/sweeplab.sqlite"


@dataclass(frozen=True)
class RunRow:
    id: str
    key: str
    name: str
    task: str
    config: dict[str, Any]
    status: str
    sweep: str | None
    cell: str | None
    epoch: int
    step: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    env: dict[str, Any]
    error: str | None
    note: str | None
    owner: str | None = None  # "host pid token" of the process training it, while `running`
    heartbeat_at: float | None = None  # the owner's last sign of life, in the store's clock
    artifacts: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> RunRow:
        d = dict(row._mapping)
        d["config"] = json.loads(d["config"])
        d["env"] = json.loads(d["env"] or "{}")
        return cls(**d)


@dataclass(frozen=True)
class Metric:
    step: int
    epoch: int
    split: str
    name: str
    value: float

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"


class Store:
    def __init__(self, url: str, artifacts: str | None = None):
        self.url = url
        self._folders: dict[str, RunFolder] = {}  # run id -> its artifact folder, once looked up
        self._leases: dict[str, str] = {}  # run id -> owner, for the runs this process holds
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            self.root = path.parent
            _check_sqlite_path(path, url)
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "handle_error", lambda context: _full_disk(context, str(path)))
        elif url.startswith(("postgresql://", "postgresql+psycopg://")):
            self.root = Path(os.environ.get("SWEEPLAB_ARTIFACTS") or "runs")
            try:
                self.engine = sa.create_engine(_postgres_url(url), pool_pre_ping=True,
                                               connect_args={"connect_timeout": 10})
                sa.event.listen(self.engine, "handle_error", lambda context: _full_disk(context, redact(url)))
            except (sa.exc.ArgumentError, ValueError) as exc:  # e.g. a port that is not a number
                raise UserError(f"--store {redact(url)}: not a valid PostgreSQL URL ({_first_line(exc, url)}); "
                                "expected postgresql://USER:PASSWORD@HOST:PORT/DB") from None
            except ModuleNotFoundError:
                raise UserError(f"--store {redact(url)}: the PostgreSQL driver is not installed; "
                                "pip install 'sweeplab[postgres]'") from None
        else:
            raise UserError(f"--store {redact(url)}: not a store URL sweeplab reads; expected sqlite:///PATH or "
                            "postgresql://USER:PASSWORD@HOST/DB (the psycopg driver)")
        try:
            self._migrate()
        except sa.exc.SQLAlchemyError as exc:
            raise UserError(_open_error(url, exc)) from None
        # Where new runs keep their files: --artifacts, $SWEEPLAB_ARTIFACTS, else beside a SQLite file / ./runs
        self.artifacts = Artifacts(artifacts or os.environ.get("SWEEPLAB_ARTIFACTS") or str(self.root))

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Create or upgrade the schema exactly once, however many processes open a fresh store at once:
        the version check and the migrations run under one lock (SQLite's write lock taken up front,
        a PostgreSQL advisory lock)."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            if current > len(MIGRATIONS):  # its tables may mean what this code does not know: never guess
                raise UserError(f"--store {redact(self.url)}: written by a newer sweeplab (schema version {current}; "
                                f"this one knows up to {len(MIGRATIONS)}); upgrade sweeplab (pip install -U), or "
                                "use another --store")
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                migration(conn)
                conn.execute(schema_version.insert().values(version=version))
            conn.commit()

    def version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, *, key: str, name: str, task: str, config: dict, env: dict, status: str = "running",
                   sweep: str | None = None, cell: str | None = None, note: str | None = None,
                   owner: str | None = None) -> str | None:
        """A new run row; None if a run with this key exists (the key is UNIQUE). With `owner`, the new
        run is claimed by it in the same statement: nobody can see it unowned."""
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(runs.insert().values(
                    id=run_id, key=key, name=name, task=task, config=_json(config), status=status,
                    sweep=sweep, cell=cell, epoch=0, step=0, created_at=now, started_at=now,
                    env=_json(env), note=note, owner=owner, heartbeat_at=self._now_sql() if owner else None,
                    artifacts=self.artifacts.run_uri(run_id)))
        except sa.exc.IntegrityError:
            return None
        if owner:
            self._hold(run_id, owner)
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        """Change a run's row. While this process holds the run, the change is fenced by its lease; setting
        `owner=None` releases it."""
        if "env" in values:
            values["env"] = _json(values["env"])
        query = runs.update().where(runs.c.id == run_id)
        owner = self._leases.get(run_id)
        if owner:
            query = query.where(runs.c.owner == owner)
        with self.engine.begin() as conn:
            fenced_out = not conn.execute(query.values(**values)).rowcount and bool(owner)
        if fenced_out:
            self._lost(run_id)
        if owner and "owner" in values and values["owner"] is None:
            self._leases.pop(run_id, None)
            _ACTIVE_OWNERS.discard(owner)

    # -- claims and leases ------------------------------------------------------------------
    def holds(self, run_id: str) -> bool:
        return run_id in self._leases

    def release(self, run_id: str, **values: Any) -> None:
        """The run's last change by its owner (its end status), and the end of the lease. Its artifacts
        reach their storage first: a run nobody holds has all its files where its row says."""
        self.push_artifacts(run_id)
        self.update_run(run_id, owner=None, **values)

    def holder(self, row: RunRow) -> str | None:
        """Who trains `row` now, in words, or None when nobody does: it is not `running`, or its owner
        stopped sending heartbeats a lease ago, or its owner is a process of this machine that is gone."""
        if row.status != "running" or not row.owner:
            return None
        host, pid, _ = _parse_owner(row.owner)
        if host == platform.node() and not _process_alive(pid, row.owner):
            return None
        age = self._now() - (row.heartbeat_at or 0.0)
        if age >= lease_seconds():
            return None
        return f"process {pid} on {host}, since {time.strftime('%H:%M:%S', time.localtime(row.started_at or 0))} " \
               f"(last heartbeat {age:.0f} s ago)"

    def take_over(self, row: RunRow, owner: str, **values: Any) -> bool:
        """Claim `row` for `owner` if nobody else has since it was read and nobody live holds it.
        Compare-and-set on (status, owner, heartbeat): of two processes racing, exactly one wins."""
        if self.holder(row) is not None:
            return False
        if "env" in values:
            values["env"] = _json(values["env"])
        values.setdefault("artifacts", row.artifacts or self.artifacts.run_uri(row.id))  # resume where it left files
        query = runs.update().where(runs.c.id == row.id, runs.c.status == row.status,
                                    _same(runs.c.owner, row.owner), _same(runs.c.heartbeat_at, row.heartbeat_at))
        with self.engine.begin() as conn:
            won = conn.execute(query.values(status="running", owner=owner, heartbeat_at=self._now_sql(),
                                            **values)).rowcount == 1
        if won:
            self._hold(row.id, owner)
        return won

    def check_lease(self, run_id: str) -> None:
        """Raise LeaseLost if another process has taken over a run this process holds (a fencing check for
        writes outside the store: checkpoints, prunes, artifact files)."""
        if run_id in self._leases and not self.heartbeat(run_id):
            self._lost(run_id)

    def heartbeat(self, run_id: str) -> bool:
        """Refresh this process's lease on `run_id`; False if another process has taken the run over."""
        owner = self._leases.get(run_id)
        if owner is None:
            return False
        with self.engine.begin() as conn:
            return self._fence(conn, run_id, owner)

    def _hold(self, run_id: str, owner: str) -> None:
        self._leases[run_id] = owner
        _ACTIVE_OWNERS.add(owner)
        threading.Thread(target=self._beat, args=(run_id, owner), daemon=True, name=f"heartbeat-{run_id}").start()

    def _beat(self, run_id: str, owner: str) -> None:
        """Background heartbeat: the lease stays fresh through long evaluations and epochs without logging."""
        interval = lease_seconds() / 4
        while True:
            time.sleep(interval)
            if self._leases.get(run_id) != owner:
                return
            try:
                if not self.heartbeat(run_id):
                    return
            except sa.exc.SQLAlchemyError:  # a store hiccup: the next beat or fenced write tries again
                continue

    def _fence(self, conn: sa.Connection, run_id: str, owner: str) -> bool:
        return conn.execute(runs.update().where(runs.c.id == run_id, runs.c.owner == owner)
                            .values(heartbeat_at=self._now_sql())).rowcount == 1

    def _lost(self, run_id: str) -> None:
        _ACTIVE_OWNERS.discard(self._leases.pop(run_id, ""))
        row = self.get_run(run_id)
        raise LeaseLost(f"run {run_id} ({row.name}) was taken over by another process ({row.owner}) after this one "
                        f"missed its lease ({lease_seconds():.0f} s); this process stopped writing to it")

    def _now_sql(self) -> Any:
        """The store's clock, so that leases mean the same on every machine: PostgreSQL's, or this
        machine's for a SQLite file (which only this machine writes)."""
        if self.engine.dialect.name == "sqlite":
            return time.time()
        return sa.func.extract("epoch", sa.func.clock_timestamp())

    def _now(self) -> float:
        if self.engine.dialect.name == "sqlite":
            return time.time()
        with self.engine.connect() as conn:
            return float(conn.execute(sa.select(self._now_sql())).scalar())

    def find_by_key(self, key: str) -> RunRow | None:
        """The run with this config key (there is at most one)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.key == key)).first()
        return RunRow.from_row(row) if row else None

    def get_run(self, ref: str) -> RunRow:
        """A run by id, id prefix, or name (the newest of that name)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == ref)).first()
            if row is None:
                rows = conn.execute(sa.select(runs).where(runs.c.id.startswith(ref, autoescape=True))).all()
                row = rows[0] if len(rows) == 1 else None
            if row is None:
                row = conn.execute(sa.select(runs).where(runs.c.name == ref)
                                   .order_by(runs.c.created_at.desc())).first()
        if row is None:
            raise UserError(f"run {ref!r} not found in {redact(self.url)}; `sweeplab runs list` shows the runs")
        return RunRow.from_row(row)

    def list_runs(self, *, task: str | None = None, sweep: str | None = None, status: str | None = None) -> list[RunRow]:
        query = sa.select(runs).order_by(runs.c.created_at)
        for column, value in ((runs.c.task, task), (runs.c.sweep, sweep), (runs.c.status, status)):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            return [RunRow.from_row(r) for r in conn.execute(query)]

    # -- metrics and summaries --------------------------------------------------------------
    def log_metrics(self, run_id: str, rows: Iterable[Metric]) -> None:
        """Append metric rows; for a run this process holds, in one transaction with its lease check."""
        values = [dict(run_id=run_id, step=m.step, epoch=m.epoch, split=m.split, name=m.name,
                       value=m.value if math.isfinite(m.value) else None) for m in rows]
        if values:
            self._write(run_id, lambda conn: conn.execute(metrics.insert(), values))

    def metrics(self, run_id: str) -> list[Metric]:
        query = sa.select(metrics).where(metrics.c.run_id == run_id).order_by(metrics.c.id)
        with self.engine.connect() as conn:
            return [Metric(r.step, r.epoch, r.split, r.name, math.nan if r.value is None else r.value)
                    for r in conn.execute(query)]

    def delete_metrics_after(self, run_id: str, epoch: int, final_splits: Iterable[str] = (),
                             step: int | None = None) -> None:
        """Drop rows of epochs that did not complete (and, given `step`, of later steps), and those of the
        end-of-training splits (written again at the end), so a resumed run neither loses nor repeats any."""
        stale = sa.or_(metrics.c.epoch > epoch, metrics.c.split.in_(list(final_splits)),
                       *([metrics.c.step > step] if step is not None else []))
        self._write(run_id, lambda conn: conn.execute(metrics.delete().where(metrics.c.run_id == run_id, stale)))

    def set_summary(self, run_id: str, values: dict[str, float]) -> None:
        rows = [dict(run_id=run_id, name=k, value=v if math.isfinite(v) else None) for k, v in values.items()]

        def replace(conn: sa.Connection) -> None:
            conn.execute(summaries.delete().where(summaries.c.run_id == run_id))
            if rows:
                conn.execute(summaries.insert(), rows)

        self._write(run_id, replace)

    def _write(self, run_id: str, write: Any) -> None:
        """One transaction; fenced by this process's lease when it holds the run (the lease check and the
        write commit together, so a run taken over never receives a row from its former owner)."""
        owner = self._leases.get(run_id)
        with self.engine.begin() as conn:
            fenced_out = bool(owner) and not self._fence(conn, run_id, owner)
            if not fenced_out:
                write(conn)
        if fenced_out:
            self._lost(run_id)

    def summary(self, run_id: str) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(summaries).where(summaries.c.run_id == run_id)).all()
        return {r.name: (math.nan if r.value is None else r.value) for r in rows}

    # -- sweeps (migration 2) -----------------------------------------------------------------
    def save_sweep(self, name: str, task: str, spec: dict[str, Any], scale: str | None) -> None:
        """Create or replace the sweep's spec; `created_at` stays that of the first save."""
        now, blob = time.time(), _json(spec)
        with self.engine.begin() as conn:
            updated = conn.execute(sweeps.update().where(sweeps.c.name == name)
                                   .values(task=task, spec=blob, scale=scale, updated_at=now)).rowcount
            if not updated:
                conn.execute(sweeps.insert().values(name=name, task=task, spec=blob, scale=scale,
                                                    created_at=now, updated_at=now))

    def get_sweep(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sweeps).where(sweeps.c.name == name)).first()
        return _sweep_dict(row) if row else None

    def list_sweeps(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_sweep_dict(r) for r in conn.execute(sa.select(sweeps).order_by(sweeps.c.created_at))]

    def progress(self, run_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(last completed epoch, last step logged) per run: a live view of running runs, read from the store."""
        if not run_ids:
            return {}
        completed = sa.func.max(sa.case((metrics.c.split == "train", metrics.c.epoch), else_=0))
        query = (sa.select(metrics.c.run_id, completed, sa.func.max(metrics.c.step))
                 .where(metrics.c.run_id.in_(run_ids)).group_by(metrics.c.run_id))
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in conn.execute(query)}

    # -- artifacts ------------------------------------------------------------------------
    def run_dir(self, run_id: str, *, checkpoints: bool = True) -> Path:
        """The local folder holding the run's artifacts, wherever the run row says they are stored (a remote
        store's files are pulled into a local copy first; `checkpoints=False` leaves the big files there)."""
        return self._folder(run_id).pull(checkpoints=checkpoints)

    def artifact_files(self, run_id: str) -> list[str]:
        """The run's stored artifact files (names relative to its folder), listed where they are stored."""
        return self._folder(run_id).files()

    def push_artifacts(self, run_id: str) -> None:
        """Send the run's new artifact files to their storage; only while no other process holds the run."""
        folder = self._folders.get(run_id)
        if folder is None or not folder.mirrored:  # a folder is written in place: nothing to send
            return
        held_here = run_id in self._leases
        if (held_here and not self.heartbeat(run_id)) or (not held_here and self.get_run(run_id).owner):
            return  # the run is another process's now: its files are its own to write
        folder.push()

    def _folder(self, run_id: str) -> RunFolder:
        if run_id not in self._folders:
            with self.engine.connect() as conn:
                uri = conn.execute(sa.select(runs.c.artifacts).where(runs.c.id == run_id)).scalar()
            self._folders[run_id] = self.artifacts.folder(uri, run_id)
        return self._folders[run_id]


def _json(value: Any) -> str:
    """A JSON column's text: strict JSON, a non-finite number as null (what any reader of the store can parse)."""
    return json.dumps(json_safe(value), allow_nan=False)


def _sweep_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["spec"] = json.loads(d["spec"])
    return d


def _full_disk(context: Any, where: str) -> None:
    """A store whose disk (or quota) is full says so as every full disk does: an OSError naming it."""
    cause = context.original_exception
    if "database or disk is full" in str(cause) or type(cause).__name__ == "DiskFull":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=60000")  # first: switching to WAL waits for other openers too
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _check_sqlite_path(path: Path, url: str) -> None:
    """A SQLite store is a file in a folder this process can write (its WAL files live beside it)."""
    where = f"--store {url}"
    if path.is_dir():
        raise UserError(f"{where}: {path} is a folder; expected a SQLite file path, e.g. sqlite:///{path}/sweeplab.sqlite")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{where}: cannot create the folder {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise UserError(f"{where}: {path} is not writable by this user; expected a SQLite file in a writable folder")


def _postgres_url(url: str) -> sa.URL:
    """The URL for SQLAlchemy (psycopg 3), its user information split at the last `@`: a password holding `@`,
    `/` or `?` reaches the server whole instead of leaking into the host name (and into error messages)."""
    scheme, _, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    parsed = sa.engine.make_url(f"postgresql+psycopg://{location if at else rest}")
    if not at:
        return parsed
    user, _, password = userinfo.partition(":")
    return parsed.set(username=unquote(user) or None, password=unquote(password) or None)


def _open_error(url: str, exc: Exception) -> str:
    """One line for a store that cannot be opened: which store (no password), and what was expected."""
    where = f"--store {redact(url)}"
    cause = getattr(exc, "orig", exc)
    if isinstance(cause, sqlite3.OperationalError):
        return f"{where}: {_first_line(cause)}; expected a SQLite file in a folder this user can write"
    if isinstance(cause, sqlite3.DatabaseError):
        return f"{where}: {_first_line(cause)}; expected a SQLite database made by sweeplab (or a new file path)"
    if isinstance(exc, sa.exc.OperationalError):
        return f"{where}: cannot connect ({_first_line(cause, url)}); expected a reachable PostgreSQL server"
    return f"{where}: {_first_line(cause, url)}; expected a sweeplab store"


def damaged_store(exc: BaseException) -> str | None:
    """One line for a SQLite store found damaged after it opened (a page read mid-command), else None."""
    cause = getattr(exc, "orig", None)
    if isinstance(exc, sa.exc.DatabaseError) and isinstance(cause, sqlite3.DatabaseError) and \
            any(word in str(cause) for word in ("malformed", "not a database")):
        return f"the SQLite store is damaged ({_first_line(cause)}); expected a SQLite database made by sweeplab " \
               "(restore it from a backup, or point --store at another file)"
    return None


def _first_line(exc: BaseException, url: str = "") -> str:
    """The message's first line, without the store's password should a driver quote it."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    return line.replace(password, "***") if password else line


# -- owners ------------------------------------------------------------------------------------
_ACTIVE_OWNERS: set[str] = set()  # owner ids claimed by this process (a finished claim stays in, harmlessly)


def new_owner() -> str:
    """An owner id: this machine, this process, and a token telling this claim from the process's others."""
    return f"{platform.node()} {os.getpid()} {uuid.uuid4().hex[:8]}"


def _parse_owner(owner: str) -> tuple[str, int, str]:
    host, pid, token = (owner.split(" ") + ["", ""])[:3]
    return host, int(pid) if pid.isdigit() else -1, token


def _process_alive(pid: int, owner: str) -> bool:
    """Whether the owning process of this machine still runs. This process: only if the claim is its own."""
    if pid == os.getpid():
        return owner in _ACTIVE_OWNERS
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _same(column: sa.Column, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def redact(url: str) -> str:
    """A store URL without its password or secret query values: credentials never reach logs or the store."""
    return redact_url(url)


def open_store(url: str | None = None, artifacts: str | None = None) -> Store:
    return Store(url or default_store_url(), artifacts)
