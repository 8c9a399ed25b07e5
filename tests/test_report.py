"""`sweeplab report` from small stores built here: tables (mean ± std (n), reasons in every gap), figures,
artifacts, and an analysis whose sentences follow the numbers. Nothing trains: runs are written with
the store's own API, as the engine writes them."""
from __future__ import annotations

import functools
import math
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.config import run_key
from sweeplab.report.analysis import overfitting_onset
from sweeplab.report.build import build_experiment, write_report
from sweeplab.report.spec import load_target
from sweeplab.store import Metric, Store, open_store
from sweeplab.sweep.expand import load_experiment
from sweeplab.tasks import resolve

SCRIPT_NAME = "<script>alert(1)</script>"

LM_EXPERIMENT = f"""
name: lmtest
title: "LM <b>test</b>"
task: lm
base: {{data: text, model.emsize: 16, model.nhid: 16}}
variants:
  LSTM1: {{model: lstm}}
  GRU1: {{model: gru}}
  RNN1: {{model: rnn_tanh}}
  TF: {{model: transformer, model.nhead: 1}}
  "{SCRIPT_NAME}": {{model: lstm, model.nlayers: 3}}
seeds: 2
columns:
  - {{title: Train PPL, metric: train/ppl}}
  - {{title: Valid PPL, metric: valid/ppl, aggregate: best}}
  - {{title: Test PPL, metric: test/ppl}}
  - {{title: Trainable params, metric: params}}
figures:
  - {{kind: curves, metrics: [train/loss, valid/loss]}}
  - {{kind: text}}
  - {{kind: attention}}
scales:
  quick: {{note: "5 epochs", overrides: {{train.epochs: 5}}}}
"""

PALINDROME_EXPERIMENT = """
name: paltest
title: Palindrome accuracy versus length
task: palindrome
axes: {data.length: [5, 10, 15]}
columns:
  - {title: Test acc, metric: test/acc}
  - {title: Converged at, metric: convergence_step}
figures:
  - {kind: versus, x: data.length, metric: test/acc}
  - {kind: curves, metrics: [valid/acc]}
analysis: {convergence_threshold: 0.9}
"""

ATTENTION_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><script>alert(2)</script>'
                 '<rect width="40" height="40" fill="#3b528b"/></svg>')


