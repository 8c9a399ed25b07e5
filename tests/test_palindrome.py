"""palindrome: the generator (hypothesis), seeded batches, the step-based schedule, smoke runs that
learn, resume, the convergence step, and bad input through the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.data.sequences import PalindromeData, palindromes, seeded_rng
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.registry import MODELS, TASKS
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks import resolve
from sweeplab.tasks.steps import convergence_step

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = {"train.max_steps": 200, "train.eval_every": 100, "train.eval_batch_size": 500, "data.test_size": 1000}


def make_task(**overrides):
    task = TASKS.get("palindrome").obj(resolve("palindrome", {"device": "cpu", **overrides}), CPU)
    return task, task.build()


def curve(store, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.metrics(run_id) if m.key == key]


# -- the generator ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(length=st.integers(2, 130), n=st.integers(1, 40), seed=st.integers(-(2**40), 2**40))
def test_every_generated_palindrome_is_one(length, n, seed):
    digits = palindromes(seeded_rng(seed, "train"), n, length)
    assert digits.shape == (n, length) and digits.min() >= 0 and digits.max() <= 9
    assert (digits == digits[:, ::-1]).all()


@settings(max_examples=30, deadline=None)
@given(length=st.integers(2, 60), encoding=st.sampled_from(["scalar", "onehot"]), seed=st.integers(0, 2**32))
def test_batch_reads_all_but_the_last_digit_and_targets_the_last(length, encoding, seed):
    data = PalindromeData(resolve("palindrome", {"data.length": length, "data.encoding": encoding}).data)
    x, y = data.batch(seeded_rng(seed, "train"), 16, CPU)
    full = torch.from_numpy(palindromes(seeded_rng(seed, "train"), 16, length))
    read = x.squeeze(-1).long() if encoding == "scalar" else x.argmax(-1)
    assert x.shape == (16, length - 1, data.input_dim) and x.dtype == torch.float32
    assert torch.equal(read, full[:, :-1]) and torch.equal(y, full[:, -1]) and torch.equal(y, full[:, 0])


def test_digits_are_roughly_uniform():
    digits = palindromes(seeded_rng(0, "train"), 20_000, 5)
    counts = np.bincount(digits[:, 0], minlength=10)
    assert counts.min() > 1_800 and counts.max() < 2_200  # 2,000 expected per digit


# -- seeded batches and the step-based schedule -----------------------------------------------------

def _batches(task, epoch: int) -> list[torch.Tensor]:
    return [torch.cat([x.flatten(), y]) for x, y in task.train_batches(epoch)]


def test_same_seed_same_batches_other_seed_or_epoch_other_batches():
    first, _ = make_task(**{"train.eval_every": 3, "data.length": 9})
    again, _ = make_task(**{"train.eval_every": 3, "data.length": 9})
    other, _ = make_task(**{"train.eval_every": 3, "data.length": 9, "seed": 7})
    assert all(torch.equal(a, b) for a, b in zip(_batches(first, 2), _batches(again, 2), strict=True))
    assert not torch.equal(_batches(first, 2)[0], _batches(other, 2)[0])
    assert not torch.equal(_batches(first, 2)[0], _batches(first, 3)[0])
    assert len({tuple(b.tolist()) for b in _batches(first, 1)}) == 3  # every step a fresh batch


def test_an_epoch_is_eval_every_steps():
    task, _ = make_task(**{"train.max_steps": 1050, "train.eval_every": 100})
    assert task.batches_per_epoch() == 100 and task.num_epochs() == 11 and task.eval_interval() == 1


def test_valid_batches_are_fresh_per_evaluation_and_test_set_fixed_across_seeds():
    task, _ = make_task()
    other, _ = make_task(seed=5)
    _batches(task, 1)
    v1 = task.eval_batches("valid")[0][1]
    _batches(task, 2)
    assert not torch.equal(v1, task.eval_batches("valid")[0][1])
    assert torch.equal(task.eval_batches("test")[0][1], other.eval_batches("test")[0][1])


# -- convergence step -------------------------------------------------------------------------------

@pytest.mark.parametrize("points, expected", [
    ([(100, 0.5), (200, 0.995), (300, 1.0)], 200),
    ([(100, 0.995), (200, 0.9), (300, 0.99), (400, 1.0)], 300),  # a dip resets it: "stays" from 300 on
    ([(100, 0.995), (200, 0.98)], math.nan),  # fell back at the end: not converged
    ([], math.nan),
])
def test_convergence_step(points, expected):
    got = convergence_step(points, 0.99)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


# -- end to end -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS.names("palindrome"))
def test_length5_onehot_reaches_100_percent(model, store_url):
    store = open_store(store_url)
    cfg = resolve("palindrome", {**QUICK, "model": model, "data.encoding": "onehot", "device": "cpu"})
    result = execute(cfg, store, RunOptions(quiet=True))
    assert result.status == "finished" and result.metrics["test/acc"] == 1.0
    assert [s for s, _ in curve(store, result.run_id, "valid/acc")] == [100, 200]
    assert result.metrics["converged"] == 1.0 and result.metrics["convergence_step"] in (100, 200)
    assert {"train/acc", "train/loss", "valid/loss", "test/loss"} <= set(result.metrics)


def test_length5_scalar_rnn_as_the_course_skeleton_reaches_100_percent(store_url):
    cfg = resolve("palindrome", {**QUICK, "train.max_steps": 800, "optim.lr": 3e-3, "device": "cpu"})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.metrics["test/acc"] == 1.0 and result.params == 17_930


@pytest.mark.parametrize("model", MODELS.names("palindrome"))
def test_length_100_runs(model, store_url):
    cfg = resolve("palindrome", {"model": model, "data.length": 100, "model.hidden": 32, "train.max_steps": 4,
                                 "train.eval_every": 2, "train.eval_batch_size": 64, "data.test_size": 64,
                                 "device": "cpu"})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and result.metrics["steps"] == 4 and 0 <= result.metrics["test/acc"] <= 1


def test_not_converged_is_recorded_without_a_step(store_url):
    cfg = resolve("palindrome", {**QUICK, "train.max_steps": 100, "data.length": 30, "device": "cpu"})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.metrics["converged"] == 0.0 and "convergence_step" not in result.metrics


def test_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = resolve("palindrome", {**QUICK, "train.max_steps": 300, "data.length": 8, "device": "cpu"})
    reference = execute(cfg, open_store(f"sqlite:///{tmp_path / 'a' / 's.sqlite'}"), RunOptions(quiet=True))

    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    original = Trainer.train_epoch

    def stop_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", stop_in_epoch_2)
    first = execute(cfg, store, RunOptions(quiet=True))
    assert first.status == "interrupted" and checkpoint.list_epochs(store.run_dir(first.run_id)) == [1]
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.run_id == first.run_id and resumed.status == "finished"
    ref_store = open_store(f"sqlite:///{tmp_path / 'a' / 's.sqlite'}")
    for key in ("valid/acc", "valid/loss", "train/loss"):
        assert curve(store, first.run_id, key) == curve(ref_store, reference.run_id, key)
    assert resumed.metrics["test/acc"] == reference.metrics["test/acc"]


def test_divergence_ends_the_run_as_diverged(store_url):
    cfg = resolve("palindrome", {**QUICK, "optim": "sgd", "optim.lr": 1e38, "train.clip": 0.0, "device": "cpu"})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "diverged"


# -- the CLI ----------------------------------------------------------------------------------------

def test_cli_dry_run_reports_the_exact_parameter_count(store_url):
    import json

    result = CliRunner().invoke(app, ["run", "palindrome", "model=lstm", "data.encoding=onehot", "--dry-run", "--json",
                                      "--store", store_url])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and out["status"] == "dry-run"
    assert out["params"] == 4 * (128 * 10 + 128 * 128 + 128) + 10 * 128 + 10
    assert open_store(store_url).list_runs() == []


@pytest.mark.parametrize("override, named", [
    ("data.length=1", "data.length"), ("data.encoding=binary", "data.encoding"), ("model=gru", "model"),
    ("model.hidden=0", "model.hidden"), ("train.epochs=3", "train.max_steps"), ("data.path=/tmp", "data.path"),
])
def test_cli_bad_input_is_one_line_exit_2_nothing_stored(override, named, store_url):
    result = CliRunner().invoke(app, ["run", "palindrome", override, "--store", store_url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output
    assert open_store(store_url).list_runs() == []
