"""Experiment files: validation (one line naming file and key, exit 2, nothing stored), expansion, run keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.sweep_helpers import TINY_BASE, invoke, write_experiment

from sweeplab.config import run_key
from sweeplab.errors import UserError
from sweeplab.store import open_store
from sweeplab.sweep.expand import expand, load_experiment, pick_scale
from sweeplab.tasks import resolve

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "experiments").glob("*.yaml"))

# (what the file holds instead of the good one, words the error line must contain)
BAD_FILES = [
    ({"task": "lmx"}, ["task", "'lmx'", "accepted", "lm"]),
    ({"colums": []}, ["unknown key 'colums'", "accepted", "columns"]),
    ({"columns": []}, ["columns"]),
    ({"columns": [{"title": "x", "metric": "valid/ppl", "aggregate": "avg"}]}, ["columns[0].aggregate", "'avg'",
                                                                                 "final"]),
    ({"columns": [{"title": "x", "metric": "valid/ppl", "aggregate": "at-epoch"}]}, ["columns[0]", "epoch: N"]),
    ({"columns": [{"title": "x", "metric": "valid ppl"}]}, ["columns[0].metric", "split/name"]),
    ({"variants": {"LSTM": {"model.nlayers": "two"}}}, ["cell LSTM", "model.nlayers", "'two'"]),
    ({"variants": {"LSTM": {"model.nlayer": 2}}}, ["cell LSTM", "model.nlayer"]),
    ({"variants": {"LSTM": {"model": "lstmm"}}}, ["cell LSTM", "model", "'lstmm'", "gru"]),
    ({"variants": {}, "axes": {}}, ["variants", "axes"]),
    ({"variants": {"A,B": {}}}, ["variants", "'A,B'"]),
    ({"axes": {"model.nhid": []}}, ["axes", "model.nhid", "no values"]),
    ({"axes": {"model.nhid": [[16, 32]]}}, ["axes.model.nhid[0]", "single value"]),
    ({"base": {**TINY_BASE, "seed": 3}}, ["base", "seeds"]),
    ({"seeds": 0}, ["seeds", "0"]),
    ({"seeds": [1, 1]}, ["seeds", "distinct"]),
    ({"scales": {"quick": {"nite": "x"}}}, ["unknown key 'scales.quick.nite'", "note, overrides"]),
    ({"scales": {"quick": {"overrides": {"train.epochs": 0}}}}, ["scale quick", "train.epochs"]),
    ({"figures": [{"kind": "curves"}]}, ["figures[0]", "metrics"]),
    ({"figures": [{"kind": "pie"}]}, ["figures[0].kind", "'pie'", "versus"]),
    ({"figures": [{"kind": "versus", "x": "model.nhidd", "metric": "valid/ppl"}]}, ["figures[0].x", "model.nhidd",
                                                                                   "model.nhid"]),
    ({"figures": [{"kind": "text", "x": "model.nhid"}]}, ["figures[0]", "takes no", "`x`"]),
    ({"variants": {"A": {"model": "lstm"}, "B": {"model": "lstm"}}}, ["cells A and B", "same config"]),
    ({"analysis": {"threshold": 0.9}}, ["unknown key 'analysis.threshold'", "convergence_threshold"]),
]


@pytest.mark.parametrize("change, words", BAD_FILES, ids=[str(i) for i in range(len(BAD_FILES))])
def test_a_bad_experiment_file_is_one_line_naming_file_and_key(tmp_path, tiny_corpus, store_url, change, words):
    path = write_experiment(tmp_path, tiny_corpus, **change)
    result = invoke("sweep", path, "--store", store_url)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    store = open_store(store_url)
    assert store.list_runs() == [] and store.list_sweeps() == []


@pytest.mark.parametrize("text, words", [
    ("task: lm\nbase: {a: 1\n", ["not valid YAML", "line"]),
    ("- a\n- b\n", ["YAML mapping"]),
    ("task: lm\ntask: lm\n", ["'task' appears twice"]),
])
def test_unreadable_yaml_is_one_line(tmp_path, store_url, text, words):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = invoke("sweep", path, "--store", store_url)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert all(w in result.stderr for w in words), result.stderr


def test_missing_file_and_unknown_scale(tmp_path, tiny_corpus, store_url):
    result = invoke("sweep", tmp_path / "nope.yaml", "--store", store_url)
    assert result.exit_code == 2 and "no such experiment file" in result.stderr
    path = write_experiment(tmp_path, tiny_corpus)
    result = invoke("sweep", path, "--scale", "huge", "--store", store_url)
    assert result.exit_code == 2 and "'huge'" in result.stderr and "quick, full" in result.stderr


def test_labels_for_variants_grids_and_both(tmp_path, tiny_corpus):
    variants = load_experiment(write_experiment(tmp_path, tiny_corpus, name="v"))
    assert variants.cell_labels() == ["LSTM", "GRU"]
    grid = load_experiment(write_experiment(tmp_path, tiny_corpus, name="g", variants={},
                                            axes={"model.nhid": [8, 16], "train.clip": [0.0, 0.25]}))
    assert grid.cell_labels() == ["model.nhid=8,train.clip=0.0", "model.nhid=8,train.clip=0.25",
                                  "model.nhid=16,train.clip=0.0", "model.nhid=16,train.clip=0.25"]
    both = load_experiment(write_experiment(tmp_path, tiny_corpus, name="b", axes={"model.tied": [True, False]}))
    assert both.cell_labels() == ["LSTM,model.tied=true", "LSTM,model.tied=false", "GRU,model.tied=true",
                                  "GRU,model.tied=false"]


def test_seeds_count_or_list(tmp_path, tiny_corpus):
    assert load_experiment(write_experiment(tmp_path, tiny_corpus, seeds=3)).seed_list() == [1111, 1112, 1113]
    experiment = load_experiment(write_experiment(tmp_path, tiny_corpus, seeds=[7, 3]))
    cells = expand(experiment, "quick")
    assert [(c.label, c.seed) for c in cells] == [("LSTM", 7), ("LSTM", 3), ("GRU", 7), ("GRU", 3)]
    assert [c.cfg.seed for c in cells] == [7, 3, 7, 3]


def test_resolution_order_and_run_keys(tmp_path, tiny_corpus):
    """defaults < base < variant < axis < scale < command line; a cell's key is the key of the same `run`."""
    path = write_experiment(tmp_path, tiny_corpus, variants={"A": {"model.nhid": 8, "train.epochs": 5}},
                            axes={"model.emsize": [8, 12]},
                            scales={"quick": {"overrides": {"train.epochs": 1, "model.dropout": 0.0}}})
    experiment = load_experiment(path)
    cells = expand(experiment, pick_scale(experiment, None, str(path)), {"model.dropout": 0.5})
    first = cells[0].cfg
    assert (first.model.nhid, first.model.emsize, first.train.epochs, first.model.dropout) == (8, 8, 1, 0.5)
    assert first.train.bptt == TINY_BASE["train.bptt"] and first.optim.lr == 20.0  # base, task default
    same_run = resolve("lm", {**TINY_BASE, "data.path": str(tiny_corpus), "model.nhid": 8, "model.emsize": 8,
                              "train.epochs": 1, "model.dropout": 0.5})
    assert cells[0].key == run_key(same_run)  # a sweep never retrains what `sweeplab run` already did
    assert len({c.key for c in cells}) == len(cells) == 2
    assert [c.key for c in expand(load_experiment(path), "quick", {"model.dropout": 0.5})] == [c.key for c in cells]


