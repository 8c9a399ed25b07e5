"""`sweeplab sweep`: every cell trained once, skipped when stored, resumed after a killed worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.sweep_helpers import TINY_BASE, invoke, metric_ids, write_experiment

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import open_store
from sweeplab.sweep.expand import load_experiment
from sweeplab.tasks import resolve

REPO = Path(__file__).resolve().parents[1]


def epoch_rows(store, run_id: str) -> list[tuple[int, str, str]]:
    return sorted((epoch, split, name) for _, epoch, split, name, _ in metric_ids(store, run_id)
                  if split in ("train", "valid", "test"))


def test_two_workers_train_every_cell_once_and_a_rerun_skips_them(tmp_path, tiny_corpus, store_url):
    path = write_experiment(tmp_path, tiny_corpus, seeds=2, figures=[{"kind": "curves", "metrics": ["train/loss"]}])
    result = invoke("sweep", path, "--workers", "2", "--store", store_url)
    assert result.exit_code == 0, result.output
    store = open_store(store_url)
    _check_stored_spec(store, path)
    runs = store.list_runs(sweep="tiny")
    assert sorted((r.cell, r.config["seed"]) for r in runs) == [("GRU", 1111), ("GRU", 1112), ("LSTM", 1111),
                                                                ("LSTM", 1112)]
    assert {r.status for r in runs} == {"finished"} and {r.note for r in runs} == {"2 epochs"}
    assert len({r.env["pid"] for r in runs}) == 2  # two worker processes shared the cells
    for run in runs:  # concurrent writers lost nothing: every epoch's rows, once each
        rows = epoch_rows(store, run.id)
        assert rows == sorted(set(rows)) and {e for e, s, _ in rows if s == "train"} == {1, 2}
        assert ("valid" in {s for _, s, _ in rows}) and store.summary(run.id)["epochs"] == 2
    before = {r.id: (r.started_at, metric_ids(store, r.id)) for r in runs}
    again = invoke("sweep", path, "--workers", "2", "--store", store_url)
    assert again.exit_code == 0 and "4 already stored, 0 to run" in again.stderr
    assert {r.id: (r.started_at, metric_ids(store, r.id)) for r in store.list_runs()} == before


def _check_stored_spec(store, path: Path) -> None:
    """The sweeps table holds the experiment as loaded, the scale, and each cell's run key (for the report)."""
    stored = store.get_sweep("tiny")
    spec = stored["spec"]
    assert stored["task"] == "lm" and stored["scale"] == "quick" and spec["scale_note"] == "2 epochs"
    assert spec["columns"][0] == {"title": "Valid PPL", "metric": "valid/ppl", "aggregate": "best", "epoch": None,
                                  "better": None}
    assert spec["figures"][0]["kind"] == "curves" and spec["plan"] is None
    keys = {(r.cell, r.config["seed"]): r.key for r in store.list_runs()}
    assert {(c["label"], c["seed"]): c["key"] for c in spec["cells"]} == keys
    assert load_experiment(path).model_dump(mode="json").items() <= spec.items()
    assert [s["name"] for s in store.list_sweeps()] == ["tiny"]


def test_a_failing_cell_is_stored_with_its_reason_and_the_sweep_carries_on(tmp_path, tiny_corpus, store_url):
    """A dataset that is absent fails its cell (exit 2: the user can fix it); the other cells finish."""
    path = write_experiment(tmp_path, tiny_corpus, variants={"LSTM": {"model": "lstm"},
                                                             "Missing": {"data.path": str(tmp_path / "absent")}})
    result = invoke("sweep", path, "--store", store_url)
    assert result.exit_code == 2 and "1 cell(s) failed" in result.stderr
    runs = {r.cell: r for r in open_store(store_url).list_runs()}
    assert runs["LSTM"].status == "finished" and runs["Missing"].status == "failed"
    assert "absent" in runs["Missing"].error
    skipped = invoke("sweep", path, "--store", store_url)  # failed cells wait for --retry-failed
    assert "failed (stored)" in skipped.stderr and "--retry-failed" in skipped.stderr and skipped.exit_code == 2
    assert open_store(store_url).list_runs() == sorted(runs.values(), key=lambda r: r.created_at)  # untouched
    (tmp_path / "absent").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "absent" / f"{split}.txt").write_text((tiny_corpus / f"{split}.txt").read_text())
    assert invoke("sweep", path, "--retry-failed", "--store", store_url).exit_code == 0
    assert {r.status for r in open_store(store_url).list_runs()} == {"finished"}


def test_a_standalone_run_with_the_same_config_fills_its_cell(tmp_path, tiny_corpus, store_url):
    overrides = {**TINY_BASE, "data.path": str(tiny_corpus), "model": "gru"}
    done = execute(resolve("lm", overrides), open_store(store_url), RunOptions(quiet=True))
    result = invoke("sweep", write_experiment(tmp_path, tiny_corpus), "--store", store_url)
    assert result.exit_code == 0 and "1 already stored, 1 to run" in result.stderr
    adopted = open_store(store_url).get_run(done.run_id)
    assert (adopted.sweep, adopted.cell, adopted.started_at is not None) == ("tiny", "GRU", True)
    assert len(open_store(store_url).list_runs()) == 2


