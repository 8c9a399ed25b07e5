"""The report's answers, facts, pivot tables, figures and setup, from stores built so that a careless
version would lie: an unfinished run that looks best, a run stuck at 50% that "settles" first, a task
summary that disagrees with the experiment's threshold, a final accuracy that looks converged."""
from __future__ import annotations

import re

from sweeplab.report.build import build_experiment, write_report
from sweeplab.report.spec import load_target
from sweeplab.store import Metric, open_store
from test_report import add_run, lm_series, write_experiment

LM = """
name: lmq
task: lm
base: {data: text, model.emsize: 16, model.nhid: 16}
variants:
  LSTM1: {model: lstm, model.nlayers: 1}
  LSTM2: {model: lstm, model.nlayers: 2}
  GRU1: {model: gru}
  TF: {model: transformer, model.nhead: 1}
seeds: SEEDS
columns:
  - {title: Test PPL, metric: test/ppl}
  - {title: Trainable params, metric: params}
references:
  - {row: LSTM1, column: Test PPL, value: 120.94, source: "course report 000"}
  - {row: TF, column: Test PPL, value: null, source: "course report 000"}
questions:
  - {ask: "Does depth help?", compare: [LSTM1, LSTM2, GRU1]}
  - {ask: "LSTM or GRU?", pair: [LSTM1, GRU1]}
  - {ask: "Transformer or LSTM?", pair: [TF, LSTM1]}
"""

GRID = """
name: gridq
task: addition
variants: {VARIANTS}
axes: {data.max_digits: [5, 10, 20]}
columns:
  - {title: Test exact match, metric: test/acc}
figures:
  - {kind: curves, metrics: [valid/acc, valid/digit_acc]}
  - {kind: versus, x: data.max_digits, metric: test/acc}
questions:
  - {ask: "Which cell adds 20-digit numbers?", compare: [RNN, GRU], at: {data.max_digits: 20}}
  - {ask: "Do more digits make it harder?", versus: data.max_digits, metric: test/acc, reach: 0.9}
"""

TOY = """
name: toyq
task: toy2d
variants: {numpy: {model: mlp_numpy}, torch: {model: mlp}}
columns: [{title: Test acc, metric: test/acc}, {title: Convergence epoch, metric: convergence_epoch}]
"""


def store_at(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 'runs' / 's.sqlite'}")


def report_of(path, store):
    return build_experiment(load_target(str(path), store), store)


def answers(report) -> dict[str, str]:
    return {a.ask: a.text for a in report.answers}


def facts(report, topic: str) -> list[str]:
    return [s.text for s in report.analysis if s.topic == topic]


# ------------------------------------------------------------------------------------- answers
def test_compare_ranks_finished_runs_only_and_names_the_rest(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "1"), "lmq")
    add_run(store, path, "LSTM1", series=lm_series([5.0, 4.5], [4.9, 4.8], 120.0))
    add_run(store, path, "LSTM2", series=lm_series([5.0, 4.4], [4.8, 4.7], 110.0))
    # GRU1 is still running with a better (partial) number: it must not win
    add_run(store, path, "GRU1", series=lm_series([5.0], [4.6], 90.0), status="running")
    report = report_of(path, store)
    assert answers(report)["Does depth help?"] == (
        "LSTM2 has the lowest Test PPL: 110.0, 10.0 (8.3%) lower than the runner-up LSTM1 (120.0). "
        "Left out (no finished value): GRU1 (running (epoch 1 of 40 stored))."
    )
    assert answers(report)["LSTM or GRU?"].startswith("Not answered yet: no grid point or seed where both LSTM1 "
                                                       "and GRU1 have a finished Test PPL.")
    assert not report.answers[1].answered
    assert report.summary_line().startswith("Does depth help? LSTM2 has the lowest Test PPL: 110.0, 10.0 (8.3%) "
                                            "lower than the runner-up LSTM1 (120.0).")
    assert "2 of 4 cells finished, 1 running, 1 not run" in report.summary_line()


def test_pair_over_seeds_is_paired_and_weighed_against_the_spread(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "3"), "lmq")
    for seed, (lstm, gru) in zip((1111, 1112, 1113), ((120.0, 125.0), (130.0, 134.0), (110.0, 116.0)), strict=True):
        add_run(store, path, "LSTM1", seed, series=lm_series([5.0], [4.9], lstm))
        add_run(store, path, "GRU1", seed, series=lm_series([5.0], [4.9], gru))
    text = answers(report_of(path, store))["LSTM or GRU?"]
    # differences -5, -4, -6: mean -5.000 ± 1.000, lower in 3 of 3 seeds, larger than its spread
    assert text.startswith("LSTM1 has a lower Test PPL than GRU1 in 3 of 3 matched seeds (on average 120.0 against "
                           "125.0, 5.0 (4.0%) lower).")
    assert "The mean paired difference, -5.0 ± 1.0 over 3 matched seeds, is larger than its spread." in text