def test_cells_of_a_scale_differ_from_another_scale(tmp_path, tiny_corpus):
    experiment = load_experiment(write_experiment(tmp_path, tiny_corpus))
    quick, full = expand(experiment, "quick"), expand(experiment, "full")
    assert [c.note for c in quick] == ["2 epochs"] * 2 and [c.cfg.train.epochs for c in full] == [3, 3]
    assert not {c.key for c in quick} & {c.key for c in full}


def test_seed_override_is_refused(tmp_path, tiny_corpus, store_url):
    result = invoke("sweep", write_experiment(tmp_path, tiny_corpus), "seed=3", "--store", store_url)
    assert result.exit_code == 2 and "seeds" in result.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_experiment_file_loads(path):
    """Every file in experiments/ validates, with a quick and a full scale, each saying what it reduces."""
    try:
        experiment = load_experiment(path)
    except UserError as exc:
        if "unknown task" in str(exc):
            pytest.skip(f"task not installed yet: {exc}")
        raise
    assert set(experiment.scales) == {"quick", "full"} and experiment.scales["quick"].note
    assert experiment.name == path.stem and experiment.title
    assert yaml.safe_load(path.read_text())["name"] == path.stem


def test_environment_variables_in_a_data_path(tmp_path, tiny_corpus, monkeypatch):
    """`data.path: $SWEEPLAB_DATA/...` serves every machine: the config (and so the run key) keeps the variable,
    and the data layer expands it when it opens the folder."""
    from sweeplab.data.paths import dataset_dir

    monkeypatch.setenv("TINY_CORPUS_DIR", str(tiny_corpus.parent))
    path = write_experiment(tmp_path, tiny_corpus, base={**TINY_BASE, "data.path": "${TINY_CORPUS_DIR}/corpus"})
    cells = expand(load_experiment(path), "quick")
    assert [c.cfg.data.path for c in cells] == ["${TINY_CORPUS_DIR}/corpus"] * 2
    assert dataset_dir(cells[0].cfg.data.path, "", "text") == tiny_corpus