def test_a_cell_finished_under_another_sweep_fills_this_sweeps_table_and_says_so(tmp_path, tiny_corpus, store_url):
    first = write_experiment(tmp_path, tiny_corpus, name="first")
    assert invoke("sweep", first, "--store", store_url).exit_code == 0
    second = write_experiment(tmp_path, tiny_corpus, name="second", variants={"GRU": {"model": "gru"}})
    result = invoke("sweep", second, "--store", store_url)
    assert result.exit_code == 0 and "1 already stored, 0 to run" in result.stderr
    out = tmp_path / "report"
    assert invoke("report", second, "--out", out, "--store", store_url).exit_code == 0
    text = (out / "report.md").read_text()
    assert "made by sweep 'first'" in text and "Not run" not in text
    assert len(open_store(store_url).list_runs()) == 2  # nothing trained twice


def test_ray_needs_ray_and_postgresql(tmp_path, tiny_corpus, store_url):
    path = write_experiment(tmp_path, tiny_corpus)
    result = invoke("sweep", path, "--executor", "ray", "--store", store_url)
    assert result.exit_code == 2 and "PostgreSQL" in result.stderr and len(result.stderr.splitlines()) == 1
    result = invoke("sweep", path, "--executor", "dask", "--store", store_url)
    assert result.exit_code == 2 and "local, ray" in result.stderr
    try:
        import ray  # noqa: F401
    except ImportError:
        result = invoke("sweep", path, "--executor", "ray", "--store", "postgresql://u@localhost/db")
        assert result.exit_code == 2 and "Ray is not installed" in result.stderr
    assert open_store(store_url).list_runs() == []


# ---------------------------------------------------------------------------------- killed worker
LONG_EPOCHS = 40


def _kill_when_mid_run(store, process: subprocess.Popen, cell: str, timeout: float = 120) -> tuple[str, int]:
    """SIGKILL the worker training `cell` once it has checkpointed 2 epochs; (run id, epochs it had)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        running = [r for r in store.list_runs() if r.cell == cell and r.status == "running"]
        if running:
            epochs = store.progress([running[0].id]).get(running[0].id, (0, 0))[0]
            if epochs >= 2:
                os.kill(running[0].env["pid"], signal.SIGKILL)
                return running[0].id, epochs
        time.sleep(0.02)
    pytest.fail(f"the {cell} run never got to epoch 2 while the sweep ran")


def test_a_killed_worker_fails_its_cell_and_the_rerun_continues_it(tmp_path, tiny_corpus, store_url):
    long = {"model.emsize": 32, "model.nhid": 32, "train.epochs": LONG_EPOCHS, "train.keep_checkpoints": "all"}
    path = write_experiment(tmp_path, tiny_corpus, variants={"Long": long, "A": {"model": "gru"},
                                                             "B": {"model": "rnn_tanh"}}, scales={})
    command = [sys.executable, "-m", "sweeplab", "sweep", str(path), "--workers", "2", "--store", store_url]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(store_url)
    killed_id, _ = _kill_when_mid_run(store, process, "Long")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr  # an unexpected failure, not the user's: exit 1
    runs = {r.cell: r for r in store.list_runs()}
    assert runs["Long"].status == "failed" and "SIGKILL" in runs["Long"].error
    assert runs["A"].status == runs["B"].status == "finished"  # the sweep carried on
    checkpointed = max(int(p.stem.split("_")[1]) for p in (store.run_dir(killed_id) / "checkpoints").glob("*.pt"))
    kept = [r for r in metric_ids(store, killed_id) if r[1] <= checkpointed]
    finished_before = {c: (runs[c].started_at, runs[c].ended_at, metric_ids(store, runs[c].id)) for c in "AB"}

    rerun = subprocess.run([*command, "--retry-failed"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = {r.cell: r for r in store.list_runs()}
    assert len(after) == 3 and after["Long"].id == killed_id and after["Long"].status == "finished"
    assert {c: (after[c].started_at, after[c].ended_at, metric_ids(store, after[c].id)) for c in "AB"} == \
        finished_before  # finished runs were not trained again
    rows = metric_ids(store, killed_id)
    assert rows[:len(kept)] == kept  # the epochs before the kill were kept, not re-run ...
    epochs = epoch_rows(store, killed_id)
    assert epochs == sorted(set(epochs))  # ... and no row is duplicated
    assert {e for e, s, n in epochs if (s, n) == ("train", "loss")} == set(range(1, LONG_EPOCHS + 1))  # or lost
    assert store.summary(killed_id)["epochs"] == LONG_EPOCHS
    _same_as_an_uninterrupted_run(store, killed_id, tmp_path)


def _same_as_an_uninterrupted_run(store, run_id: str, tmp_path: Path) -> None:
    """The resumed run continued from its checkpoint (weights, optimizer, RNG): it matches a run never stopped."""
    run = store.get_run(run_id)
    previous = torch.get_num_threads()
    torch.set_num_threads(run.env["threads"])  # the worker's share of the cores: same arithmetic
    try:
        from sweeplab.config import flatten

        control = execute(resolve("lm", flatten(run.config)), open_store(f"sqlite:///{tmp_path}/control.sqlite"),
                          RunOptions(quiet=True))
    finally:
        torch.set_num_threads(previous)
    control_store = open_store(f"sqlite:///{tmp_path}/control.sqlite")
    ours = [m.value for m in store.metrics(run_id) if m.key == "train/loss"]
    theirs = [m.value for m in control_store.metrics(control.run_id) if m.key == "train/loss"]
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert store.summary(run_id)["steps"] == control_store.summary(control.run_id)["steps"]
