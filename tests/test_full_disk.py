"""A full disk or quota, for real: a 2 MB tmpfs filled up, under the artifact folder, the store, the data cache
and the report's output. Each: exit 2 and one line `no space left on device: PATH`; a run ends `failed` and
resumes once there is room; no partial file or empty folder stays.

Mounting needs root (CI has it); elsewhere these tests skip and say so.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.store import open_store

runner = CliRunner()
TOY = ["toy2d", "data.n_samples=100", "train.epochs=30", "train.keep_checkpoints=all"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True) if os.geteuid() == 0 else None
    if done is None or done.returncode:
        pytest.skip(f"a 2 MB tmpfs cannot be mounted here ({'not root' if done is None else done.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_kb: int) -> Path:
    """A file that takes all the disk's free space but `leave_kb`."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - leave_kb * 1024, 0))
    return filler


def one_line(result, where: Path) -> str:
    """Exit 2 and one error line, the last (the lines before it are the run's progress log)."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: no space left on device: {where}"), result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in result.output
    return errors[0]


def leftovers(folder: Path) -> list[Path]:
    """Temp files of atomic writes, and empty folders."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or (p.is_dir() and not any(p.iterdir()))]


def test_full_artifact_folder_fails_the_run_which_resumes_once_there_is_room(small_disk, tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 's.sqlite'}"
    filler = fill(small_disk, leave_kb=120)
    args = ["run", *TOY, "--store", store, "--artifacts", str(small_disk / "runs")]
    one_line(runner.invoke(app, args), small_disk / "runs")
    (row,) = open_store(store).list_runs()
    assert row.status == "failed" and row.epoch >= 1 and not leftovers(small_disk)
    filler.unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "resuming run" in again.stderr
    assert open_store(store).get_run(row.id).status == "finished"


def test_full_store_disk_is_one_line_naming_the_store(small_disk, tmp_path):
    store_file = small_disk / "s.sqlite"
    assert runner.invoke(app, ["run", *TOY[:2], "train.epochs=1", "--store", f"sqlite:///{store_file}",
                               "--artifacts", str(tmp_path / "runs")]).exit_code == 0
    fill(small_disk, leave_kb=0)
    result = runner.invoke(app, ["run", *TOY, "seed=3", "--store", f"sqlite:///{store_file}",
                                 "--artifacts", str(tmp_path / "runs")])
    one_line(result, store_file)


def test_full_cache_disk_is_one_line_and_leaves_no_run(small_disk, tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_CACHE", str(small_disk / "cache"))
    fill(small_disk, leave_kb=0)
    store = f"sqlite:///{tmp_path / 'store' / 's.sqlite'}"
    result = runner.invoke(app, ["run", "lm", "data=text", f"data.path={tiny_corpus}", "model.emsize=16",
                                 "model.nhid=16", "train.epochs=1", "--store", store])
    one_line(result, small_disk / "cache")
    assert open_store(store).list_runs() == [] and not leftovers(small_disk)


def test_full_report_output_leaves_no_half_report(small_disk, tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 's.sqlite'}"
    assert runner.invoke(app, ["run", *TOY[:2], "train.epochs=2", "--name", "r", "--store", store]).exit_code == 0
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("name: exp\ntask: toy2d\nbase: {data.n_samples: 100, train.epochs: 2}\n"
                          "variants: {MLP: {model: mlp}}\ncolumns: [{title: Test acc, metric: test/acc}]\n")
    assert runner.invoke(app, ["sweep", str(experiment), "--store", store]).exit_code == 0
    fill(small_disk, leave_kb=8)
    out = small_disk / "report"
    one_line(runner.invoke(app, ["report", str(experiment), "--out", str(out), "--store", store]), out)
    assert not out.exists() and not leftovers(small_disk)
