"""DDP (`train.nproc`, torchrun) on the CPU with the gloo backend, and `sweeplab bench devices`.

N ranks each take a part of every batch, weight their mean loss by its share and average their gradients;
BatchNorm layers use the whole batch's statistics: with no dropout, that is the same update as one process
on the whole batch, whatever the batch and dataset sizes, so the runs must agree to float rounding.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks import resolve

runner = CliRunner()
# lr 1, not word_language_model's 20: at 20 this tiny model amplifies float rounding (1e-7 -> 1e-3 in an epoch).
LM = {"data": "text", "optim.lr": 1.0, "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "model.dropout": 0.0,
      "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.log_every": 5,
      "train.epochs": 2, "train.keep_checkpoints": "all", "device": "cpu"}
TOY = {"model": "mlp", "data.n_samples": 320, "train.batch_size": 32, "train.epochs": 2, "device": "cpu"}
# 156 points leave 113 to train on: batches of 24 end with 17 (split 9 + 8), of 28 with 1 (one rank has none)
UNEVEN = {"model": "mlp", "data.n_samples": 156, "train.epochs": 3, "train.keep_checkpoints": "all", "device": "cpu"}
# vgg8's BatchNorm layers, on 8x8 digits: the ranks' statistics must be the whole batch's
BATCHNORM = {"data": "digits", "model": "vgg8", "data.train_limit": 256, "data.test_limit": 100, "train.batch_size": 32,
             "train.epochs": 2, "train.eval_batch_size": 50, "optim.lr": 0.02, "device": "cpu",
             "train.keep_checkpoints": "all"}


def curve(store, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.epoch, m.value) for m in store.metrics(run_id) if m.key == key]


def final_weights(store, run_id: str, epoch: int) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.epoch_path(store.run_dir(run_id), epoch))["model"]


@pytest.mark.parametrize("task, layer", [("lm", LM), ("toy2d", TOY)], ids=["lm-columns", "toy2d-rows"])
def test_two_ranks_train_like_one_process_on_the_whole_batch(task, layer, tiny_corpus, store_url):
    if task == "lm":
        layer = {**layer, "data.path": str(tiny_corpus)}
    store = open_store(store_url)
    one = execute(resolve(task, layer), store, RunOptions(quiet=True))
    two = execute(resolve(task, {**layer, "train.nproc": 2}), store, RunOptions(quiet=True))
    assert one.status == two.status == "finished" and two.run_id != one.run_id
    row = store.get_run(two.run_id)
    assert row.env["processes"] == 2 and row.config["train"]["nproc"] == 2
    for key in ("train/loss", "test/loss"):  # one row per epoch: rank 0 alone writes
        got, want = curve(store, two.run_id, key), curve(store, one.run_id, key)
        assert [e for e, _ in got] == [e for e, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    a, b = final_weights(store, one.run_id, 2), final_weights(store, two.run_id, 2)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name
    assert two.params == one.params and two.metrics["batches_per_epoch"] == one.metrics["batches_per_epoch"]


@pytest.mark.parametrize("task, layer, world", [
    ("toy2d", {**UNEVEN, "train.batch_size": 24}, 2),  # an odd last batch: 17 points
    ("toy2d", {**UNEVEN, "train.batch_size": 28}, 2),  # a last batch of 1: rank 1's part is empty
    ("toy2d", {**UNEVEN, "data.n_samples": 170, "train.batch_size": 30}, 3),  # 122 points: a last batch of 2, 3 ranks
    ("image", BATCHNORM, 2),  # BatchNorm statistics over the whole batch
], ids=["odd-last-batch", "last-batch-of-1", "3-ranks-last-batch-of-2", "batchnorm"])
def test_ddp_makes_the_single_process_step_for_any_batch(task, layer, world, store_url):
    store = open_store(store_url)
    one = execute(resolve(task, layer), store, RunOptions(quiet=True))
    many = execute(resolve(task, {**layer, "train.nproc": world}), store, RunOptions(quiet=True))
    assert one.status == many.status == "finished", store.get_run(many.run_id).error
    for key in ("train/loss", "valid/loss", "test/loss"):
        got, want = curve(store, many.run_id, key), curve(store, one.run_id, key)
        assert [e for e, _ in got] == [e for e, _ in want] and got
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-6), key
    epochs = one.metrics["epochs"]
    a, b = final_weights(store, one.run_id, int(epochs)), final_weights(store, many.run_id, int(epochs))
    for name in a:  # BatchNorm's running statistics included
        assert torch.allclose(a[name].float(), b[name].float(), rtol=1e-4, atol=1e-5), name


def test_a_ddp_run_with_dropout_resumes_bit_identically(store_url):
    """Each rank draws its own dropout masks (generators seeded per rank) and gets its own generators back
    on resume: the resumed run repeats the uninterrupted one exactly."""
    layer = {**BATCHNORM, "model": "mlp", "model.dropout": 0.5, "train.epochs": 3, "train.nproc": 2}
    store = open_store(store_url)
    first = execute(resolve("image", layer), store, RunOptions(quiet=True))
    reference = curve(store, first.run_id, "train/loss")
    run_dir = store.run_dir(first.run_id)
    ranks = checkpoint.load(checkpoint.epoch_path(run_dir, 2))["rank_rng"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])  # the ranks' generators differ
    checkpoint.epoch_path(run_dir, 3).unlink()
    store.update_run(first.run_id, status="interrupted")
    resumed = execute(resolve("image", layer), store, RunOptions(quiet=True))
    assert resumed.status == "finished" and curve(store, first.run_id, "train/loss") == reference


def test_an_interrupted_ddp_run_resumes_where_it_stopped(tiny_corpus, store_url):
    cfg = resolve("lm", {**LM, "data.path": str(tiny_corpus), "train.epochs": 3, "train.nproc": 2})
    store = open_store(store_url)
    first = execute(cfg, store, RunOptions(quiet=True))
    reference = curve(store, first.run_id, "valid/loss")
    # As a stop during epoch 3 would leave it: the last checkpoint is epoch 2, epoch 3's rows are partial.
    checkpoint.epoch_path(store.run_dir(first.run_id), 3).unlink()
    store.update_run(first.run_id, status="interrupted")
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.run_id == first.run_id and resumed.status == "finished"
    assert curve(store, first.run_id, "valid/loss") == reference  # epochs 1-3 once each, epoch 3 recomputed alike


def test_sigterm_stops_every_rank_and_leaves_a_resumable_run(tiny_corpus, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'runs' / 's.sqlite'}"
    overrides = {**LM, "data.path": tiny_corpus, "train.epochs": 500, "train.nproc": 2}
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab", "run", "lm", "--store", store_url,
                             *[f"{k}={v}" for k, v in overrides.items()]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 90
    while not list((tmp_path / "runs").glob("*/checkpoints/epoch_001.pt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read().decode()
    (row,) = open_store(store_url).list_runs()
    assert row.status == "interrupted" and row.epoch >= 1
    with pytest.raises(ProcessLookupError):  # rank 0 (whose pid the run keeps) is gone, not orphaned
        os.kill(row.env["pid"], 0)


@pytest.mark.parametrize("args, key", [
    (["train.nproc=3"], "train.batch_size"),  # 32 does not split over 3
    (["model=mlp_numpy", "train.nproc=2"], "train.nproc"),
    (["train.nproc=2", "--device", "cuda:0"], "device"),
    (["train.nproc=0"], "train.nproc"),
])
def test_bad_ddp_requests_are_one_line_exit_2_and_no_run(args, key, store_url):
    result = runner.invoke(app, ["run", "toy2d", "data.n_samples=64", *args, "--store", store_url])
    assert result.exit_code == 2, result.output
    assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert open_store(store_url).list_runs() == []


def test_torchrun_launches_the_same_run_as_train_nproc(store_url, tmp_path):
    """torchrun (and so SLURM's and Kubernetes' launchers, which set the same variables) starts the ranks;
    sweeplab joins their group, and the run is the one `train.nproc=2` names."""
    torchrun = Path(sys.executable).with_name("torchrun")
    args = ["toy2d", *[f"{k}={v}" for k, v in {**UNEVEN, "train.batch_size": 24}.items()], "--store", store_url]
    proc = subprocess.run([str(torchrun), "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d",
                           f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--local-addr=127.0.0.1",
                           "-m", "sweeplab", "run", *args, "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["status"] == "finished"  # rank 0 alone speaks
    (row,) = open_store(store_url).list_runs()
    assert row.env["processes"] == 2 and row.config["train"]["nproc"] == 2
    again = runner.invoke(app, ["run", *args, "train.nproc=2", "--json"])  # the same run: not trained again
    assert again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["run_id"] == row.id


@pytest.mark.parametrize("env, key", [
    ({"WORLD_SIZE": "4", "RANK": "0"}, "MASTER_ADDR"),  # not a launcher's whole environment
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE"),
])
def test_a_broken_launcher_environment_is_one_line(env, key, store_url, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["run", "toy2d", "data.n_samples=64", "--store", store_url])
    assert result.exit_code == 2 and key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert open_store(store_url).list_runs() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_devices_times_the_cpu_and_says_why_gpu_rows_are_missing(store_url, tmp_path):
    result = runner.invoke(app, ["bench", "devices", "toy2d", "data.n_samples=400", "train.batch_size=20",
                                 "--steps", "10", "--json", "--store", store_url])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    cpu = rows[0]
    assert cpu["setup"] == "cpu" and cpu["status"] == "finished" and cpu["speedup"] == 1.0
    (run,) = open_store(store_url).list_runs()
    per_epoch = open_store(store_url).summary(run.id)["batches_per_epoch"]  # 288 training points / 20, rounded up
    assert per_epoch == 15 and cpu["ms_per_batch"] > 0
    assert cpu["epoch_s"] == pytest.approx(cpu["ms_per_batch"] * per_epoch / 1000)
    assert run.id == cpu["run_id"] and run.step == 10 and run.sweep == "bench-devices-toy2d"
    if not torch.cuda.is_available():
        assert [r["status"] for r in rows[1:]] == ["skipped", "skipped"] and all(r["note"] for r in rows[1:])
    again = runner.invoke(app, ["bench", "devices", "toy2d", "data.n_samples=400", "train.batch_size=20",
                                "--steps", "10", "--store", store_url])  # the stored measurement, as a table
    assert again.exit_code == 0 and "cpu" in again.stdout and "skipped" in again.stdout
    assert len(open_store(store_url).list_runs()) == 1
    out = tmp_path / "report"  # the bench's runs make a report of their own, by sweep name
    report = runner.invoke(app, ["report", "bench-devices-toy2d", "--store", store_url, "--out", str(out)])
    assert report.exit_code == 0, report.output
    markdown = (out / "report.md").read_text()
    assert "task toy2d" in markdown and "| ms/batch | Trainable params |" in markdown
    assert f"| {run.name} |" in markdown and "not in the experiment's cells" not in markdown


def test_a_sweep_under_torchrun_is_one_line(store_url, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    path = Path(__file__).parent.parent / "experiments" / "palindrome.yaml"
    result = runner.invoke(app, ["sweep", str(path), "--store", store_url])
    assert result.exit_code == 2 and "train.nproc" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_sweep_worker_trains_a_ddp_cell_and_keeps_its_own_signal_handling(store_url, tmp_path):
    """A local sweep worker (a daemonic process that ignores Ctrl-C) starts the cell's ranks through torchelastic's
    agent, which installs its own handlers; the worker gets its own back for the next cell."""
    import yaml

    spec = {"name": "ddpcells", "task": "toy2d", "base": {**UNEVEN, "train.batch_size": 24, "train.nproc": 2},
            "variants": {"moons": {}, "circles": {"data": "circles"}},
            "columns": [{"title": "Test acc", "metric": "test/acc"}], "scales": {}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["sweep", str(path), "--store", store_url])
    assert result.exit_code == 0, result.output
    runs = open_store(store_url).list_runs(sweep="ddpcells")
    assert {r.status for r in runs} == {"finished"} and {r.env["processes"] for r in runs} == {2}