# ------------------------------------------------------------------------------------- builders
def write_experiment(folder: Path, text: str, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf8")
    return path


def add_run(store: Store, experiment: Path, cell: str, seed: int = 1111, *, series: dict[str, list[float]],
            status: str = "finished", note: str | None = None, error: str | None = None,
            summary: dict[str, float] | None = None, steps_per_epoch: int = 100, overrides: dict | None = None) -> str:
    """A run of `cell` as the engine stores it: resolved config, split/name rows per epoch, summary, status."""
    exp = _experiment(experiment, experiment.stat().st_mtime_ns)
    layers = dict(exp.rows())[cell]
    scale = exp.scales["quick"].overrides if "quick" in exp.scales else {}
    cfg = resolve(exp.task, exp.base, *layers, {"seed": seed}, scale, overrides or {})
    run_id = store.create_run(key=run_key(cfg), name=f"{cell}-{seed}", task=exp.task, config=cfg.to_dict(), env={},
                              sweep=exp.name, cell=cell, note=note)
    epochs = max((len(v) for k, v in series.items() if not k.startswith("test/")), default=1)
    rows = []
    for key, values in series.items():
        split, name = key.split("/")
        for i, value in enumerate(values, start=1):
            epoch = epochs if split == "test" else i
            rows.append(Metric(epoch * steps_per_epoch, epoch, split, name, value))
    store.log_metrics(run_id, rows)
    store.set_summary(run_id, {"params": 12345.0, **(summary or {})})
    store.update_run(run_id, status=status, error=error, epoch=epochs if status == "finished" else len(
        [v for v in series.get("train/loss", []) if math.isfinite(v)]), step=epochs * steps_per_epoch)
    return run_id


@functools.lru_cache
def _experiment(path: Path, _mtime: int):
    return load_experiment(path)


def lm_series(train: list[float], valid: list[float], test_ppl: float | None) -> dict[str, list[float]]:
    series = {"train/loss": train, "train/ppl": [math.exp(v) for v in train],
              "valid/loss": valid, "valid/ppl": [math.exp(v) for v in valid]}
    if test_ppl is not None:
        series["test/ppl"] = [test_ppl]
    return series


TEST_PPL = {"LSTM1": (120.0, 131.0), "TF": (150.0, 149.0)}


@pytest.fixture(scope="module")
def lm_report(tmp_path_factory: pytest.TempPathFactory):
    """One store with every situation a table meets, and its report (written once for the module)."""
    root = tmp_path_factory.mktemp("lm_report")
    store = open_store(f"sqlite:///{root / 'runs' / 'sweeplab.sqlite'}")
    path = write_experiment(root, LM_EXPERIMENT, "lmtest")
    # LSTM1: two seeds; seed 1111 over-fits from epoch 4 (valid rises for good while train falls)
    add_run(store, path, "LSTM1", 1111, series=lm_series([5.5, 4.8, 4.4, 4.1, 3.9], [5.0, 4.6, 4.5, 4.7, 4.9],
                                                         TEST_PPL["LSTM1"][0]))
    add_run(store, path, "LSTM1", 1112, series=lm_series([5.6, 4.9, 4.5, 4.3, 4.1], [5.1, 4.7, 4.6, 4.5, 4.45],
                                                         TEST_PPL["LSTM1"][1]))
    # GRU1: one seed still running at epoch 2 (of 5), one failed before any metric
    add_run(store, path, "GRU1", 1111, series=lm_series([5.9, 5.2], [5.4, 5.1], None), status="running",
            note="3 of 40 epochs (budget 20m)")
    add_run(store, path, "GRU1", 1112, series={}, status="failed", error="ValueError: boom")
    # RNN1: no run at all. TF: two seeds with artifacts. The script-named row: one seed diverges at epoch 3.
    for seed, test in zip((1111, 1112), TEST_PPL["TF"], strict=True):
        run_id = add_run(store, path, "TF", seed, series=lm_series([5.8, 5.0, 4.7, 4.6, 4.5],
                                                                    [5.2, 4.9, 4.8, 4.75, 4.7], test))
        run_dir = store.run_dir(run_id)
        run_dir.mkdir(parents=True)
        (run_dir / "attention.svg").write_text(ATTENTION_SVG)
        (run_dir / "generated.txt").write_text(f"the cat <unk> & {SCRIPT_NAME} sat\n")
    add_run(store, path, SCRIPT_NAME, 1111, series={"train/loss": [6.0, 5.5, math.nan], "valid/loss": [5.8, 5.6]},
            status="diverged", error="training loss became nan at step 300 (epoch 3)")
    add_run(store, path, SCRIPT_NAME, 1112, series=lm_series([6.0, 5.4, 5.1, 5.0, 4.9], [5.7, 5.3, 5.2, 5.1, 5.0],
                                                             160.0))
    report = build_experiment(load_target(str(path), store), store)
    written = write_report([str(path)], store, root / "out")
    return report, written, store, path


def table_rows(report) -> dict[str, dict[str, str]]:
    header = report.table.header
    return {row[0].text: {header[i]: cell.text for i, cell in enumerate(row)} for row in report.table.rows}


def sentences(report, topic: str | None = None) -> list[str]:
    return [s.text for s in report.analysis if topic is None or s.topic == topic]


# ---------------------------------------------------------------------------------------- tables
def test_table_cells_are_mean_std_n_over_seeds(lm_report):
    report, *_ = lm_report
    rows = table_rows(report)
    assert list(rows) == ["LSTM1", "GRU1", "RNN1", "TF", SCRIPT_NAME]  # the experiment's order
    for cell, values in TEST_PPL.items():
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert rows[cell]["Test PPL"] == f"{mean:.1f} ± {std:.1f} (n=2)"
    assert rows["LSTM1"]["Trainable params"] == "12,345 (n=2)"  # a count: no spread, no decimals
    best_valid = min(math.exp(4.5), math.exp(4.45))  # per run: the best (lowest) valid ppl; then the mean
    valid = statistics.fmean([best_valid, math.exp(4.5)])
    assert rows["LSTM1"]["Valid PPL"].startswith(f"{valid:.2f} ± ")  # 10 <= ppl < 100: two decimals


def test_every_cell_shows_a_value_or_a_reason(lm_report):
    report, written, *_ = lm_report
    rows = table_rows(report)
    assert {k: v for k, v in rows["RNN1"].items() if k not in ("Configuration", "Notes")} == dict.fromkeys(
        ["Train PPL", "Valid PPL", "Test PPL", "Trainable params"], "not run: no stored run")
    assert rows["GRU1"]["Train PPL"].endswith("(n=1 of 2; running)")
    assert rows["GRU1"]["Test PPL"] == "running (epoch 2 of 5 stored); failed: ValueError: boom"
    assert rows[SCRIPT_NAME]["Train PPL"].endswith("(n=1 of 2)")  # the diverged seed gives no final train ppl
    assert "3 of 40 epochs (budget 20m)" in rows["GRU1"]["Notes"]
    assert "seed 1111: diverged at epoch 3" in rows[SCRIPT_NAME]["Notes"]
    cells = TableText.cells(written.pages[0].read_text())
    assert cells and all(text.strip() for text in cells)  # nothing blank in the HTML table either


def test_best_value_of_a_column_is_marked(lm_report):
    report, *_ = lm_report
    column = report.table.header.index("Test PPL")
    best = [row[0].text for row in report.table.rows if row[column].best]
    assert best == ["LSTM1"]
    assert not any(row[report.table.header.index("Trainable params")].best for row in report.table.rows)


# -------------------------------------------------------------------------------------- analysis
def test_analysis_names_the_divergence_with_epoch_and_step(lm_report):
    report, *_ = lm_report
    assert sentences(report, "Divergence") == [f"{SCRIPT_NAME} (seed 1111) diverged at epoch 3, step 300: "
                                               "training loss became nan at step 300 (epoch 3)."]


def test_analysis_finds_the_overfitting_onset(lm_report):
    report, *_ = lm_report
    found = sentences(report, "Over-fitting")
    assert len(found) == 1 and found[0].startswith("LSTM1 (seed 1111) over-fits from epoch 4: valid/loss rises "
                                                   "from 4.5000 (epoch 3) to 4.9000 (epoch 5)")


def test_analysis_says_what_has_not_finished_and_why(lm_report):
    report, *_ = lm_report
    (status,) = sentences(report, "Status")  # one topic, said once
    assert "GRU1 (seed 1111) is still running: epoch 2 of 5 stored." in status
    assert "GRU1 (seed 1112) failed at epoch 0 of 5: ValueError: boom." in status
    assert "GRU1 (seed 1111): 3 of 40 epochs (budget 20m)." in status
    assert "Not run: RNN1 (1 of 5 cells" in status


@pytest.mark.parametrize("ppl_a, ppl_b, ppl_c", [(100.0, 110.0, 150.0), (140.0, 105.5, 120.0)])
def test_best_configuration_sentence_follows_the_numbers(tmp_path, ppl_a, ppl_b, ppl_c):
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    path = write_experiment(tmp_path, LM_EXPERIMENT.replace("seeds: 2", "seeds: 1"), "lmtest")
    values = {"LSTM1": ppl_a, "GRU1": ppl_b, "TF": ppl_c}
    for cell, ppl in values.items():
        add_run(store, path, cell, series=lm_series([5.0, 4.5], [4.9, 4.8], ppl))
    report = build_experiment(load_target(str(path), store), store)
    (best, b), (runner, r), (worst, w) = sorted(values.items(), key=lambda kv: kv[1])
    expected = (f"Best configuration by Test PPL (test/ppl, final; lower is better): {best} with {b:.1f}, "
                f"{r - b:.1f} ({(r - b) / r:.1%}) lower than the runner-up {runner} ({r:.1f}), and {w - b:.1f} "
                f"({(w - b) / w:.1%}) lower than the worst, {worst} ({w:.1f}).")
    assert sentences(report, "Best")[0] == expected


def test_overfitting_onset_needs_the_rise_to_last():
    train = {e: 10.0 - e for e in range(1, 8)}  # falls throughout
    bump = {1: 5.0, 2: 4.8, 3: 4.9, 4: 4.6, 5: 4.5, 6: 4.7, 7: 4.8}  # a bump at 3 that recovers; a rise from 6
    assert overfitting_onset(train, bump) == 6
    assert overfitting_onset(train, {e: 5.0 - 0.1 * e for e in train}) is None  # never rises
    assert overfitting_onset(train, {**{e: 5.0 - 0.1 * e for e in train}, 7: 9.0}) is None  # only at the end
    rising_train = {e: 1.0 + e for e in train}  # both rise: not over-fitting
    assert overfitting_onset(rising_train, bump) is None


def test_convergence_the_experiments_threshold_wins_in_table_and_analysis(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    path = write_experiment(tmp_path, PALINDROME_EXPERIMENT, "paltest")
    # the task's summary says step 1,200 (its own train.converged_at); the file's 0.9 is held from step 200
    add_run(store, path, "data.length=5", series={"valid/acc": [0.6, 1.0, 1.0], "test/acc": [1.0]},
            summary={"converged": 1.0, "convergence_step": 1200.0})
    add_run(store, path, "data.length=10", series={"valid/acc": [0.3, 0.5, 0.6], "test/acc": [0.55]},
            summary={"converged": 0.0})
    # the first evaluation from which valid/acc stays >= 0.9 is the 4th
    add_run(store, path, "data.length=15", series={"valid/acc": [0.5, 0.95, 0.8, 0.96, 0.97], "test/acc": [0.2]})
    written = write_report([str(path)], store, tmp_path / "out")
    report = build_experiment(load_target(str(path), store), store)
    rows = table_rows(report)
    assert list(rows) == ["5", "10", "15"] and report.table.header[0] == "length"  # a 1-axis grid, headed by the key's last part
    assert rows["5"]["Converged at"] == "200" and rows["15"]["Converged at"] == "400"
    assert rows["10"]["Converged at"] == "not converged by step 300 of 10,000 (valid/acc best 0.6000, below 0.9)"
    assert sentences(report, "Convergence") == [
        "Fastest to converge: length=5 (step 200); slowest: length=15 (step 400), among the 2 "
        "configurations whose finished runs converged."]
    assert not report.pivots  # one axis: the table already is rows × metrics
    names = [p.name for p in written.figures]  # named in the captions' words, each drawn one as SVG, PNG and PDF
    assert names == [f"paltest-0{i}-{words}.{kind}" for i, words in ((1, "test-acc-vs-length"), (2, "training-curves"))
                     for kind in ("svg", "png", "pdf")]
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in written.figures if p.suffix == ".pdf")
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written.figures if p.suffix == ".png")
    assert written.pages[0].read_text().count("<svg") == 2