def test_compare_with_seeds_says_whether_the_gap_exceeds_the_spread(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "2"), "lmq")
    for seed, (one, two) in zip((1111, 1112), ((120.0, 100.0), (140.0, 130.0)), strict=True):
        add_run(store, path, "LSTM1", seed, series=lm_series([5.0], [4.9], one))
        add_run(store, path, "LSTM2", seed, series=lm_series([5.0], [4.9], two))
    text = answers(report_of(path, store))["Does depth help?"]
    assert text.startswith("LSTM2 has the lowest Test PPL: 115.0 ± 21.2 (n=2), 15.0 (11.5%) lower than the "
                           "runner-up LSTM1 (130.0 ± 14.1 (n=2)).")
    assert "The gap is not larger than the seed-to-seed spread (std 21.2 + 14.1)." in text


def test_versus_with_reach_and_compare_at_a_grid_point(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, GRID.replace("{VARIANTS}", "{RNN: {model: rnn}, GRU: {model: gru}}"), "gridq")
    accs = {"RNN": (0.99, 0.95, 0.40), "GRU": (1.0, 0.97, 0.93)}
    for variant, values in accs.items():
        for digits, acc in zip((5, 10, 20), values, strict=True):
            add_run(store, path, f"{variant},data.max_digits={digits}", series={"valid/acc": [acc], "test/acc": [acc]})
    report = report_of(path, store)
    assert answers(report)["Which cell adds 20-digit numbers?"] == (
        "GRU has the highest Test exact match at max_digits=20: 0.9300, 0.5300 (132.5%) higher than the "
        "runner-up RNN (0.4000).")
    assert answers(report)["Do more digits make it harder?"] == (
        "Test exact match along max_digits: for RNN it is ≥ 0.9 up to max_digits=10, not from max_digits=20 on; "
        "for GRU it is ≥ 0.9 at every max_digits up to 20. The numbers are in the table.")


# --------------------------------------------------------------------------------- per-run facts
def test_a_run_stuck_at_half_is_never_fastest_to_converge(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, TOY, "toyq")
    # toy2d's summary: the first epoch within 0.01 of the run's own best, so a stuck run "settles" at epoch 1
    for cell, accs, settled in (("numpy", [0.5, 0.5, 0.5], 1.0), ("torch", [0.6, 0.9, 1.0], 3.0)):
        run_id = add_run(store, path, cell, series={"train/loss": [0.7, 0.6, 0.5]},
                         summary={"convergence_epoch": settled, "best_test_acc": max(accs)})
        store.log_metrics(run_id, [Metric(e * 100, e, "test", "acc", v) for e, v in enumerate(accs, start=1)])
    report = report_of(path, store)
    assert not any("Fastest" in s for s in facts(report, "Convergence"))
    rows = {row[0].text: row[2].text for row in report.table.rows}
    assert rows["numpy"].startswith("no convergence threshold set (settles at epoch 1")
    # with a threshold the stuck run does not converge at all, and the other one does
    path.write_text(TOY + "analysis: {convergence_threshold: 0.95}\n")
    report = report_of(path, store)
    rows = {row[0].text: row[2].text for row in report.table.rows}
    assert rows == {"numpy": "not converged by epoch 3 of 100 (test/acc best 0.5000, below 0.95)", "torch": "3"}


def test_not_converged_beside_a_perfect_test_accuracy_says_why(tmp_path):
    store = store_at(tmp_path)
    text = GRID.replace("{VARIANTS}", "{RNN: {model: rnn}}")
    text = text[:text.index("questions:")].replace("columns:\n", "columns:\n  - {title: Converged at, metric: "
                                                                   "convergence_step}\n")
    path = write_experiment(tmp_path, text + "analysis: {convergence_threshold: 0.99}\n", "gridq")
    add_run(store, path, "RNN,data.max_digits=5", series={"valid/acc": [0.5, 1.0, 0.97], "test/acc": [1.0]},
            summary={"converged": 0.0})
    report = report_of(path, store)
    row = next(r for r in report.table.rows if r[0].text == "RNN, max_digits=5")
    assert row[1].text.endswith("(valid/acc reached 1.0000 but fell to 0.9700; it must stay ≥ 0.99)")
    assert row[2].text == "1.0000"


def test_best_configuration_and_divergence_count_only_ended_runs(tmp_path):
    store = store_at(tmp_path)
    text = "\n".join(line for line in LM.replace("SEEDS", "1").splitlines() if not line.startswith("  - {ask"))
    path = write_experiment(tmp_path, text.replace("questions:", ""), "lmq")
    add_run(store, path, "LSTM1", series=lm_series([5.0, 4.5], [4.9, 4.8], 120.0))
    add_run(store, path, "LSTM2", series=lm_series([5.0, 4.4], [4.8, 4.7], 130.0))
    add_run(store, path, "GRU1", series=lm_series([5.0], [4.6], 50.0), status="interrupted")
    report = report_of(path, store)
    best = facts(report, "Best")[0]
    assert best.startswith("Best configuration by Test PPL (test/ppl, final; lower is better): LSTM1 with 120.0")
    assert "GRU1" not in best
    assert facts(report, "Divergence") == ["No run diverged: all 2 ended runs kept a finite training loss; 1 more "
                                           "has not ended."]


