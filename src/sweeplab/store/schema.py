"""Tables and the versioned migrations that build them. Append a migration; never edit one."""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(64), nullable=False, index=True),  # sha256 of the resolved config
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
        table.create(conn, checkfirst=True)


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


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2]
