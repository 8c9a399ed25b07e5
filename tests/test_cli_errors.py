"""What a user can get wrong, or slip in, on the command line: one line on stderr and exit 2, nothing half-written;
user text shown as text (never rich markup, never a spreadsheet formula); a report never deletes a user's file."""
from __future__ import annotations

import csv
import io
import json
import math
import os

import pytest
from rich.console import Console
from tests.test_cli import TINY
from tests.test_report import PALINDROME_EXPERIMENT, add_run, write_experiment
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.store import open_store

runner = CliRunner()
MARKUP_NAME = "[/bold]"  # a closing tag rich cannot match: rendered as markup, it raises MarkupError
FORMULA_NAME = '=HYPERLINK("http://evil.example","NaN")'


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *parts: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


@pytest.fixture
def lm_run(tiny_corpus, store_url):
    def make(*extra: str) -> str:
        result = invoke("run", "lm", *TINY[:-1], f"data.path={tiny_corpus}", "train.epochs=1", *extra, "--json",
                        "--store", store_url)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["run_id"]

    return make


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("content", [os.urandom(4096) + b"\xff", b"the cat\x00\x00sat\n" * 50],
                         ids=["invalid-utf8", "nul-bytes"])
def test_binary_train_txt_is_one_line_and_caches_nothing(content, tiny_corpus, store_url, tmp_path):
    (tiny_corpus / "train.txt").write_bytes(content)
    cache = tmp_path.parent / "cache"  # conftest's SWEEPLAB_CACHE, shared by the session's tests
    before = set(cache.glob("tokens-*"))
    result = invoke("run", "lm", *TINY, f"data.path={tiny_corpus}", "--store", store_url)
    one_error_line(result, str(tiny_corpus / "train.txt"), "UTF-8 text")
    assert open_store(store_url).list_runs() == []
    assert set(cache.glob("tokens-*")) == before


def test_binary_tinyimagenet_index_is_one_line(tmp_path, store_url):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "wnids.txt").write_bytes(b"n01443537\n\xff\xfe\x00garbage\n")
    result = invoke("run", "image", "data=tinyimagenet", f"data.path={folder}", "--dry-run", "--store", store_url)
    one_error_line(result, str(folder / "wnids.txt"), "UTF-8 text")


@pytest.mark.parametrize("content, expected", [(b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "cannot read"),
                                               (b"- a\n- b\n", "YAML mapping")], ids=["binary", "a-list"])
def test_experiment_file_that_is_binary_or_not_a_mapping(content, expected, tmp_path, store_url):
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    for command in ("sweep", "report"):
        one_error_line(invoke(command, path, "--store", store_url, *(["--out", tmp_path / "r"] if command ==
                                                                     "report" else [])), str(path), expected)
    assert not (tmp_path / "r").exists()


def test_binary_import_log_is_one_line(tmp_path, store_url):
    log = tmp_path / "train.log"
    log.write_bytes(os.urandom(512) + b"\x00")
    one_error_line(invoke("import", log, "--task", "lm", "--name", "x", "--store", store_url), str(log), "not a text")


def test_report_out_that_is_a_file(tmp_path, store_url):
    path = write_experiment(tmp_path, PALINDROME_EXPERIMENT, "paltest")
    target = tmp_path / "report.html"
    target.write_text("mine")
    one_error_line(invoke("report", path, "--out", target, "--store", store_url), str(target), "folder")
    assert target.read_text() == "mine"
    inside = target / "sub"  # a folder below a file cannot be made either
    one_error_line(invoke("report", path, "--out", inside, "--store", store_url), str(target))


def test_attention_out_creates_missing_folders_and_refuses_impossible_ones(lm_run, store_url, tmp_path):
    run_id = lm_run("model=transformer", "model.nhead=2")
    deep = tmp_path / "missing" / "dir" / "att.svg"
    result = invoke("attention", run_id, "--text", "the cat sat", "--out", deep, "--store", store_url)
    assert result.exit_code == 0, result.output
    assert deep.read_text().lstrip().startswith("<?xml")
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    result = invoke("attention", run_id, "--text", "the cat", "--out", blocker / "att.svg", "--store", store_url)
    one_error_line(result, "--out", str(blocker))
    folder = tmp_path / "folder.svg"
    folder.mkdir()
    one_error_line(invoke("attention", run_id, "--text", "the cat", "--out", folder, "--store", store_url),
                   "--out", str(folder), "is a folder")
    assert blocker.read_text() == "mine" and not list(folder.iterdir())


def test_generate_refuses_a_temperature_that_is_not_a_number(lm_run, store_url):
    run_id = lm_run()
    for bad in ("nan", "0"):
        one_error_line(invoke("generate", run_id, "--temperature", bad, "--store", store_url), "--temperature", bad)


def test_attention_that_fails_leaves_no_folder_behind(lm_run, store_url, tmp_path):
    run_id = lm_run()  # an LSTM: no attention maps
    target = tmp_path / "new" / "att.svg"
    one_error_line(invoke("attention", run_id, "--out", target, "--store", store_url), "transformer")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------- output safety
