"""Divergence is any non-finite training or evaluation metric, not only the loss: real tiny runs."""
from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import open_store
from sweeplab.tasks.resolve import resolve

TINY = {"data": "text", "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "model.dropout": 0.0,
        "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.epochs": 2}


def test_an_infinite_validation_perplexity_ends_the_run_diverged(tiny_corpus, store_url, one_thread):
    # One step at the initial loss (finite training metrics), then lr 1e6 wrecks the weights: the
    # validation loss is a huge finite number and its perplexity overflows to inf.
    cfg = resolve("lm", {**TINY, "data.path": str(tiny_corpus), "optim.lr": 1e6, "train.max_steps": 1})
    store = open_store(store_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    row = store.get_run(result.run_id)
    assert result.status == row.status == "diverged"
    assert row.error == "validation ppl became inf (valid/ppl) at step 1 (epoch 1)"
    assert math.isfinite(result.metrics["train/ppl"]) and math.isfinite(result.metrics["valid/loss"])
    assert math.isnan(result.metrics["valid/ppl"])  # stored as null: the store has no infinity


def test_run_with_an_infinite_training_perplexity_exits_3(tiny_corpus, store_url, one_thread):
    args = [f"{k}={v}" for k, v in {**TINY, "data.path": tiny_corpus, "optim.lr": 1e6}.items()]
    result = CliRunner().invoke(app, ["run", "lm", *args, "--json", "--store", store_url])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 3 and out["status"] == "diverged"
    assert out["metrics"]["train/ppl"] is None and out["metrics"]["train/loss"] > 1e3  # the loss itself is finite
    (row,) = open_store(store_url).list_runs()
    assert row.error.startswith("training ppl became inf (train/ppl) at step 33 (epoch 1)")
    assert "| diverged | training ppl became inf" in result.stderr