# ------------------------------------------------------------------------------- tables, figures
def test_references_stand_beside_ours(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "1"), "lmq")
    add_run(store, path, "LSTM1", series=lm_series([5.0], [4.9], 118.0))
    add_run(store, path, "TF", series=lm_series([5.0], [4.9], 150.0))
    report = report_of(path, store)
    assert "Test PPL (reference)" not in report.table.header  # references are a cell's second line, not columns
    rows = {row[0].text: row[1] for row in report.table.rows}
    assert (rows["LSTM1"].text, rows["LSTM1"].note) == ("118.0", "reference 120.94 [1], ours − reference -2.94")
    assert rows["TF"].note == "" and report.table.sources == ["course report 000"]  # an empty source cell, no why
    assert rows["GRU1"].note == ""
    assert report.table.sources == ["course report 000"]
    written = write_report([str(path)], store, tmp_path / "out")
    html, markdown = (p.read_text() for p in written.pages)
    assert '>118.0<span class="ref">reference 120.94 [1], ours − reference -2.94</span>' in html
    assert "| **118.0**<br>*reference 120.94 \\[1\\], ours − reference -2.94* |" in markdown


def test_a_two_axis_grid_pivots_rows_against_the_last_axis(tmp_path):
    store = store_at(tmp_path)
    text = GRID.replace("variants: {VARIANTS}\n", "").replace("axes: {data.max_digits: [5, 10, 20]}",
                                                               "axes: {model: [rnn, gru], data.max_digits: [5, 10]}")
    text = text[:text.index("questions:")]
    path = write_experiment(tmp_path, text, "gridq")
    for cell, acc in (("model=rnn,data.max_digits=5", 0.9), ("model=rnn,data.max_digits=10", 0.5),
                      ("model=gru,data.max_digits=5", 0.95)):
        add_run(store, path, cell, series={"valid/acc": [acc], "test/acc": [acc]})
    report = report_of(path, store)
    (pivot,) = report.pivots
    assert pivot.header == ["model", "max_digits=5", "max_digits=10"]
    assert [[c.text for c in row] for row in pivot.rows] == [
        ["model=rnn", "0.9000", "0.5000"], ["model=gru", "0.9500", "not run: no stored run"]]
    assert [c.best for c in pivot.rows[1]] == [False, True, False]
    written = write_report([str(path)], store, tmp_path / "out")  # each result once: the pivot, not a flat copy
    html, markdown = (p.read_text() for p in written.pages)
    assert markdown.count("| model=rnn |") == 1 and "model=rnn,data.max_digits=5" not in markdown
    assert "<details><summary>Every cell, with notes</summary>" in html  # the flat table, collapsed


def test_a_27_cell_grid_draws_small_multiples_with_one_colour_per_variant(tmp_path):
    store = store_at(tmp_path)
    variants = {f"V{i}": f"{{model: lstm, model.hidden: {8 + i}}}" for i in range(9)}
    text = GRID.replace("{VARIANTS}", "{" + ", ".join(f"{k}: {v}" for k, v in variants.items()) + "}")
    path = write_experiment(tmp_path, text[:text.index("questions:")], "gridq")
    for i, name in enumerate(variants):
        for digits in (5, 10, 20):
            add_run(store, path, f"{name},data.max_digits={digits}",
                    series={"valid/acc": [0.1, 0.2 + i / 20], "valid/digit_acc": [0.5, 0.6], "test/acc": [0.3]})
    written = write_report([str(path)], store, tmp_path / "out")
    names = [p.name for p in written.figures if p.suffix == ".svg"]
    assert names == ["gridq-01-valid-acc-curves.svg", "gridq-02-valid-digit-acc-curves.svg",
                     "gridq-03-test-exact-match-vs-max-digits.svg"]
    svgs = [p.read_text() for p in written.figures if p.suffix == ".svg"]
    assert [len(re.findall(r'<g id="axes_\d+">', svg)) for svg in svgs] == [3, 3, 1]  # a panel per digits value
    assert all(svg.count("V8") == 1 for svg in svgs)  # one legend entry per variant, not one per cell
    for svg in svgs[:2]:
        assert "max_digits=20" in svg and "Test exact match" not in svg
    assert "Test exact match" in svgs[2]  # the axis titled by the column, not `test/acc (final)`
    colours = [re.findall(r"stroke: (#[0-9a-f]{6})", svg) for svg in svgs]
    assert colours[0][:20] and set(colours[0]) & set(colours[2])  # the same palette, variant by variant


def test_setup_and_summary_are_generated_from_the_runs(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "1"), "lmq")
    add_run(store, path, "LSTM1", series=lm_series([5.0], [4.9], 118.0))
    add_run(store, path, "LSTM2", series=lm_series([5.0], [4.9], 119.0))
    written = write_report([str(path)], store, tmp_path / "out")
    report = report_of(path, store)
    assert report.setup.varied == ["model.nlayers: 1, 2"]
    assert "model=lstm" in report.setup.fixed and "data=text" in report.setup.fixed
    assert [m.row for m in report.setup.models] == ["LSTM1", "LSTM2"]
    assert report.setup.models[0].layers.startswith("not rebuilt here: ")  # no dataset folder for data=text
    html = written.pages[0].read_text()
    assert html.index("<h2>Summary</h2>") < html.index("<h3>Questions</h3>") < html.index("<h3>Results</h3>")
    assert "<h3>Setup</h3>" in html and "Settings that vary" in html


