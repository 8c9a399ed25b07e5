"""End-to-end lm runs on a tiny corpus: every model trains, the store and checkpoints are written,
resume gives the result of an uninterrupted run, divergence and interruption end cleanly."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeplab.config import run_key
from sweeplab.engine import checkpoint
from sweeplab.engine.runner import RunOptions, execute
from sweeplab.engine.trainer import Trainer
from sweeplab.registry import MODELS
from sweeplab.store import open_store
from sweeplab.tasks import resolve

TINY = {"data": "text", "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "model.dropout": 0.1,
        "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.log_every": 5,
        "train.keep_checkpoints": "all"}


def tiny_cfg(corpus: Path, **overrides):
    return resolve("lm", {**TINY, "data.path": str(corpus), **overrides})


def curve(store, run_id: str, key: str) -> list[float]:
    return [m.value for m in store.metrics(run_id) if m.key == key]


@pytest.mark.parametrize("model", MODELS.names("lm"))
def test_every_lm_model_trains_and_is_stored(model, tiny_corpus, store_url):
    lr = 0.5 if model == "transformer" else 2.0
    cfg = tiny_cfg(tiny_corpus, model=model, **{"optim.lr": lr, "train.epochs": 3, "train.schedule": "constant"})
    store = open_store(store_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    assert result.status == "finished" and store.get_run(result.run_id).key == run_key(cfg)
    train = curve(store, result.run_id, "train/loss")
    assert len(train) == 3 and all(math.isfinite(v) for v in train) and train[-1] < train[0]
    assert {"valid/ppl", "test/ppl", "train/ms_per_batch", "train/tokens_per_s"} <= set(result.metrics)
    assert result.params == result.metrics["params"] > 0
    run_dir = store.run_dir(result.run_id)
    assert checkpoint.list_epochs(run_dir) == [1, 2, 3]
    assert (run_dir / "generated.txt").read_text().strip() and (run_dir / "vocab.txt").exists()
    assert any((run_dir / "tb").iterdir())
    assert (run_dir / "attention.svg").exists() == (model == "transformer")


def test_resume_continues_at_next_epoch_with_identical_results(tiny_corpus, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_corpus, **{"train.epochs": 3, "model.dropout": 0.3})
    reference = open_store(f"sqlite:///{tmp_path / 'a' / 's.sqlite'}")
    ref = execute(cfg, reference, RunOptions(quiet=True))

    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    original = Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_2)
    first = execute(cfg, store, RunOptions(quiet=True))
    assert first.status == "interrupted" and store.get_run(first.run_id).epoch == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.run_id == first.run_id and resumed.status == "finished"
    for key in ("train/loss", "valid/loss", "test/loss"):
        assert curve(store, first.run_id, key) == curve(reference, ref.run_id, key)  # bit-identical on CPU
    epochs = [m.epoch for m in store.metrics(first.run_id) if m.key == "train/loss"]
    assert epochs == [1, 2, 3]  # no epoch lost or repeated


def test_finished_run_is_not_trained_twice(tiny_corpus, store_url):
    cfg = tiny_cfg(tiny_corpus, **{"train.epochs": 1})
    store = open_store(store_url)
    first = execute(cfg, store, RunOptions(quiet=True))
    again = execute(cfg, store, RunOptions(quiet=True))
    assert again.run_id == first.run_id and len(store.list_runs()) == 1
    assert again.metrics == first.metrics


def test_divergence_ends_the_run_with_its_metrics(tiny_corpus, store_url):
    cfg = tiny_cfg(tiny_corpus, model="rnn_relu",
                   **{"optim.lr": 1e6, "train.clip": 0.0, "train.log_every": 1, "train.epochs": 3})
    store = open_store(store_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    row = store.get_run(result.run_id)
    assert result.status == row.status == "diverged" and "training loss became" in row.error
    losses = curve(store, result.run_id, "step/loss")
    assert losses and math.isfinite(losses[0])  # the history up to the divergence is kept


def test_sigterm_interrupts_and_the_run_resumes(tiny_corpus, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'runs' / 's.sqlite'}"
    args = [sys.executable, "-m", "sweeplab", "run", "lm", "--store", store_url,
            *[f"{k}={v}" for k, v in {**TINY, "data.path": tiny_corpus, "train.epochs": 200}.items()]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 60
    while not list((tmp_path / "runs").glob("*/checkpoints/epoch_001.pt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    (row,) = open_store(store_url).list_runs()
    assert row.status == "interrupted" and row.epoch >= 1
    assert b"resumable from epoch" in proc.stderr.read()
