"""Store: a thin layer over SQLAlchemy Core. Safe for concurrent writers (WAL, busy timeout)."""
from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sweeplab.errors import UserError
from sweeplab.store.schema import MIGRATIONS, metrics, runs, schema_version, summaries, sweeps

FINAL_STATUSES = ("finished", "diverged", "imported")


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
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            self.root = path.parent
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        elif url.startswith(("postgresql://", "postgresql+")):
            self.root = Path(os.environ.get("SWEEPLAB_ARTIFACTS", "runs"))
            driver_url = url.replace("postgresql://", "postgresql+psycopg://", 1)  # psycopg 3, not psycopg2
            self.engine = sa.create_engine(driver_url, pool_pre_ping=True)
        else:
            raise UserError(f"--store: {redact(url)!r} is not accepted; accepted: sqlite:///PATH, postgresql://...")
        self._migrate()

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                migration(conn)
                conn.execute(schema_version.insert().values(version=version))

    def version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, *, key: str, name: str, task: str, config: dict, env: dict, status: str = "running",
                   sweep: str | None = None, cell: str | None = None, note: str | None = None) -> str:
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(runs.insert().values(
                id=run_id, key=key, name=name, task=task, config=json.dumps(config), status=status,
                sweep=sweep, cell=cell, epoch=0, step=0, created_at=now, started_at=now,
                env=json.dumps(env), note=note))
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        if "env" in values:
            values["env"] = json.dumps(values["env"])
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def find_by_key(self, key: str) -> RunRow | None:
        """The most recent run with this config key."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.key == key).order_by(runs.c.created_at.desc())).first()
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
        values = [dict(run_id=run_id, step=m.step, epoch=m.epoch, split=m.split, name=m.name,
                       value=m.value if math.isfinite(m.value) else None) for m in rows]
        if values:
            with self.engine.begin() as conn:
                conn.execute(metrics.insert(), values)

    def metrics(self, run_id: str) -> list[Metric]:
        query = sa.select(metrics).where(metrics.c.run_id == run_id).order_by(metrics.c.id)
        with self.engine.connect() as conn:
            return [Metric(r.step, r.epoch, r.split, r.name, math.nan if r.value is None else r.value)
                    for r in conn.execute(query)]

    def delete_metrics_after(self, run_id: str, epoch: int) -> None:
        """Drop rows of epochs that did not complete, so a resumed run neither loses nor repeats any."""
        with self.engine.begin() as conn:
            conn.execute(metrics.delete().where(metrics.c.run_id == run_id, metrics.c.epoch > epoch))

    def set_summary(self, run_id: str, values: dict[str, float]) -> None:
        rows = [dict(run_id=run_id, name=k, value=v if math.isfinite(v) else None) for k, v in values.items()]
        with self.engine.begin() as conn:
            conn.execute(summaries.delete().where(summaries.c.run_id == run_id))
            if rows:
                conn.execute(summaries.insert(), rows)

    def summary(self, run_id: str) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(summaries).where(summaries.c.run_id == run_id)).all()
        return {r.name: (math.nan if r.value is None else r.value) for r in rows}

    # -- sweeps (migration 2) -----------------------------------------------------------------
    def save_sweep(self, name: str, task: str, spec: dict[str, Any], scale: str | None) -> None:
        """Create or replace the sweep's spec; `created_at` stays that of the first save."""
        now, blob = time.time(), json.dumps(spec, sort_keys=False)
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
    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id


def _sweep_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["spec"] = json.loads(d["spec"])
    return d


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def redact(url: str) -> str:
    """A store URL without its password: credentials never reach logs or the store."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus nothing secret
        return url.split("@")[-1]


def open_store(url: str | None = None) -> Store:
    return Store(url or default_store_url())