def test_rows_level_at_the_shown_precision_tie_and_win_nothing(tmp_path):
    store = store_at(tmp_path)
    variants = "{RNN: {model: rnn}, GRU: {model: gru}, LSTM: {model: lstm}}"
    text = GRID.replace("{VARIANTS}", variants).replace("compare: [RNN, GRU], at: {data.max_digits: 20}",
                                                        "compare: [RNN, GRU, LSTM]")
    path = write_experiment(tmp_path, text, "gridq")
    accs = {"RNN": (1.0, 1.0, 0.5), "GRU": (1.0, 0.99999, 0.9), "LSTM": (0.8, 0.9, 0.7)}
    for variant, values in accs.items():
        for digits, acc in zip((5, 10, 20), values, strict=True):
            add_run(store, path, f"{variant},data.max_digits={digits}", series={"valid/acc": [acc], "test/acc": [acc]})
    answer = answers(report_of(path, store))["Which cell adds 20-digit numbers?"]
    assert answer.startswith("GRU alone has the highest Test exact match at 1 of 3 grid points. ")
    assert "max_digits=5: RNN and GRU tie at 1.000" in answer
    assert "max_digits=10: RNN and GRU tie at 1.000" in answer  # 0.99999 shows as 1.000: no winner there
    trend = answers(report_of(path, store))["Do more digits make it harder?"]
    assert "for GRU it is ≥ 0.9 at every max_digits up to 20" in trend


def test_a_line_level_to_the_shown_digits_or_of_two_points_has_no_trend():
    from sweeplab.report.questions import Measure, _line_verdict
    from sweeplab.report.values import CellValue

    measure = Measure("test/digit_acc", "final", "Test digit acc", None)

    def verdict(*points, std=None):
        xs = {x: CellValue(v, std, 1, 1, (), ()) for x, v in points}
        return _line_verdict(xs, "data.max_digits", measure, None)

    level = "stays level (no step beyond the shown digits or the seeds' spread)"
    assert verdict(("9", 0.99998), ("14", 0.99999), ("20", 1.0)) == level  # all shown as 1.000
    assert verdict(("9", 0.90), ("14", 0.80), ("20", 0.70)) == "falls"
    assert verdict(("9", 0.90), ("14", 0.80), ("20", 0.70), std=0.06) == level  # each step inside the spread
    # two points are compared, never called a trend
    assert verdict(("9", 0.90), ("20", 0.70)) == "is lower at data.max_digits=20 than at data.max_digits=9"
    assert verdict(("9", 0.90), ("20", 0.89999)).startswith("is level")


def test_a_versus_answer_over_many_lines_says_what_most_share_and_names_the_rest(tmp_path):
    store = store_at(tmp_path)
    names = [f"V{i}" for i in range(7)]
    variants = "{" + ", ".join(f"{n}: {{model: rnn, model.hidden: {8 + i}}}" for i, n in enumerate(names)) + "}"
    text = GRID.replace("{VARIANTS}", variants).replace("reach: 0.9", "metric: test/acc")
    text = text.replace("versus: data.max_digits, metric: test/acc, metric: test/acc", "versus: data.max_digits, "
                        "metric: test/acc")
    text = text.replace("  - {ask: \"Which cell adds 20-digit numbers?\", compare: [RNN, GRU], at: "
                        "{data.max_digits: 20}}\n", "")
    path = write_experiment(tmp_path, text, "gridq")
    for i, name in enumerate(names):
        accs = (0.9, 0.95, 0.99) if name == "V3" else (0.5, 0.5, 0.5) if name == "V5" else (0.99, 0.8, 0.4 - i / 100)
        for digits, acc in zip((5, 10, 20), accs, strict=True):
            add_run(store, path, f"{name},data.max_digits={digits}", series={"valid/acc": [acc], "test/acc": [acc]})
    answer = answers(report_of(path, store))["Do more digits make it harder?"]
    assert answer == ("Test exact match along max_digits: for 5 of 7 lines (V0, V1, V2, V4, V6) it falls; for V3 it "
                      "rises; for V5 it stays level (no step beyond the shown digits or the seeds' spread). The numbers "
                      "are in the table.")


def test_a_diverged_value_is_shown_by_its_size_not_its_300_digits():
    from sweeplab.report.values import fmt

    assert fmt(2.854094e306) == "2.85e+306" and fmt(20_722_478.0) == "20,722,478"


def test_a_diverged_or_unfinished_run_is_never_bold(tmp_path):
    """The diverged Transformer stepped fastest, and a running LSTM has the lowest perplexity so far: neither is
    the column's best; the finished GRU is."""
    store = store_at(tmp_path)
    text = LM.replace("SEEDS", "1").replace("  - {title: Trainable params, metric: params}\n",
                                            "  - {title: ms/batch, metric: train/ms_per_batch, aggregate: mean}\n")
    path = write_experiment(tmp_path, text[:text.index("references:")], "lmq")
    add_run(store, path, "TF", series={"train/ms_per_batch": [5.0], "train/loss": [float("inf")]}, status="diverged")
    add_run(store, path, "LSTM1", series={"train/ms_per_batch": [30.0], "test/ppl": [90.0]}, status="running")
    add_run(store, path, "GRU1", series={"train/ms_per_batch": [20.0], "test/ppl": [110.0]})
    add_run(store, path, "LSTM2", series={"train/ms_per_batch": [25.0], "test/ppl": [130.0]})
    table = report_of(path, store).table
    bold = {row[0].text: [c.text for c in row[1:] if c.best] for row in table.rows}
    assert bold["TF"] == [] and bold["LSTM1"] == []
    assert len(bold["GRU1"]) == 2  # the lowest finished perplexity and ms/batch
    # a parameter count is the model's, however its run ended: never tagged with the run's state
    text = text[:text.index("references:")].replace("columns:\n", "columns:\n  - {title: Params, metric: params}\n")
    path.write_text(text)
    rows = {row[0].text: row[1].text for row in report_of(path, store).table.rows}
    assert rows["TF"] == "12,345" and rows["LSTM1"] == "12,345"