def test_markup_in_a_run_name_is_shown_as_text(lm_run, store_url):
    run_id = lm_run("--name", MARKUP_NAME)
    listing = invoke("runs", "list", "--store", store_url)
    assert listing.exit_code == 0, listing.output
    assert MARKUP_NAME in listing.stdout and run_id in listing.stdout
    shown = invoke("runs", "show", MARKUP_NAME, "--store", store_url)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["name"] == MARKUP_NAME


def test_csv_export_neutralises_formulas_and_keeps_numbers(lm_run, store_url):
    lm_run("--name", FORMULA_NAME)
    lm_run("--name", "-1+2", "seed=7")
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "export", "--store", store_url).stdout)))
    names = {r["name"] for r in rows}
    assert names == {"'" + FORMULA_NAME, "'-1+2"}
    for row in rows:
        assert float(row["test/ppl"]) > 1 and float(row["seed"]) in (1111, 7)
    metric_rows = list(csv.DictReader(io.StringIO(invoke("runs", "export", "--metrics", "--store", store_url).stdout)))
    assert all(not row["run_id"].startswith("'") for row in metric_rows)


def test_csv_cells_starting_with_formula_characters():
    from sweeplab.cli import csv_cell

    for text in ("=1+1", "+1+A1", "-cmd|' /C calc'!A0", "@SUM(A1)"):
        assert csv_cell(text) == "'" + text
    for text in ("\tx", "\rx"):  # quoted, and the control character itself escaped
        assert csv_cell(text) == "'" + text.encode("unicode_escape").decode()
    for value in (-0.5, -3, 0.25, "-0.5", "-1e-05", "lstm", "", None, math.nan):
        assert csv_cell(value) is value  # numbers (negative ones too) stay numbers


def test_json_export_turns_non_finite_values_into_null_and_keeps_names(lm_run, store_url):
    run_id = lm_run("--name", FORMULA_NAME)
    db = open_store(store_url)
    db.set_summary(run_id, {**db.summary(run_id), "valid/ppl": math.inf, "test/ppl": math.nan})
    result = invoke("runs", "export", "--format", "json", "--store", store_url)
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == FORMULA_NAME  # "NaN" inside the name survives
    assert rows[0]["valid/ppl"] is None and rows[0]["test/ppl"] is None
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout.replace(FORMULA_NAME.replace('"', '\\"'), "")


def test_report_keeps_the_users_figures(tmp_path, store_url):
    path = write_experiment(tmp_path, PALINDROME_EXPERIMENT, "paltest")
    add_run(open_store(store_url), path, "data.length=5", series={"valid/acc": [0.6, 1.0], "test/acc": [1.0]})
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    mine = [out / "figures" / "my-plot.svg", out / "figures" / "photo.png"]
    for file in mine:
        file.write_text("mine")
    first = invoke("report", path, "--out", out, "--store", store_url)
    assert first.exit_code == 0, first.output
    ours = sorted(p.name for p in (out / "figures").glob("paltest-*"))
    assert ours and all(file.read_text() == "mine" for file in mine)
    # a figure of an earlier report that this one no longer draws is removed; the user's files still stay
    stale = out / "figures" / ours[0]
    stale.rename(out / "figures" / "paltest-99-old.svg")
    manifest = next(p for p in (out / "figures").iterdir() if p.name.startswith("."))
    manifest.write_text(manifest.read_text() + "paltest-99-old.svg\n")
    assert invoke("report", path, "--out", out, "--store", store_url).exit_code == 0
    assert not (out / "figures" / "paltest-99-old.svg").exists() and stale.exists()
    assert all(file.read_text() == "mine" for file in mine)


def test_sweep_board_and_plan_show_markup_labels_as_text(tiny_corpus, tmp_path):
    from tests.sweep_helpers import write_experiment as write_sweep

    from sweeplab.sweep.board import Board
    from sweeplab.sweep.expand import expand, load_experiment
    from sweeplab.sweep.planner import CellPlan, Plan
    from sweeplab.sweep.run import print_plan

    path = write_sweep(tmp_path, tiny_corpus, variants={MARKUP_NAME: {"model": "lstm"}})
    cells = expand(load_experiment(path), "quick")
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    console = Console(file=io.StringIO(), width=200)
    console.print(Board(cells, store, ("Valid PPL", "valid/ppl"), interactive=False).table())
    assert MARKUP_NAME in console.file.getvalue()
    plan = Plan(None, None, 1, "quick", {}, [CellPlan(f"{MARKUP_NAME}@1111", MARKUP_NAME, 1111, "k", full=2, chosen=2),
                                              CellPlan("x@1111", MARKUP_NAME, 1111, "k", error="[/red] input")])
    print_plan(plan, cells, console)
    text = console.file.getvalue()
    assert text.count(MARKUP_NAME) == 3 and "cannot run: [/red] input" in text
