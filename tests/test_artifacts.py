"""Artifact storage by URI: a folder anywhere (recorded on the run row, found from any working directory),
and an object store through fsspec, tested against moto's S3 server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.sweep_helpers import invoke, metric_ids
from tests.test_checkpoints import interrupt_in_epoch

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks import resolve

TOY = {"data": "moons", "model": "mlp", "data.n_samples": 200, "train.batch_size": 16}


def toy(epochs: int, **extra):
    return resolve("toy2d", {**TOY, "train.epochs": epochs, **extra})


# ---------------------------------------------------------------------------------------- folders
def test_a_run_records_its_artifact_folder_and_is_found_from_any_working_directory(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'db' / 'sweeplab.sqlite'}"
    result = invoke("run", "toy2d", *(f"{k}={v}" for k, v in TOY.items()), "train.epochs=2", "--store", url,
                    "--artifacts", "shared/art", "--json")
    assert Path(os.environ.pop("SWEEPLAB_ARTIFACTS")) == Path("shared/art")  # for the processes it would start
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
    folder = tmp_path / "shared" / "art" / run_id
    store = open_store(url)
    assert store.get_run(run_id).artifacts == str(folder)  # absolute: it means the same from anywhere
    assert (folder / "decision_boundary.svg").is_file() and checkpoint.list_epochs(folder) == [2]
    assert not (tmp_path / "db" / run_id).exists()  # not beside the store, where it used to go

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert open_store(url).run_dir(run_id) == folder
    shown = invoke("runs", "show", run_id, "--store", url)
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert data["artifacts_at"] == str(folder) and "decision_boundary.svg" in data["artifacts"]


def test_a_copied_runs_folder_finds_its_own_artifacts(tmp_path, store_url, one_thread):
    result = execute(toy(1), open_store(store_url), RunOptions(quiet=True))
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "runs", copy)
    shutil.rmtree(tmp_path / "runs")  # as on another machine: the recorded folder is not there
    moved = open_store(f"sqlite:///{copy / 'sweeplab.sqlite'}")
    assert moved.run_dir(result.run_id) == copy / result.run_id
    assert (moved.run_dir(result.run_id) / "decision_boundary.svg").is_file()


# ---------------------------------------------------------------------------------------- S3 (moto)
@pytest.fixture
def s3(monkeypatch):
    """A bucket on moto's S3 server at 127.0.0.1; s3fs reaches it through the usual AWS variables."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[s3]')")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import s3fs

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("sweeps")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def machine(monkeypatch, tmp_path: Path, name: str) -> None:
    """Another machine: its own local copies of remote artifacts (nothing in common but the bucket)."""
    monkeypatch.setenv("SWEEPLAB_CACHE", str(tmp_path / name / "cache"))


def stored(fs, run_id: str) -> list[str]:
    fs.invalidate_cache()
    prefix = f"sweeps/lab/{run_id}/"
    return sorted(p[len(prefix):] for p in fs.find(prefix))


def test_a_run_on_s3_checkpoints_to_the_bucket_and_resumes_on_another_machine(s3, tmp_path, monkeypatch, one_thread):
    cfg = toy(4, **{"train.keep_checkpoints": "last"})
    url = f"sqlite:///{tmp_path / 'db' / 's.sqlite'}"
    machine(monkeypatch, tmp_path, "a")
    store = open_store(url, "s3://sweeps/lab")
    seen_mid_run: list[list[str]] = []
    restore = interrupt_in_epoch(monkeypatch, 3)
    original = checkpoint.prune

    def watch(run_dir, keep):  # what the bucket holds right after each checkpoint, while the run goes on
        original(run_dir, keep)
        seen_mid_run.append(stored(s3, run_dir.name))

    monkeypatch.setattr(checkpoint, "prune", watch)
    first = execute(cfg, store, RunOptions(quiet=True))
    restore()
    monkeypatch.setattr(checkpoint, "prune", original)
    assert first.status == "interrupted"
    assert store.get_run(first.run_id).artifacts == f"s3://sweeps/lab/{first.run_id}"
    assert any("checkpoints/epoch_001.pt" in names for names in seen_mid_run[1:])  # pushed during the run
    assert "checkpoints/epoch_002.pt" in stored(s3, first.run_id)
    before = metric_ids(store, first.run_id)

    machine(monkeypatch, tmp_path, "b")  # resumed elsewhere: only the bucket has its checkpoints
    resumed = execute(cfg, open_store(url, "s3://sweeps/lab"), RunOptions(quiet=True))
    assert resumed.run_id == first.run_id and resumed.status == "finished"
    kept = [row for row in before if row[1] <= 2]
    assert metric_ids(store, first.run_id)[:len(kept)] == kept  # epochs 1-2 were not trained again
    names = stored(s3, first.run_id)
    assert [n for n in names if n.startswith("checkpoints/")] == ["checkpoints/epoch_004.pt"]  # pruned there too
    assert "decision_boundary.svg" in names and any(n.startswith("tb/") for n in names)
    assert not [n for n in names if "/." in f"/{n}"]  # no temp file ever reached the bucket

    reference = execute(cfg, open_store(f"sqlite:///{tmp_path / 'ref' / 's.sqlite'}"), RunOptions(quiet=True))
    for key in ("test/acc", "test/loss", "train/loss"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-6), key

    machine(monkeypatch, tmp_path, "c")  # a report elsewhere needs the figures, not the checkpoints
    folder = open_store(url).run_dir(first.run_id, checkpoints=False)
    assert (folder / "decision_boundary.svg").is_file() and checkpoint.list_epochs(folder) == []


def test_a_storage_url_without_its_backend_is_one_line(tmp_path, store_url):
    result = invoke("run", "toy2d", "train.epochs=1", "--store", store_url, "--artifacts", "nosuch://bucket/x")
    assert result.exit_code == 2 and "--artifacts nosuch://bucket/x" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_credentials_in_a_storage_url_are_refused_without_being_shown(tmp_path, store_url):
    result = invoke("run", "toy2d", "train.epochs=1", "--store", store_url, "--artifacts", "s3://KEY:hunter2@bucket/x")
    assert result.exit_code == 2 and "hunter2" not in result.stderr and "s3://bucket/x" in result.stderr