def test_counts_agree_with_their_nouns_and_a_step_count_has_no_decimals(tmp_path):
    store = store_at(tmp_path)
    text = TOY.replace("variants: {numpy: {model: mlp_numpy}, torch: {model: mlp}}", "variants: {torch: {model: mlp}}")
    text = text.replace("{title: Convergence epoch, metric: convergence_epoch}]", "{title: Params, metric: params}]")
    text += "references:\n  - {row: torch, column: Params, value: 12000, source: course}\n"
    path = write_experiment(tmp_path, text, "toyq")
    add_run(store, path, "torch", series={"test/acc": [0.5, 0.9, 0.99, 0.99]})
    report = report_of(path, store)
    assert "1 cell, 1 run (1 finished)" in report.meta_line() and "1 of 1 cell finished" in report.summary_line()
    assert [s.text for s in report.analysis if s.topic == "Status"] == ["The run finished."]
    params = report.table.rows[0][report.table.header.index("Params")]
    assert params.note == "reference 12,000 [1], ours − reference +345"  # a count minus the course's: no decimals


def test_a_diverged_curve_does_not_set_the_axes_range():
    from matplotlib.figure import Figure

    from sweeplab.report.figures import _finish_axes

    ax = Figure().subplots()
    ax.plot([1, 2, 3], [2.0, 1.5, 1.0])
    ax.plot([1, 2, 3], [2.0, 1e30, 1e204])  # the diverged run
    _finish_axes(ax, "train/loss", "epoch", calm=[2.0, 1.5, 1.0])
    low, high = ax.get_ylim()
    assert 0.9 <= low < 1.0 and 2.0 < high <= 2.1 and ax.get_yscale() == "linear"


def test_labels_name_rows_axes_and_values_everywhere_people_read_them(tmp_path):
    store = store_at(tmp_path)
    variants = "{RNN: {model: rnn}, RNN_3layers: {model: rnn, model.nlayers: 3}}"
    text = GRID.replace("{VARIANTS}", variants).replace("compare: [RNN, GRU]", "compare: [RNN, RNN_3layers]")
    text += ('labels: {RNN_3layers: "RNN, 3 layers", data.max_digits: {title: digits, value: "{} digits"}}\n')
    path = write_experiment(tmp_path, text, "gridq")
    for variant, accs in (("RNN", (0.99, 0.95, 0.4)), ("RNN_3layers", (1.0, 0.97, 0.93))):
        for digits, acc in zip((5, 10, 20), accs, strict=True):
            add_run(store, path, f"{variant},data.max_digits={digits}", series={"valid/acc": [acc], "test/acc": [acc]})
    report = report_of(path, store)
    (pivot,) = report.pivots
    assert pivot.header == ["Variant", "5 digits", "10 digits", "20 digits"]
    assert [row[0].text for row in pivot.rows] == ["RNN", "RNN, 3 layers"]
    said = " ".join(a.text for a in report.answers)
    assert "RNN, 3 layers has the highest Test exact match at 20 digits" in said
    assert "RNN_3layers" not in said and "data.max_digits" not in said
    written = write_report([str(path)], store, tmp_path / "out")
    versus = next(p for p in written.figures if p.name.endswith("-vs-digits.svg")).read_text()  # people's words
    assert "RNN, 3 layers" in versus and "digits" in versus and "RNN_3layers" not in versus


def test_a_label_for_nothing_is_one_line(tmp_path):
    import pytest

    from sweeplab.errors import UserError
    from sweeplab.sweep.expand import load_experiment

    base = GRID.replace("{VARIANTS}", "{RNN: {model: rnn}, GRU: {model: gru}}")
    for labels, says in (('{LSTM: "an LSTM"}', "labels: 'LSTM' is not a variant or an axis; accepted: RNN, GRU, "
                                                "data.max_digits"),
                         ('{data.max_digits: "digits"}', "labels.data.max_digits: an axis takes"),
                         ('{data.max_digits: {value: "digits"}}', "needs exactly one {}")):
        path = write_experiment(tmp_path, base + f"labels: {labels}\n", "gridq")
        with pytest.raises(UserError, match=re.escape(says)):
            load_experiment(path)


def test_a_scale_that_does_not_measure_a_metric_answers_nothing_about_it(tmp_path):
    """The quick LM scale checks shapes: its 5-step perplexities are neither compared nor set against the
    course's number."""
    store = store_at(tmp_path)
    text = LM.replace("SEEDS", "1") + ('scales:\n  quick: {note: "5 steps", overrides: {train.epochs: 1}, '
                                       'measures: [params]}\n')
    path = write_experiment(tmp_path, text, "lmq")
    for cell, ppl in (("LSTM1", 292796.0), ("LSTM2", 4190.0), ("GRU1", 5000.0), ("TF", 6000.0)):
        add_run(store, path, cell, series=lm_series([12.0], [11.0], ppl))
    store.save_sweep("lmq", "lm", {"scale": "quick"}, "quick")
    report = report_of(path, store)
    for answer in report.answers:
        assert not answer.answered
        assert answer.text.startswith("Not answered at scale quick, which measures Trainable params, not Test PPL")
    row = next(r for r in report.table.rows if r[0].text == "LSTM1")
    assert row[1].note == "reference 120.94 [1], not subtracted: scale quick does not measure it"
    assert not any(r[1].best for r in report.table.rows)  # nor is the lowest of them bold


