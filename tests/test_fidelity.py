"""The fidelity benchmark's machinery in seconds: every check builds its full-scale config, and a few
checks train a few steps and come back with a number, a reference and a verdict."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py"
spec = importlib.util.spec_from_file_location("fidelity", PATH)
fidelity = importlib.util.module_from_spec(spec)
sys.modules["fidelity"] = fidelity  # its dataclasses look their module up
spec.loader.exec_module(fidelity)


@pytest.mark.parametrize("check", fidelity.CHECKS, ids=[c.name for c in fidelity.CHECKS])
def test_every_check_resolves_its_full_scale_config(check):
    cfg = check.config(smoke=False)
    assert cfg.task in fidelity.SMOKE
    if check.name.startswith("PTB LSTM"):  # word_language_model's default recipe
        assert (cfg.model.emsize, cfg.model.nhid, cfg.model.nlayers, cfg.train.epochs) == (200, 200, 2, 6)
    if check.name.startswith("palindrome"):
        assert cfg.train.max_steps == 10_000


def test_the_passing_rules_are_the_stated_tolerances():
    ptb = next(c for c in fidelity.CHECKS if c.name == "PTB LSTM untied")
    assert ptb.passes(117.61 * 1.049) and not ptb.passes(117.61 * 1.051)
    long = next(c for c in fidelity.CHECKS if c.name == "palindrome reads 20")
    assert long.passes(0.35) and not long.passes(1.0)


@pytest.mark.parametrize("check", [c for c in fidelity.CHECKS if c.name.startswith("palindrome")],
                         ids=lambda c: c.name)
def test_a_palindrome_model_at_chance_fails(check):
    """One of 10 digits is right by chance (0.10): no palindrome verdict may pass there, not even "length 20
    does not converge", while the report's own figure passes its check."""
    assert not check.passes(fidelity.DIGIT_CHANCE) and not check.passes(0.15)
    assert check.passes(check.reference)


def test_smoke_run_gives_ours_reference_and_verdict(tmp_path, capsys, one_thread):
    store = f"sqlite:///{tmp_path / 'fidelity.sqlite'}"
    assert fidelity.main(["--smoke", "--store", store, "--only", "addition RNN lr 1e-4", "palindrome reads 5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["check"] for r in rows] == ["palindrome reads 5", "addition RNN lr 1e-4"]
    for row in rows:
        assert row["status"] == "finished" and 0 <= row["ours"] <= 1 and row["verdict"] in ("pass", "FAIL")
        assert row["source"].startswith("course report")
