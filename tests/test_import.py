"""`sweeplab import`: pytorch/examples logs become runs with status `imported` and their provenance."""
from __future__ import annotations

import math

import pytest
from tests.sweep_helpers import invoke

from sweeplab.store import open_store

# word_language_model's main.py output, two epochs of an LSTM (numbers as it prints them)
LM_LOG = """\
Namespace(data='./data/wikitext-2', model='LSTM', emsize=200, nhid=200, nlayers=2, lr=20, clip=0.25, epochs=2)
| epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.67 | loss  6.98 | ppl  1078.32
| epoch   1 |   400/ 2983 batches | lr 20.00 | ms/batch 44.33 | loss  6.40 | ppl   601.85
-----------------------------------------------------------------------------------------
| end of epoch   1 | time: 95.42s | valid loss  5.54 | valid ppl   254.86
-----------------------------------------------------------------------------------------
| epoch   2 |   200/ 2983 batches | lr 20.00 | ms/batch 45.01 | loss  5.81 | ppl   333.62
| epoch   2 |   400/ 2983 batches | lr 20.00 | ms/batch 44.99 | loss  5.71 | ppl   301.87
-----------------------------------------------------------------------------------------
| end of epoch   2 | time: 94.10s | valid loss  5.61 | valid ppl   273.14
-----------------------------------------------------------------------------------------
=========================================================================================
| End of training | test loss  4.97 | test ppl   144.54
=========================================================================================
"""


def _progress(prefix: str, time: tuple, loss: tuple, acc1: tuple, acc5: tuple) -> str:
    """One of imagenet's ProgressMeter lines: `Epoch: [0][ 10/5005]\tTime  0.210 ( 0.250)\t...` (value (average))."""
    meters = [f"Time {time[0]:6.3f} ({time[1]:6.3f})", "Data  0.001 ( 0.010)", f"Loss {loss[0]:.4e} ({loss[1]:.4e})",
              f"Acc@1 {acc1[0]:6.2f} ({acc1[1]:6.2f})", f"Acc@5 {acc5[0]:6.2f} ({acc5[1]:6.2f})"]
    return "\t".join([prefix, *meters])


# imagenet's main.py output: progress lines, then the validation summary, once per epoch
IMAGE_LOG = "\n".join([
    "=> creating model 'resnet18'",
    _progress("Epoch: [0][   0/5005]", (4.1, 4.1), (6.91, 6.91), (0.0, 0.0), (0.78, 0.78)),
    _progress("Epoch: [0][5000/5005]", (0.21, 0.25), (3.1, 4.2), (35.0, 20.5), (60.0, 42.25)),
    _progress("Test: [ 0/196]", (1.0, 1.0), (2.5, 2.5), (45.0, 45.0), (70.0, 70.0)),
    " * Acc@1 40.123 Acc@5 66.456",
    _progress("Epoch: [1][5000/5005]", (0.2, 0.24), (2.5, 2.9), (45.0, 38.0), (70.0, 64.0)),
    " *   Acc@1 52.500 Acc@5 77.250",
]) + "\n"


def test_a_word_language_model_log_becomes_an_imported_run(tmp_path, store_url):
    log = tmp_path / "lstm_wt2.log"
    log.write_text(LM_LOG)
    result = invoke("import", log, "--task", "lm", "--name", "wlm-lstm", "model=lstm", "model.nlayers=2",
                    "--store", store_url)
    assert result.exit_code == 0, result.output
    store = open_store(store_url)
    run = store.get_run("wlm-lstm")
    assert (run.status, run.note, run.task, run.epoch) == ("imported", "imported from lstm_wt2.log", "lm", 2)
    assert run.config["model"]["name"] == "lstm" and run.config["model"]["nlayers"] == 2
    series = {}
    for m in store.metrics(run.id):
        series.setdefault(m.key, []).append((m.epoch, m.step, m.value))
    assert series["valid/ppl"] == [(1, 2983, 254.86), (2, 5966, 273.14)]
    assert series["test/ppl"] == [(2, 5966, 144.54)] and series["test/loss"][0][2] == 4.97
    assert [s for _, s, _ in series["step/loss"]] == [200, 400, 3183, 3383]
    assert series["train/loss"][0][2] == pytest.approx((6.98 + 6.40) / 2)  # the epoch's logged intervals
    assert series["train/ppl"][1][2] == pytest.approx(math.exp((5.81 + 5.71) / 2))
    assert series["train/ms_per_batch"][0][2] == pytest.approx((45.67 + 44.33) / 2)
    assert series["train/epoch_time_s"][1][2] == 94.10
    summary = store.summary(run.id)
    assert summary["test/ppl"] == 144.54 and summary["best_epoch"] == 1 and summary["epochs"] == 2


def test_an_imagenet_log_becomes_an_imported_run_in_a_sweep_cell(tmp_path, store_url):
    log = tmp_path / "resnet18.log"
    log.write_text(IMAGE_LOG)
    result = invoke("import", log, "--task", "image", "--name", "rn18", "--sweep", "tinyimagenet", "--cell",
                    "resnet18", "--store", store_url)
    assert result.exit_code == 0, result.output
    store = open_store(store_url)
    run = store.get_run("rn18")
    assert (run.status, run.sweep, run.cell, run.epoch) == ("imported", "tinyimagenet", "resnet18", 2)
    series = {}
    for m in store.metrics(run.id):
        series.setdefault(m.key, []).append(m.value)
    assert series["test/acc1"] == pytest.approx([0.40123, 0.525]) and series["test/acc5"][1] == pytest.approx(0.7725)
    assert series["train/acc1"] == pytest.approx([0.205, 0.38]) and series["train/loss"] == pytest.approx([4.2, 2.9])
    assert series["train/ms_per_batch"] == pytest.approx([250, 240])
    assert store.summary(run.id)["best_epoch"] == 2


def test_the_same_log_twice_is_one_run(tmp_path, store_url):
    log = tmp_path / "a.log"
    log.write_text(LM_LOG)
    first = invoke("import", log, "--task", "lm", "--name", "a", "--store", store_url)
    second = invoke("import", log, "--task", "lm", "--name", "a", "--store", store_url)
    assert first.exit_code == second.exit_code == 0 and "already imported" in second.stdout
    assert len(open_store(store_url).list_runs()) == 1


@pytest.mark.parametrize("content, task, words", [
    (None, "lm", ["no such log file"]),
    (b"\x00\x01binary\x00", "lm", ["not a text log"]),
    (b"\xff\xfe bad utf8", "lm", ["not a UTF-8 text log"]),
    (b"loss went down, trust me\n", "lm", ["no word_language_model lines"]),
    (LM_LOG.encode(), "image", ["no imagenet summary lines"]),
    (LM_LOG.encode(), "audio", ["--task", "'audio'", "lm, image"]),
])
def test_an_unreadable_log_is_one_line_and_nothing_stored(tmp_path, store_url, content, task, words):
    log = tmp_path / "run.log"
    if content is not None:
        log.write_bytes(content)
    result = invoke("import", log, "--task", task, "--name", "x", "--store", store_url)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(w in lines[0] for w in words), lines[0]
    assert open_store(store_url).list_runs() == []


def test_a_bad_config_override_is_refused(tmp_path, store_url):
    log = tmp_path / "a.log"
    log.write_text(LM_LOG)
    result = invoke("import", log, "--task", "lm", "--name", "a", "model.nlayers=two", "--store", store_url)
    assert result.exit_code == 2 and "model.nlayers" in result.stderr
    assert open_store(store_url).list_runs() == []