def test_a_metric_without_a_declared_direction_is_never_ranked(tmp_path):
    """`params` has no direction: "highest params" would be a guess. `better:` in a column declares one."""
    store = store_at(tmp_path)
    text = LM.replace("SEEDS", "1").replace('{ask: "Does depth help?", compare: [LSTM1, LSTM2, GRU1]}',
                                            '{ask: "Which is biggest?", compare: [LSTM1, LSTM2, GRU1], metric: params}')
    path = write_experiment(tmp_path, text, "lmq")
    for cell, params in (("LSTM1", 300.0), ("LSTM2", 100.0), ("GRU1", 200.0)):
        add_run(store, path, cell, series=lm_series([5.0], [4.9], 120.0), summary={"params": params})
    report = report_of(path, store)
    said = answers(report)["Which is biggest?"]
    assert said.startswith("Not ranked: which way Trainable params (params) is better is not declared")
    assert not any(c.best for row in report.table.rows for c in row[4:5])  # the params column: nothing bold
    declared = text.replace("{title: Trainable params, metric: params}",
                            "{title: Trainable params, metric: params, better: lower}")
    path = write_experiment(tmp_path, declared, "lmq")
    assert answers(report_of(path, store))["Which is biggest?"].startswith("LSTM2 has the lowest Trainable params")


def test_every_source_of_a_cell_is_shown_and_one_at_other_settings_is_not_subtracted(tmp_path):
    store = store_at(tmp_path)
    text = LM.replace("SEEDS", "1").replace(
        '  - {row: TF, column: Test PPL, value: null, source: "course report 000"}\n',
        '  - {row: LSTM1, column: Test PPL, value: 100.0, source: "a 1080 blog", settings: "40 epochs, a GPU"}\n')
    path = write_experiment(tmp_path, text, "lmq")
    add_run(store, path, "LSTM1", series=lm_series([5.0], [4.9], 118.0))
    cell = {r[0].text: r[1] for r in report_of(path, store).table.rows}["LSTM1"]
    assert cell.note == ("reference 120.94 [1], ours − reference -2.94; reference 100 [2], at 40 epochs, a GPU: not subtracted")


SERIES = GRID.replace("{VARIANTS}", "{D1: {model.nlayers: 1}, D2: {model.nlayers: 2}, D3: {model.nlayers: 3}, "
                                    "D4: {model.nlayers: 4}}")
SERIES = SERIES[:SERIES.index("questions:")] + "questions:\n  - {ask: \"Does depth help?\", series: [D1, D2, D3, D4]AT}\n"


def _series_answer(tmp_path, accs: dict[str, tuple], at: str = "", seeds: int = 1) -> str:
    store = store_at(tmp_path)
    text = SERIES.replace("AT", at).replace("columns:", f"seeds: {seeds}\ncolumns:")
    path = write_experiment(tmp_path, text, "gridq")
    for variant, values in accs.items():
        for digits, per_seed in zip((5, 10, 20), values, strict=True):
            for seed, acc in enumerate(per_seed if isinstance(per_seed, tuple) else (per_seed,), start=1111):
                add_run(store, path, f"{variant},data.max_digits={digits}", seed, series={"test/acc": [acc]})
    return answers(report_of(path, store))["Does depth help?"]


def test_a_series_answer_gives_the_whole_series_and_its_shape(tmp_path):
    accs = {"D1": (0.5, 0.5, 0.5), "D2": (0.9, 0.6, 0.6), "D3": (0.7, 0.7, 0.4), "D4": (0.6, 0.8, 0.3)}
    one = _series_answer(tmp_path / "one", accs, at=", at: {data.max_digits: 5}")
    assert one == ("Test exact match at max_digits=5 peaks at D2: D1 0.5000, D2 0.9000, D3 0.7000, D4 0.6000. "
                   "The highest is D2 (0.9000), the lowest D1 (0.5000).")
    every = _series_answer(tmp_path / "every", accs)
    assert every == ("Test exact match from D1 to D4: at 2 of 3 grid points (max_digits=5, max_digits=20) it peaks "
                     "at D2; at max_digits=10 it rises. The numbers are in the table.")


def test_a_series_inside_the_seeds_spread_stays_level(tmp_path):
    noisy = {"D1": ((0.5, 0.9),) * 3, "D2": ((0.6, 0.9),) * 3, "D3": ((0.7, 0.9),) * 3, "D4": ((0.75, 0.9),) * 3}
    said = _series_answer(tmp_path, noisy, at=", at: {data.max_digits: 5}", seeds=2)
    assert "stays level (no step beyond the shown digits or the seeds' spread)" in said
    assert "The highest" not in said and "D1 0.7000 ± 0.2828 (n=2)" in said  # no winner inside the noise