# ---------------------------------------------------------------------------- html and markdown
def test_user_text_is_escaped_everywhere(lm_report):
    _, written, *_ = lm_report
    html, markdown = (p.read_text() for p in written.pages)
    outside_code = re.sub(r"^(`{3,})text\n.*?^\1$", "", markdown, flags=re.S | re.M)  # fenced code stays literal
    assert "```text\nthe cat <unk> & <script>" in markdown and "<script" not in outside_code
    svgs = [p.read_text() for p in written.figures if p.name.endswith("curves.svg")]
    for text in (html, *svgs):
        assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "LM &lt;b&gt;test&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "the cat &lt;unk&gt; &amp; &lt;script&gt;" in html  # generated text, too


def test_artifacts_and_text_are_embedded(lm_report):
    report, written, *_ = lm_report
    html = written.pages[0].read_text()
    assert html.count('src="data:image/svg+xml;base64,') == 1  # the TF cell's attention map (first seed)
    copied = (written.pages[0].parent / "figures" / "lmtest-02-attention-tf.svg").read_text()  # cleaned of its script
    assert '<rect width="40" height="40" fill="#3b528b" />' in copied and "<script" not in copied
    assert "TF (seed 1111)" in html and "<h4>TF (seed 1111)</h4>" in html
    notes = [b.note for b in report.blocks if type(b).__name__ == "NoteBlock"]
    assert any("GRU1: running (epoch 2 of 5 stored)" in n for n in notes)  # why GRU1 shows no text


