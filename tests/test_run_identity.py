"""One run, one owner: atomic claims with a lease, takeover of a dead owner, migrations under concurrency,
run keys that mean "same experiment", and store problems as one line. Real processes where the bug needs them."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import Field
from tests.test_store_postgres import URL as PG_URL
from tests.test_store_postgres import pg_url  # noqa: F401 - the fixture

from sweeplab.config import NEUTRAL, RunConfig, TrainConfig, key_fields, run_key
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunHeld, RunOptions
from sweeplab.store import Metric, open_store
from sweeplab.store.db import LeaseLost
from sweeplab.tasks import resolve

TOY = ["data=moons", "model=mlp", "data.n_samples=400", "train.batch_size=8"]
CLI = [sys.executable, "-c", "from sweeplab.cli import main; main()"]
pg_only = pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server: set SWEEPLAB_TEST_POSTGRES=postgresql://...")


def toy(epochs: int, **extra: object) -> RunConfig:
    """The config `start` trains from the command line."""
    layer = {"data": "moons", "model": "mlp", "data.n_samples": 400, "train.batch_size": 8, "train.epochs": epochs}
    return resolve("toy2d", {**layer, **extra})


def start(url: str, epochs: int, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEPLAB_ARTIFACTS": str(tmp_path / "artifacts")}
    return subprocess.Popen([*CLI, "run", "toy2d", *TOY, f"train.epochs={epochs}", *extra, "--json", "--store", url],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def duplicated_rows(store, run_id: str) -> list:
    counts = Counter((m.step, m.epoch, m.split, m.name) for m in store.metrics(run_id))
    return [row for row, n in counts.items() if n > 1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pg_only)])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs' / 'sweeplab.sqlite'}"
    return request.getfixturevalue("pg_url")


# -------------------------------------------------------------------------------------- claims
def test_two_processes_with_one_config_train_it_once(any_store, tmp_path):
    # 150 epochs (~5 s): the second process starts well before the first could finish, even on an idle machine
    first, second = start(any_store, 150, tmp_path), start(any_store, 150, tmp_path)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip((first, second), outs, strict=True) if p.returncode == 2)
    assert len(refused.strip().splitlines()) == 1 and "is being trained by process" in refused
    store = open_store(any_store)
    (run,) = store.list_runs()
    assert run.status == "finished" and run.owner is None
    assert duplicated_rows(store, run.id) == []
    assert [m.epoch for m in store.metrics(run.id) if m.key == "train/loss"] == list(range(1, 151))


KILLED_EPOCHS = 60  # the kill lands after epoch 2 of them: an idle machine trains a toy epoch in ~0.03 s


def test_a_killed_owner_is_taken_over_and_ends_as_an_uninterrupted_run(store_url, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("SWEEPLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    owner = start(store_url, KILLED_EPOCHS, tmp_path)
    store = open_store(store_url)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until two epochs are stored and checkpointed, then kill -9
        runs = store.list_runs()
        if runs and sum(m.key == "train/loss" for m in store.metrics(runs[0].id)) >= 2:
            break
        time.sleep(0.1)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    (killed,) = store.list_runs()
    assert killed.status == "running" and killed.owner  # a dead owner's claim, as kill -9 leaves it

    resumed = execute(toy(KILLED_EPOCHS), open_store(store_url), RunOptions(quiet=True))  # its process is gone: taken over now
    assert resumed.run_id == killed.id and resumed.status == "finished"
    assert duplicated_rows(store, killed.id) == []
    baseline = execute(toy(KILLED_EPOCHS), open_store(f"sqlite:///{tmp_path / 'other.sqlite'}"), RunOptions(quiet=True))
    for key in ("test/acc", "test/loss", "valid/loss", "train/loss", "best_epoch"):
        assert resumed.metrics[key] == pytest.approx(baseline.metrics[key], rel=1e-6), key


def _held_elsewhere(store, cfg: RunConfig) -> str:
    """A run that a process on another machine claimed a moment ago."""
    run_id = store.create_run(key=run_key(cfg), name="elsewhere", task=cfg.task, config=cfg.to_dict(), env={},
                              owner="node-7 4242 abcd1234")
    store._leases.clear()  # noqa: SLF001 - the claim belongs to that other machine, not to this test's process
    return run_id


def test_a_live_owner_elsewhere_holds_the_run_until_its_lease_runs_out(store_url, monkeypatch, one_thread):
    monkeypatch.setenv("SWEEPLAB_LEASE_S", "1.5")
    store = open_store(store_url)
    run_id = _held_elsewhere(store, toy(2))
    with pytest.raises(RunHeld, match="process 4242 on node-7"):
        execute(toy(2), store, RunOptions(quiet=True))
    result = execute(toy(2), store, RunOptions(quiet=True, wait=True))  # no heartbeat comes: taken over after 1.5 s
    assert result.run_id == run_id and result.status == "finished"


def test_run_refuses_a_held_run_in_one_line(store_url, tmp_path):
    _held_elsewhere(open_store(store_url), toy(2))
    proc = subprocess.run([*CLI, "run", "toy2d", *TOY, "train.epochs=2", "--store", store_url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "node-7" in proc.stderr and "--wait" in proc.stderr


def test_an_owner_that_lost_its_lease_writes_nothing_more(store_url, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_LEASE_S", "0.5")
    cfg = toy(2)
    slow, fast = open_store(store_url), open_store(store_url)
    run_id = slow.create_run(key=run_key(cfg), name="r", task="toy2d", config=cfg.to_dict(), env={}, owner="vm-a 1 x")
    slow.log_metrics(run_id, [Metric(1, 1, "train", "loss", 1.0)])
    with slow.engine.begin() as conn:  # the owner stalls past its lease (no heartbeat)
        conn.execute(sa.text("update runs set heartbeat_at = heartbeat_at - 10, owner = 'vm-a 1 x'"))
    assert fast.take_over(fast.get_run(run_id), "vm-b 2 y")
    with pytest.raises(LeaseLost, match="taken over by another process"):
        slow.log_metrics(run_id, [Metric(2, 1, "train", "loss", 2.0)])
    assert [m.value for m in fast.metrics(run_id)] == [1.0]


# ----------------------------------------------------------------------------------- migrations
def _open_many(url: str, n: int, cwd: Path) -> list[subprocess.CompletedProcess]:
    code = f"from sweeplab.store import open_store; open_store({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    return [(p.wait(timeout=120), p.stderr.read()) for p in procs]


def test_eight_processes_opening_a_fresh_store_migrate_it_once(any_store, tmp_path):
    results = _open_many(any_store, 8, tmp_path)
    assert [rc for rc, _ in results] == [0] * 8, [err for _, err in results]
    with open_store(any_store).engine.connect() as conn:
        versions = [r[0] for r in conn.execute(sa.text("select version from schema_version order by version"))]
    assert versions == [1, 2, 3]


# ------------------------------------------------------------------------------------- run keys
def test_a_field_added_with_a_neutral_default_keeps_every_stored_key():
    cfg = toy(3)

    class Later(TrainConfig):  # the next release adds a field whose default behaves as before
        warmup: int = Field(0, ge=0, description="lr warm-up steps", json_schema_extra=NEUTRAL)

    grown = RunConfig(**{**cfg.__dict__, "train": Later(**cfg.train.model_dump())})
    assert run_key(grown) == run_key(cfg)
    changed = RunConfig(**{**cfg.__dict__, "train": Later(**cfg.train.model_dump(), warmup=5)})
    assert run_key(changed) != run_key(cfg)


def test_keys_cover_what_changes_the_numbers_and_only_that():
    base = toy(3)
    assert run_key(toy(3, **{"train.log_every": 7, "train.keep_checkpoints": "last"})) == run_key(base)
    assert run_key(toy(3, **{"train.nproc": 1})) == run_key(base)
    assert run_key(toy(3, device="auto")) == run_key(toy(3, device="cpu"))  # auto is the device it resolves to
    assert run_key(toy(3, seed=2)) != run_key(base) and run_key(toy(4)) != run_key(base)
    assert "train.log_every" not in key_fields(base) and key_fields(base)["train.epochs"] == 3


V2_RUNS = """create table runs (id varchar(32) primary key, key varchar(64) not null, name varchar(200) not null,
  task varchar(40) not null, config text not null, status varchar(20) not null, sweep varchar(200), cell varchar(200),
  epoch integer not null, step integer not null, created_at float not null, started_at float, ended_at float,
  env text not null, error text, note text)"""


def _v2_store(path: Path, rows: list[tuple[str, RunConfig, str, dict]]) -> str:
    """A store as the previous release wrote it: key = sha256 of the whole dumped config, no UNIQUE key."""
    import hashlib

    db = sqlite3.connect(path)
    db.executescript(V2_RUNS + """; create index ix_runs_key on runs (key);
        create table metrics (id integer primary key autoincrement, run_id varchar(32) not null references runs(id),
          step integer not null, epoch integer not null, split varchar(20) not null, name varchar(60) not null, value float);
        create table summaries (run_id varchar(32) not null, name varchar(80) not null, value float, primary key (run_id, name));
        create table sweeps (name varchar(200) primary key, task varchar(40) not null, spec text not null,
          scale varchar(40), created_at float not null, updated_at float not null);
        create table schema_version (version integer not null); insert into schema_version values (1), (2);""")
    for i, (run_id, cfg, status, env) in enumerate(rows):
        config = cfg.to_dict()
        config["device"] = env.pop("asked", config["device"])
        for group, _, section in cfg.sections():  # stored before the neutral fields (train.nproc, ...) existed
            for field_name, info in type(section).model_fields.items():
                if info.json_schema_extra == NEUTRAL:
                    del config[group][field_name]
        old_key = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        db.execute("insert into runs values (?, ?, ?, 'toy2d', ?, ?, null, null, 3, 30, ?, ?, null, ?, null, null)",
                   (run_id, old_key, run_id, json.dumps(config), status, 100.0 + i, 100.0 + i, json.dumps(env)))
    db.commit()
    db.close()
    return f"sqlite:///{path}"


def test_stored_runs_get_the_new_key_once_and_duplicates_are_set_aside(tmp_path):
    cfg = toy(3)
    url = _v2_store(tmp_path / "old.sqlite", [
        ("run_auto", cfg, "finished", {"device": "cpu", "asked": "auto"}),  # device=auto, on the CPU
        ("run_twice", cfg, "running", {"device": "cpu"}),  # the same config trained again (the old race)
        ("run_other", toy(4), "interrupted", {"device": "cpu"}),
    ])
    store = open_store(url)
    assert store.find_by_key(run_key(cfg)).id == "run_auto"  # the finished one keeps the key
    assert store.find_by_key(run_key(toy(4))).id == "run_other"
    set_aside = store.get_run("run_twice")
    assert set_aside.key.startswith("superseded:") and "superseded by run run_auto" in set_aside.note
    assert execute(cfg, store, RunOptions(quiet=True)).run_id == "run_auto"  # found: not trained again
    with pytest.raises(sa.exc.IntegrityError):  # the key is UNIQUE from now on
        with store.engine.begin() as conn:
            conn.execute(sa.text("update runs set key = :k where id = 'run_other'"), {"k": run_key(cfg)})


# ---------------------------------------------------------------------------------- store errors
def _bad_stores(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (tmp_path / "notes.sqlite").write_text("these are my notes, not a database\n" * 200)
    corrupt = tmp_path / "corrupt.sqlite"
    store = open_store(f"sqlite:///{corrupt}")
    execute(toy(1), store, RunOptions(quiet=True))
    store.engine.dispose()  # the last connection closes: the WAL is folded into the file
    data = bytearray(corrupt.read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # every page destroyed, the SQLite header intact
    corrupt.write_bytes(bytes(data))
    return {
        "unreachable": "postgresql://me:s3cret@127.0.0.1:1/db",
        "bad port": "postgresql://me:s3cret@localhost:notaport/db",
        "unknown driver": "postgresql+nosuchdriver://me:s3cret@localhost/db",
        "unknown scheme": "mysql://me:s3cret@localhost/db",
        "folder": f"sqlite:///{folder}",
        "unwritable": "sqlite:////proc/sweeplab.sqlite",
        "not a database": f"sqlite:///{tmp_path / 'notes.sqlite'}",
        "corrupted": f"sqlite:///{corrupt}",
    }


@pytest.mark.parametrize("case", ["unreachable", "bad port", "unknown driver", "unknown scheme", "folder", "unwritable",
                                  "not a database", "corrupted"])
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(case, tmp_path):
    url = _bad_stores(tmp_path)[case]
    proc = subprocess.run([*CLI, "runs", "list", "--store", url], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --store") and "expected" in lines[0], proc.stderr
    assert "s3cret" not in proc.stderr


def test_a_run_stopped_during_its_final_evaluation_resumes_without_repeating_a_row(store_url, one_thread):
    store = open_store(store_url)
    done = execute(toy(3), store, RunOptions(quiet=True))
    rows = sorted((m.step, m.epoch, m.split, m.name) for m in store.metrics(done.run_id))
    store.update_run(done.run_id, status="interrupted")  # as if stopped after the last checkpoint, mid-test
    again = execute(toy(3), store, RunOptions(quiet=True))
    assert again.run_id == done.run_id and again.status == "finished"
    assert sorted((m.step, m.epoch, m.split, m.name) for m in store.metrics(done.run_id)) == rows
    assert again.metrics == pytest.approx(done.metrics | {k: again.metrics[k] for k in again.metrics if "per_s" in k
                                                          or "ms" in k or "time" in k})
