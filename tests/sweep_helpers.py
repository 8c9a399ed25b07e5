"""Helpers of the sweep tests: tiny experiment files on the tiny corpus, the CLI, the store's raw rows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.store import Store
from sweeplab.store.schema import metrics

runner = CliRunner()

# A 1-layer LSTM of 16 units on ~1,500 tokens: a run takes a fraction of a second after start-up.
TINY_BASE = {"data": "text", "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "train.batch_size": 4,
             "train.eval_batch_size": 4, "train.bptt": 10, "train.epochs": 2}
COLUMNS = [{"title": "Valid PPL", "metric": "valid/ppl", "aggregate": "best"}, {"title": "Params", "metric": "params"}]


def write_experiment(folder: Path, corpus: Path, name: str = "tiny", **fields: Any) -> Path:
    """An experiment file on the tiny corpus; `fields` replace or add top-level keys."""
    spec: dict[str, Any] = {"name": name, "title": "tiny sweep", "task": "lm",
                            "base": {**TINY_BASE, "data.path": str(corpus)},
                            "variants": {"LSTM": {"model": "lstm"}, "GRU": {"model": "gru"}},
                            "columns": COLUMNS,
                            "scales": {"quick": {"note": "2 epochs", "overrides": {"train.epochs": 2}},
                                       "full": {"note": "3 epochs", "overrides": {"train.epochs": 3}}}}
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def invoke(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


def metric_ids(store: Store, run_id: str) -> list[tuple[int, int, str, str, float | None]]:
    """Raw metric rows (row id included): what a resumed run must neither duplicate nor lose."""
    query = sa.select(metrics.c.id, metrics.c.epoch, metrics.c.split, metrics.c.name, metrics.c.value).where(
        metrics.c.run_id == run_id).order_by(metrics.c.id)
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]