def test_html_is_self_contained_and_markdown_links_every_figure(lm_report):
    _, written, *_ = lm_report
    html, markdown = (p.read_text() for p in written.pages)
    for remote in ('src="http', "href=\"http", "<link", "@import", "url(http"):
        assert remote not in html
    assert "Content-Security-Policy" in html
    for figure in written.figures:  # a drawn figure's PNG and PDF lie beside the SVG that is linked
        linked = figure.with_suffix(".svg") if figure.suffix in (".png", ".pdf") else figure
        assert f"](figures/{linked.name})" in markdown
    assert markdown.count("| LSTM1 |") == 2 and "| **" in markdown  # the results table and the models table


def test_report_by_sweep_name_reads_the_stored_experiment(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    path = write_experiment(tmp_path, LM_EXPERIMENT, "lmtest")
    swept = add_run(store, path, "LSTM1", series=lm_series([5.0, 4.5], [4.9, 4.8], 99.0), note="5 epochs")
    # a later run of the same cell and seed, from another budget: the stored sweep asked for the first one
    add_run(store, path, "LSTM1", series=lm_series([5.0], [4.9], 140.0), overrides={"train.epochs": 1})
    add_run(store, path, "GRU1", series=lm_series([5.1], [5.0], 130.0), status="imported", note="imported from gru.log")
    add_run(store, path, "TF", series=lm_series([5.1], [5.0], 150.0), overrides={"train.epochs": 1})  # not swept
    experiment = load_experiment(path)
    cells = [{"label": "LSTM1", "seed": 1111, "key": store.get_run(swept).key, "note": "5 epochs"}]
    store.save_sweep("lmtest", "lm", {**experiment.model_dump(mode="json"), "scale": "quick", "cells": cells}, "quick")
    path.unlink()  # the store alone is enough
    written = write_report(["lmtest"], store, tmp_path / "out")
    html = written.pages[0].read_text()
    assert "LM &lt;b&gt;test&lt;/b&gt; — scale quick: 5 epochs" in html
    assert '<td class="best">99.00 (n=1 of 2)</td>' in html  # the swept run, not the newer one (140.0)
    assert html.count("not run: no stored run") == 2 * 4  # RNN1 and the script row: every column
    assert '<td class="notes">1 of 2 seeds not run; seed 1111: imported from gru.log</td>' in html
    assert html.count("from an earlier sweep") == 2  # TF's run only (an import is no stale stand-in): table, analysis


# ------------------------------------------------------------------------------------------- cli
def test_report_command_writes_the_files_and_rejects_bad_targets(lm_report, tmp_path):
    _, _, store, path = lm_report
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["report", str(path), "--store", store.url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file() and (out / "report.md").is_file() and any((out / "figures").iterdir())
    for bad in ("nosuch_sweep", str(tmp_path / "missing.yaml")):
        result = runner.invoke(app, ["report", bad, "--store", store.url, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert result.stderr.startswith("error: report:")
    assert not (tmp_path / "bad").exists()


class TableText(HTMLParser):
    """The text of every <td>/<th> of the results tables."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.depth = 0

    @classmethod
    def cells(cls, html: str) -> list[str]:
        parser = cls()
        parser.feed(html)
        return parser.texts

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("td", "th"):
            self.texts.append("")
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.texts[-1] += data
