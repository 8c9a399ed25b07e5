"""Every command through the CLI runner, bad input included: one line on stderr, exit 2, no run row."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import pytest
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.data import catalog
from sweeplab.store import open_store

runner = CliRunner()
TINY = ["data=text", "model.emsize=16", "model.nhid=16", "model.nlayers=1", "train.batch_size=4",
        "train.eval_batch_size=4", "train.bptt=10", "train.epochs=2"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def lm_run(tiny_corpus, store_url):
    def make(*extra: str) -> dict:
        result = invoke("run", "lm", *TINY, f"data.path={tiny_corpus}", *extra, "--json", "--store", store_url)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    return make


def test_run_json_contract(lm_run, store_url):
    out = lm_run("--name", "tiny-lstm")
    assert set(out) == {"run_id", "status", "task", "config", "params", "metrics", "ms_per_batch", "device", "store"}
    assert out["status"] == "finished" and out["ms_per_batch"] > 0 and out["metrics"]["test/ppl"] > 1
    assert open_store(store_url).get_run("tiny-lstm").id == out["run_id"]


def test_diverged_run_exits_3_with_json_nulls_for_non_finite_values(tiny_corpus, store_url):
    result = invoke("run", "lm", *TINY, f"data.path={tiny_corpus}", "model=rnn_relu", "optim.lr=1e6", "train.clip=0",
                    "train.log_every=1", "--json", "--store", store_url)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 3 and out["status"] == "diverged"
    assert out["metrics"]["train/loss"] is None  # NaN is not JSON: it is reported as null


def test_dry_run_trains_nothing_and_counts_params(tiny_corpus, store_url):
    result = invoke("run", "lm", *TINY, f"data.path={tiny_corpus}", "--dry-run", "--json", "--store", store_url)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == 0 and out["status"] == "dry-run" and out["run_id"] is None and out["params"] > 0
    assert open_store(store_url).list_runs() == []


def test_wikitext2_dry_run_has_the_textbook_parameter_count(store_url):
    from tests.conftest import real_data

    real_data("wikitext-2")
    result = invoke("run", "lm", "model.emsize=300", "model.nhid=300", "model.nlayers=1", "--dry-run", "--json",
                    "--store", store_url)
    assert json.loads(result.stdout.strip().splitlines()[-1])["params"] == 20_722_478


def test_dump_config_prints_the_resolved_config_and_key():
    result = invoke("run", "lm", "model=gru", "seed=7", "--dump-config")
    out = json.loads(result.stdout)
    assert out["model"]["name"] == "gru" and out["seed"] == 7 and len(out["key"]) == 64


def test_task_help_lists_models_and_keys():
    result = invoke("run", "lm", "--help")
    assert result.exit_code == 0
    for text in ("transformer", "rnn_relu", "wikitext2", "rmsprop", "train.bptt", "model.nhead"):
        assert text in result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "lm", "model.nlayers=two"], "model.nlayers: expected an integer"),
    (["run", "lm", "optim=adamw"], "unknown optimizer 'adamw'"),
    (["run", "lm", "model=transformer", "model.nhead=3"], "must divide model.emsize"),
    (["run", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["run", "lm", "data=text"], "data=text needs data.path"),
    (["run", "lm", "--device", "tpu"], "device: 'tpu' is not accepted"),
    (["run", "lm", "--bogus"], "No such option: --bogus"),
    (["runs", "show", "nope"], "run 'nope' not found"),
    (["runs", "export", "--format", "xml"], "--format: 'xml' is not accepted"),
    (["generate", "nope"], "run 'nope' not found"),
    (["data", "fetch", "imagenet22k"], "unknown dataset 'imagenet22k'"),
])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(args, message, store_url):
    result = invoke(*args, "--store", store_url) if args[0] != "data" else invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    if args[0] != "data":
        assert open_store(store_url).list_runs() == []


def test_missing_data_file_is_named(tiny_corpus, store_url):
    (tiny_corpus / "valid.txt").unlink()
    result = invoke("run", "lm", *TINY, f"data.path={tiny_corpus}", "--store", store_url)
    assert result.exit_code == 2 and "valid.txt" in result.stderr and open_store(store_url).list_runs() == []


def test_runs_list_show_export(lm_run, store_url):
    out = lm_run()
    listing = invoke("runs", "list", "--store", store_url)
    assert out["run_id"] in listing.stdout and "finished" in listing.stdout
    shown = json.loads(invoke("runs", "show", out["run_id"][:6], "--store", store_url).stdout)
    assert shown["config"]["model"]["name"] == "lstm" and "checkpoints/epoch_002.pt" in shown["artifacts"]
    assert shown["env"]["torch"] and shown["metric_rows"] > 0
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "export", "--store", store_url).stdout)))
    assert rows[0]["run_id"] == out["run_id"] and float(rows[0]["test/ppl"]) == pytest.approx(out["metrics"]["test/ppl"])
    metrics = json.loads(invoke("runs", "export", "--format", "json", "--metrics", "--store", store_url).stdout)
    assert {m["split"] for m in metrics} >= {"train", "valid", "test"}


def test_generate_is_seeded(lm_run, store_url):
    run_id = lm_run()["run_id"]
    first = invoke("generate", run_id, "--words", "12", "--seed", "3", "--store", store_url)
    again = invoke("generate", run_id, "--words", "12", "--seed", "3", "--store", store_url)
    other = invoke("generate", run_id, "--words", "12", "--seed", "4", "--temperature", "2", "--store", store_url)
    assert first.exit_code == 0 and first.stdout == again.stdout != other.stdout
    assert len(first.stdout.split()) >= 8  # <eos> become line breaks


def test_attention_writes_heat_maps(lm_run, store_url, tmp_path):
    run_id = lm_run("model=transformer", "model.nhead=2")["run_id"]
    target = tmp_path / "att.png"
    result = invoke("attention", run_id, "--text", "the cat sat on the mat", "--out", target, "--store", store_url)
    assert result.exit_code == 0 and target.stat().st_size > 1000
    lstm = lm_run("model=gru")["run_id"]
    result = invoke("attention", lstm, "--text", "the cat", "--store", store_url)
    assert result.exit_code == 2 and "transformer" in result.stderr


def test_data_list_and_check(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPLAB_DATA", str(tmp_path))
    assert "wikitext2" in invoke("data", "list").stdout
    result = invoke("data", "check", "ptb")
    assert result.exit_code == 2 and "missing" in result.stdout


def test_data_fetch_offline_says_what_to_put_where(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPLAB_DATA", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(catalog.urllib.request, "urlopen", offline)
    result = invoke("data", "fetch", "ptb")
    assert result.exit_code == 2
    assert "put ptb.train.txt, ptb.valid.txt, ptb.test.txt in " + str(tmp_path / "ptb") in result.stderr


def test_data_fetch_unpacks_and_checks_an_archive(monkeypatch, tmp_path):
    """A local archive stands in for the official one: members renamed into place, SHA-256 checked."""
    texts = {name: f"{name} words here\n".encode() for name in ("train", "valid", "test")}
    archive = tmp_path / "wt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in texts.items():
            z.writestr(f"wikitext-2/wiki.{name}.tokens", data)
    source = catalog.SOURCES["wikitext2"]
    fake = catalog.Source(source.name, source.folder,
                          {f"{n}.txt": hashlib.sha256(d).hexdigest() for n, d in texts.items()},
                          [archive.as_uri()], members=source.members)
    monkeypatch.setitem(catalog.SOURCES, "wikitext2", fake)
    monkeypatch.setenv("SWEEPLAB_DATA", str(tmp_path / "root"))
    result = invoke("data", "fetch", "wikitext2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "root" / "wikitext-2" / "valid.txt").read_bytes() == texts["valid"]
    assert invoke("data", "check", "wikitext2").exit_code == 0
    (tmp_path / "root" / "wikitext-2" / "test.txt").write_text("tampered")
    assert "checksum mismatch" in invoke("data", "check", "wikitext2").stdout