def test_a_series_of_two_is_refused(tmp_path):
    import pytest

    from sweeplab.errors import UserError
    from sweeplab.sweep.expand import load_experiment

    path = write_experiment(tmp_path, SERIES.replace("AT", "").replace("[D1, D2, D3, D4]", "[D1, D2]"), "gridq")
    with pytest.raises(UserError, match="`series` names three or more rows"):
        load_experiment(path)


def test_a_noise_caveat_travels_with_its_answer_into_the_summary():
    from sweeplab.report.questions import Answer

    noisy = Answer("LSTM or GRU?", "LSTM has the lower PPL: 100.0 ± 9.0 (n=3). The gap is not larger than the "
                                   "seed-to-seed spread (std 9.0 + 8.0).", True)
    assert noisy.headline == ("LSTM has the lower PPL: 100.0 ± 9.0 (n=3). The gap is not larger than the seed-to-seed "
                              "spread.")
    clear = Answer("LSTM or GRU?", "LSTM has the lower PPL: 100.0. The gap is larger than the seed-to-seed spread.", True)
    assert clear.headline == "LSTM has the lower PPL: 100.0."


def test_a_run_no_better_than_guessing_is_marked_never_bold_and_never_wins(tmp_path):
    """LSTM1's perplexity is above the vocabulary's size (what a uniform guess scores, as the task declared it):
    it did not learn. GRU1 has one seed that learned and one that did not."""
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "1"), "lmq")
    guess = {"chance/ppl": 1000.0}
    add_run(store, path, "LSTM1", series=lm_series([9.0], [9.0], 1500.0), summary=guess)
    add_run(store, path, "LSTM2", series=lm_series([5.0], [4.9], 300.0), summary=guess)
    add_run(store, path, "GRU1", series=lm_series([5.0], [4.9], 400.0), summary=guess)
    add_run(store, path, "GRU1", 1112, series=lm_series([9.0], [9.0], 1000.0), summary=guess)  # at chance exactly
    add_run(store, path, "TF", series=lm_series([9.0], [9.0], 2000.0), summary=guess)
    report = report_of(path, store)
    cells = {row[0].text: row[1] for row in report.table.rows}
    assert cells["LSTM1"].text == "1,500 (did not learn)" and not cells["LSTM1"].best
    assert cells["GRU1"].text.endswith("(n=2; 1 of 2 did not learn)") and not cells["GRU1"].best
    assert cells["LSTM2"].best
    depth = answers(report)["Does depth help?"]
    assert depth.startswith("Only LSTM2 learned: Test PPL 300.0.")
    assert "Did not learn (no better than guessing): LSTM1 (1,500); GRU1 (700.0)." in depth
    assert answers(report)["Transformer or LSTM?"].startswith("TF has a higher Test PPL than LSTM1")  # pairs compare

    # an accuracy: higher is better, and at chance (0.5 of two classes) is no better than guessing
    from sweeplab.report.figures import _calm
    from sweeplab.report.values import declared_directions, learned

    run = next(r for cell in report.cells for r in cell.runs if cell.label == "LSTM1")
    other = next(r for cell in report.cells for r in cell.runs if cell.label == "LSTM2")
    with declared_directions({"ppl": -1}):  # a curve that ended no better than guessing sets no axis range
        assert not _calm(run, "test/ppl") and _calm(other, "test/ppl")
    run.summary["chance/acc"] = 0.5
    with declared_directions({"acc": 1, "ppl": -1}):
        assert not learned(run, "test/acc", 0.5) and learned(run, "test/acc", 0.51)
        assert not learned(run, "test/ppl", 1000.0) and learned(run, "test/ppl", 999.0)
        assert learned(run, "valid/loss", 1e9)  # no chance declared for the loss: nothing claimed


def test_convergence_and_over_fitting_are_said_of_ended_runs_only(tmp_path):
    """A running run above the threshold may yet fall below it, and a held-out loss rising 'for good' may yet
    fall: neither is said of it."""
    store = store_at(tmp_path)
    text = GRID.replace("{VARIANTS}", "{RNN: {model: rnn}, GRU: {model: gru}}")
    path = write_experiment(tmp_path, text[:text.index("questions:")] + "analysis: {convergence_threshold: 0.9}\n",
                            "gridq")
    rising = {"train/loss": [1.0, 0.8, 0.6, 0.4], "valid/loss": [1.0, 1.1, 1.2, 1.3]}
    add_run(store, path, "RNN,data.max_digits=5", series={"valid/acc": [0.5, 0.95, 0.96, 0.97], **rising})
    add_run(store, path, "GRU,data.max_digits=5", series={"valid/acc": [0.5, 0.95, 0.96, 0.97], **rising},
            status="running")
    report = report_of(path, store)
    (converged,) = facts(report, "Convergence")
    assert converged.startswith("Converged") and "RNN, max_digits=5 at step" in converged and "GRU" not in converged
    (overfits,) = facts(report, "Over-fitting")
    assert overfits.startswith("RNN, max_digits=5 over-fits from step") and "GRU" not in overfits


