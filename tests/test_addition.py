"""addition: targets are the true sums of big integers (hypothesis, Python ints as the oracle), seeded
batches, both digit orders, smoke runs that learn 2-digit addition, and bad input through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.config import key_fields
from sweeplab.data.sequences import (
    AdditionData,
    add_digits,
    from_digits,
    random_operands,
    random_values,
    seeded_rng,
    to_digits,
)
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.registry import MODELS, TASKS
from sweeplab.store import open_store
from sweeplab.tasks import resolve

CPU = torch.device("cpu")
BIG = st.integers(0, 10**40 - 1)  # up to 40 digits: far past 64-bit integers


pytestmark = pytest.mark.usefixtures("one_thread")


def data(max_digits: int, reverse: bool = True) -> AdditionData:
    return AdditionData(resolve("addition", {"data.max_digits": max_digits, "data.reverse": reverse}).data)


# -- the arithmetic ----------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(a=BIG, b=BIG)
def test_digit_addition_is_the_true_sum_up_to_40_digits(a, b):
    total = add_digits(to_digits([a], 40), to_digits([b], 40))
    assert total.shape == (1, 41) and from_digits(total) == [a + b]


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(BIG, BIG), min_size=1, max_size=8), reverse=st.booleans())
def test_encoded_batches_decode_to_the_operands_and_their_sum(pairs, reverse):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    d = data(40, reverse)
    x, y = d.encode(to_digits(a, 40), to_digits(b, 40), CPU)
    assert x.shape == (len(pairs), 41, 20) and y.shape == (len(pairs), 41)
    assert d.decode(x, y) == (a, b, [p + q for p, q in pairs])


@settings(max_examples=40, deadline=None)
@given(max_digits=st.integers(1, 40), seed=st.integers(0, 2**40), reverse=st.booleans(),
       operands=st.sampled_from(["lengths", "values"]))
def test_generated_batches_hold_true_sums_of_numbers_within_max_digits(max_digits, seed, reverse, operands):
    d = AdditionData(resolve("addition", {"data.max_digits": max_digits, "data.reverse": reverse,
                                          "data.operands": operands}).data)
    a, b, total = d.decode(*d.batch(seeded_rng(seed, "train"), 32, CPU))
    assert total == [p + q for p, q in zip(a, b, strict=True)]
    assert all(0 <= v < 10**max_digits for v in a + b)


def test_operand_lengths_cover_1_to_max_digits_without_leading_zeros():
    digits = random_operands(seeded_rng(0, "train"), 5_000, 6)
    lengths = {len(str(v)) for v in from_digits(digits)}
    assert lengths == set(range(1, 7))


def test_uniform_values_are_nearly_all_full_length_as_the_course_draws_them():
    """The course code draws random.randint(0, 10**maxlen): 9 in 10 operands have maxlen digits."""
    values = from_digits(random_values(seeded_rng(0, "train"), 20_000, 14))
    full = sum(len(str(v)) == 14 for v in values) / len(values)
    assert 0.89 < full < 0.91 and all(0 <= v < 10**14 for v in values)
    assert 0.45 < sum(v < 5 * 10**13 for v in values) / len(values) < 0.55  # uniform, not only long
    lengths = from_digits(random_operands(seeded_rng(0, "train"), 20_000, 14))
    assert sum(len(str(v)) == 14 for v in lengths) / len(lengths) < 0.1  # the other convention: 1 in 14


def test_operand_convention_is_in_the_run_key_only_when_it_is_not_the_old_default():
    assert "data.operands" not in key_fields(resolve("addition", {}))  # runs stored before it are still found
    assert key_fields(resolve("addition", {"data.operands": "values"}))["data.operands"] == "values"


def test_as_written_is_the_time_reversal_of_least_significant_first():
    rng_args = (3, "train", 4)
    x_rev, y_rev = data(7, True).batch(seeded_rng(*rng_args), 16, CPU)
    x_fwd, y_fwd = data(7, False).batch(seeded_rng(*rng_args), 16, CPU)
    assert torch.equal(x_fwd, x_rev.flip(1)) and torch.equal(y_fwd, y_rev.flip(1))
    assert (y_fwd[:, 0] <= 1).all()  # as written, the first step holds the final carry (0 or 1)


def test_to_digits_rejects_what_does_not_fit():
    with pytest.raises(ValueError):
        to_digits([10**3], 3)
    with pytest.raises(ValueError):
        to_digits([-1], 3)


# -- seeded batches ----------------------------------------------------------------------------------

def test_same_seed_same_batches():
    def batches(seed: int, epoch: int) -> list[np.ndarray]:
        cfg = resolve("addition", {"seed": seed, "train.eval_every": 4, "data.max_digits": 12, "device": "cpu"})
        task = TASKS.get("addition").obj(cfg, CPU)
        task.build()
        return [y.numpy() for _, y in task.train_batches(epoch)]

    first, again = batches(11, 3), batches(11, 3)
    assert len(first) == 4 and all((p == q).all() for p, q in zip(first, again, strict=True))
    assert not (first[0] == batches(12, 3)[0]).all() and not (first[0] == batches(11, 2)[0]).all()


# -- end to end --------------------------------------------------------------------------------------

QUICK = {"data.max_digits": 2, "train.max_steps": 600, "train.eval_every": 200, "train.eval_batch_size": 500,
         "data.test_size": 2000, "device": "cpu"}


@pytest.mark.parametrize("model", MODELS.names("addition"))
def test_two_digit_addition_is_learned(model, store_url):
    store = open_store(store_url)
    result = execute(resolve("addition", {**QUICK, "model": model, "model.hidden": 64}), store, RunOptions(quiet=True))
    assert result.status == "finished"
    assert result.metrics["test/acc"] > 0.95 and result.metrics["test/digit_acc"] >= result.metrics["test/acc"]
    assert {"train/acc", "train/digit_acc", "train/loss", "valid/acc", "valid/digit_acc", "test/loss"} <= set(
        result.metrics)
    assert [m.step for m in store.metrics(result.run_id) if m.key == "valid/acc"] == [200, 400, 600]


def test_two_layers_and_as_written_order_run(store_url):
    cfg = resolve("addition", {**QUICK, "model": "gru", "model.nlayers": 2, "model.hidden": 32, "data.reverse": False,
                               "train.max_steps": 20, "train.eval_every": 10})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and 0 <= result.metrics["test/acc"] <= 1


# -- the CLI -----------------------------------------------------------------------------------------

def test_cli_dry_run_of_30_digit_addition(store_url):
    result = CliRunner().invoke(app, ["run", "addition", "data.max_digits=30", "model=gru", "model.nlayers=2",
                                      "--dry-run", "--json", "--store", store_url])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and out["status"] == "dry-run"
    assert out["params"] == sum(p.numel() for p in torch.nn.GRU(20, 128, 2).parameters()) + 128 * 10 + 10


@pytest.mark.parametrize("override, named", [
    ("data.max_digits=0", "data.max_digits"), ("model=transformer", "model"), ("model.hidden=-4", "model.hidden"),
    ("model.nlayers=0", "model.nlayers"), ("data.reverse=maybe", "data.reverse"),
    ("data.operands=digits", "data.operands"),
])
def test_cli_bad_input_is_one_line_exit_2_nothing_stored(override, named, store_url):
    result = CliRunner().invoke(app, ["run", "addition", override, "--store", store_url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.output
    assert open_store(store_url).list_runs() == []


def test_cli_subprocess_bad_input(tmp_path):
    """The installed entry point too: exit 2, one line on stderr, no store written."""
    import subprocess
    import sys

    store = tmp_path / "s.sqlite"
    proc = subprocess.run([sys.executable, "-m", "sweeplab", "run", "addition", "data.max_digits=0",
                           "--store", f"sqlite:///{store}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not store.exists() or open_store(f"sqlite:///{store}").list_runs() == []
