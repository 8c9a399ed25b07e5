"""The same store on a real PostgreSQL server (CI starts one; set SWEEPLAB_TEST_POSTGRES=postgresql://... here)."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import open_store
from sweeplab.tasks import resolve

URL = os.environ.get("SWEEPLAB_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="no PostgreSQL server: set SWEEPLAB_TEST_POSTGRES=postgresql://...")


@pytest.fixture
def pg_url():
    """A fresh database per test, dropped afterwards."""
    name = f"sweeplab_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"create database {name}"))
    yield URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f"drop database {name} with (force)"))


def test_a_run_on_postgres_keeps_its_rows_and_hides_the_password(pg_url, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    cfg = resolve("lm", {"data": "text", "data.path": str(tiny_corpus), "model.emsize": 16, "model.nhid": 16,
                         "train.batch_size": 4, "train.bptt": 10, "train.epochs": 2})
    store = open_store(pg_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    assert result.status == "finished" and len(store.list_runs()) == 1
    assert [m.epoch for m in store.metrics(result.run_id) if m.key == "valid/loss"] == [1, 2]
    assert (tmp_path / "artifacts" / result.run_id / "vocab.txt").exists()
    password = sa.engine.make_url(pg_url).password
    assert not password or f":{password}@" not in result.store
    assert execute(cfg, open_store(pg_url), RunOptions(quiet=True)).run_id == result.run_id  # not trained twice