def test_a_series_shape_names_a_plateau_and_a_lone_step():
    from sweeplab.report.questions import series_shape
    from sweeplab.report.values import CellValue

    def shape(*values):
        return series_shape([(f"lr{i}", CellValue(v, None, 1, 1, (), ())) for i, v in enumerate(values)], 1)

    assert shape(0.0, 1.0, 1.0, 0.06) == "peaks at lr1 and lr2"  # the top is two rows wide: both named
    assert shape(1.0, 1.0, 1.0, 0.9997) == "falls only at lr3, level elsewhere"  # not "falls": one step of three
    assert shape(0.1, 0.5, 0.9) == "rises"


def test_a_pair_the_same_everywhere_says_where_and_a_count_reads_as_one(tmp_path):
    """Two variants equal at each grid point are said equal at each (not at a mean over datasets that no table
    shows), and a step count is `600`, not `600.0`."""
    store = store_at(tmp_path)
    text = GRID.replace("{VARIANTS}", "{RNN: {model: rnn}, GRU: {model: gru}}")
    text = text[:text.index("questions:")] + (
        "questions:\n  - {ask: \"Same?\", pair: [RNN, GRU], metric: test/acc}\n"
        "  - {ask: \"Faster?\", pair: [RNN, GRU], metric: convergence_step, at: {data.max_digits: 5}}\n")
    path = write_experiment(tmp_path, text, "gridq")
    for variant, step in (("RNN", 600.0), ("GRU", 900.0)):
        for digits, acc in zip((5, 10, 20), (1.0, 0.9, 0.5), strict=True):
            add_run(store, path, f"{variant},data.max_digits={digits}", series={"valid/acc": [0.5, 1.0], "test/acc": [acc]},
                    summary={"convergence_step": step})
    said = answers(report_of(path, store))
    assert said["Same?"] == ("RNN and GRU have the same Test exact match at every one of the 3 matched grid points and "
                             "seeds: max_digits=5 1.0000, max_digits=10 0.9000, max_digits=20 0.5000.")
    assert said["Faster?"] == "RNN has a lower Convergence step than GRU: 600 against 900, a difference of 300 (33.3%)."


def test_the_shipped_addition_questions_are_answered_over_their_whole_series(tmp_path):
    """experiments/addition.yaml as shipped: depth peaks at 3 layers and the learning rate at 1e-2 only when every
    row of each series is read (a default-against-one-other comparison could not say either)."""
    import shutil
    from pathlib import Path

    store = store_at(tmp_path)
    path = tmp_path / "addition.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "experiments" / "addition.yaml", path)
    acc = {"RNN_1layer": 0.5, "RNN": 0.7, "RNN_3layers": 0.9, "RNN_4layers": 0.6,
           "RNN_lr1e-4": 0.03, "RNN_lr1e-2": 0.95, "RNN_lr1e-1": 0.2, "GRU": 0.8, "LSTM": 0.85}
    for variant, value in acc.items():
        for digits in (9, 14, 20):
            add_run(store, path, f"{variant},data.max_digits={digits}", summary={"chance/acc": 1e-10},
                    series={"valid/acc": [value], "test/acc": [value - digits / 1000], "test/digit_acc": [0.9]})
    said = answers(report_of(path, store))
    assert said["Does depth help the RNN?"] == (
        "Test exact match from RNN, 1 layer to RNN, 4 layers: at every one of the 3 grid points it peaks at "
        "RNN, 3 layers. The numbers are in the table.")
    assert said["Which learning rate trains the RNN?"] == (
        "Test exact match from RNN, lr 1e-4 to RNN, lr 1e-1: at every one of the 3 grid points it peaks at "
        "RNN, lr 1e-2. The numbers are in the table.")
    digits = said["Do more digits make addition harder?"]
    assert digits.startswith("Test digit acc along digits: for every one of the 9 lines it stays level")


def test_over_fitting_is_one_sentence_for_many_runs_and_not_judged_where_the_scale_does_not_measure_it(tmp_path):
    store = store_at(tmp_path)
    path = write_experiment(tmp_path, LM.replace("SEEDS", "1"), "lmq")
    rising = {"train/loss": [6.0, 5.5, 5.0, 4.5], "valid/loss": [6.0, 6.1, 6.2, 6.3]}
    for cell in ("LSTM1", "LSTM2", "GRU1", "TF"):
        add_run(store, path, cell, series={**rising, "test/ppl": [500.0]})
    (overfit,) = facts(report_of(path, store), "Over-fitting")  # four runs: one sentence, not four bullets
    assert overfit == ("4 of the 4 ended runs over-fit (the held-out loss rises for good while the training loss "
                       "falls): LSTM1 from epoch 2, LSTM2 from epoch 2, GRU1 from epoch 2, TF from epoch 2.")
    path.write_text(path.read_text() + 'scales:\n  quick: {note: "5 steps", overrides: {}, measures: [params]}\n')
    store.save_sweep("lmq", "lm", {"scale": "quick"}, "quick")
    assert facts(report_of(path, store), "Over-fitting") == [
        "Not judged at scale quick, which does not measure the held-out loss."]


def test_a_divergence_found_by_the_error_alone_is_said_where_the_error_says():
    from types import SimpleNamespace

    from sweeplab.report.analysis import _where

    run = SimpleNamespace(row=SimpleNamespace(error="validation ppl became inf at step 5 (epoch 1)", epoch=0))
    assert _where(run, None) == ": validation ppl became inf at step 5 (epoch 1)"  # never "after epoch 0"
    run.row.error = None
    assert _where(run, None) == " in epoch 1"
