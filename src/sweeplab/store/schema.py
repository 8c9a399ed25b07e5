"""Tables and the versioned migrations that build them. Append a migration; never edit one."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(64), nullable=False),  # sha256 of config.key_fields; UNIQUE (migration 3)
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task", sa.String(40), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # resolved config, JSON
    sa.Column("status", sa.String(20), nullable=False),  # running finished failed diverged interrupted imported
    sa.Column("sweep", sa.String(200), nullable=True),
    sa.Column("cell", sa.String(200), nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),  # last completed epoch
    sa.Column("step", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("env", sa.Text, nullable=False, default="{}"),  # versions, device, git commit
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=True),  # e.g. the planner's reduction, an import's source
    # migration 3: the lease. A `running` run is held by `owner` ("host pid token") while `heartbeat_at` is
    # fresh; the owner refreshes it, and every metric it writes is fenced by it (store/db.py Store.claim).
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("artifacts", sa.Text, nullable=True),  # where the run's artifacts live (a folder or URI)
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("split", sa.String(20), nullable=False),
    sa.Column("name", sa.String(60), nullable=False),
    sa.Column("value", sa.Float, nullable=True),  # NULL stands for NaN/inf of a diverged run
    sa.Index("ix_metrics_run", "run_id", "split", "name"),
)

summaries = sa.Table(
    "summaries",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
)

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))


def _v1(conn: sa.Connection) -> None:
    for table in (runs, metrics, summaries):
        table.create(conn, checkfirst=True)  # a fresh store gets the latest columns; later migrations add only missing ones


sweeps = sa.Table(
    "sweeps",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # the experiment's name; runs.sweep points here
    sa.Column("task", sa.String(40), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: the loaded experiment, its scale, the planner's plan, cells
    sa.Column("scale", sa.String(40), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def _v2(conn: sa.Connection) -> None:
    sweeps.create(conn, checkfirst=True)


# -- migration 3: one run per key, leases, and keys that mean "same experiment" -------------------------
# Frozen copy of the v3 key rule (sweeplab/config.py key_fields) for configs stored before it:
# leave out what cannot change the numbers, and train.nproc at 1 (added later, behaviour-preserving).
_V3_OUTSIDE = {"train.log_every", "train.keep_checkpoints"}
_V3_NEUTRAL = {"train.nproc": 1}


def v3_key(config: dict[str, Any], env: dict[str, Any]) -> str:
    """The v3 key of a run stored with an older one: its config as stored, `device=auto` read as the
    device the run actually used (`env.device`: "cpu" or a GPU's name)."""
    flat: dict[str, Any] = {"task": config["task"], "seed": config["seed"]}
    device = config["device"]
    if device == "auto":
        device = "cpu" if env.get("device", "cpu") == "cpu" else "cuda"
    flat["device"] = device.split(":")[0]
    for group in ("data", "model", "optim", "train"):
        for key, value in config[group].items():
            dotted = group if key == "name" else f"{group}.{key}"
            if dotted not in _V3_OUTSIDE and _V3_NEUTRAL.get(dotted, object()) != value:
                flat[dotted] = value
    return hashlib.sha256(json.dumps(flat, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_KEEP_FIRST = {"finished": 0, "imported": 1, "diverged": 2}  # of several runs with one key, the one kept


def _v3(conn: sa.Connection) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    for column in ("owner", "heartbeat_at", "artifacts"):
        if column not in present:
            kind = runs.c[column].type.compile(conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {column} {kind}"))
    rows = conn.execute(sa.select(runs.c.id, runs.c.key, runs.c.config, runs.c.env, runs.c.status,
                                  runs.c.created_at, runs.c.note)).all()
    groups: dict[str, list[Any]] = {}
    for row in rows:
        key = v3_key(json.loads(row.config), json.loads(row.env or "{}"))
        groups.setdefault(key, []).append(row)
    for key, group in groups.items():
        # Several rows of one key (two processes trained it at once, or `auto` and `cuda` on one GPU):
        # one keeps the key; the others stay listed, marked as superseded, out of every lookup by key.
        group.sort(key=lambda r: (_KEEP_FIRST.get(r.status, 3), -r.created_at))
        conn.execute(runs.update().where(runs.c.id == group[0].id).values(key=key))
        for row in group[1:]:
            note = f"superseded by run {group[0].id} (same config)" + (f"; {row.note}" if row.note else "")
            conn.execute(runs.update().where(runs.c.id == row.id).values(key=f"superseded:{row.id}", note=note))
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_runs_key"))
    conn.execute(sa.text("CREATE UNIQUE INDEX ux_runs_key ON runs (key)"))


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2, _v3]
