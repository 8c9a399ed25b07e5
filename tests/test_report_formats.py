"""`sweeplab report --format latex`: report.tex that compiles, a booktabs fragment per table that pastes into
one's own document, figures as PDF; every text from runs and files escaped by one filter. `--format pdf`: the
HTML page printed by headless Chromium, a page per experiment, no table cut at the page's edge."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markupsafe import escape

from sweeplab.report.build import write_report
from sweeplab.report.latex import tex
from sweeplab.report.markdown import md
from sweeplab.report.model import Definitions, ExperimentReport, Item, Items, Term
from sweeplab.store import open_store
from test_report import add_run, write_experiment

CLI = [sys.executable, "-m", "sweeplab"]
HOSTILE = r"A&B_50% $x$ #1 {y} \input{/etc/passwd} ~^ <i> {{ 7*7 }} **x**"
# What each of the three views could mistake for its own markup: HTML, Jinja, LaTeX, Markdown, math.
ATTACK = r"<script>alert(1)</script> {{ 7*7 }} {% if 1 %} \input{/etc/passwd} **x** $x$ [a](javascript:x) | & % #"
# A training function of the test's own: two epochs of a tiny model, a few seconds for the whole sweep.
LOOP = """
import torch
from pydantic import BaseModel
from torch import nn

class Config(BaseModel):
    lr: float = 0.1
    epochs: int = 2

def main(config: Config, run):
    torch.manual_seed(run.seed)
    x = torch.randn(128, 2)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    for epoch in range(1, config.epochs + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        run.log(step=epoch, epoch=epoch, loss=loss.item())
        run.log(split="test", acc=(model(x).argmax(1) == y).float().mean())
"""


def pdflatex(folder: Path, name: str) -> subprocess.CompletedProcess:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-recommended; .ci/run installs it)")
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", name],
                          cwd=folder, capture_output=True, text=True, timeout=120)


def test_tex_escapes_every_special_and_keeps_the_text():
    escaped = tex(HOSTILE)
    assert r"\input{" not in escaped and "$x$" not in escaped and "50%" not in escaped
    assert escaped.startswith(r"A\&B\_50\% \$x\$ \#1 \{y\} \textbackslash{}input\{/etc/passwd\}")
    assert tex("0.88 ± 0.01 — 3×") == r"0.88 \ensuremath{\pm} 0.01 --- 3\ensuremath{\times}"
    assert tex("a\x1b[31mb\u4e2d") == "a [31mb?"  # control characters and glyphs the fonts lack


@pytest.fixture()
def swept(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "loop.py").write_text(LOOP)
    spec = {"name": "latex_demo", "title": f"Learning rates of {HOSTILE}", "task": "loop.py:main",
            "variants": {HOSTILE.split()[0]: {"lr": 0.05}, "fast": {"lr": 0.5}}, "seeds": 2,
            "columns": [{"title": "Test acc", "metric": "test/acc"}, {"title": "Loss", "metric": "train/loss"},
                        *({"title": f"Training loss, aggregate {agg}", "metric": "train/loss", "aggregate": agg}
                          for agg in ("min", "max", "mean", "best")),
                        *({"title": f"Test accuracy, aggregate {agg}", "metric": "test/acc", "aggregate": agg}
                          for agg in ("min", "max", "mean", "best")),
                        *({"title": f"Test accuracy at epoch {e}", "metric": "test/acc", "aggregate": "at-epoch",
                           "epoch": e} for e in (1, 2)),
                        *({"title": f"Training loss at epoch {e}", "metric": "train/loss", "aggregate": "at-epoch",
                           "epoch": e} for e in (1, 2))],
            "figures": [{"kind": "curves", "metrics": ["train/loss"]}],
            "questions": [{"ask": "Which rate is best?", "compare": [HOSTILE.split()[0], "fast"], "metric": "test/acc"}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    store = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    done = subprocess.run([*CLI, "sweep", "exp.yaml", "--store", store], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tmp_path, store


def test_the_latex_report_compiles_with_its_tables_and_figures(swept):
    folder, store = swept
    out = folder / "tex"
    made = subprocess.run([*CLI, "report", "exp.yaml", "--store", store, "--out", out, "--format", "latex"],
                          cwd=folder, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    main = (out / "report.tex").read_text()
    assert r"\input{/etc/passwd}" not in main and r"\textbackslash{}input\{/etc/passwd\}" in main
    fragments = sorted((out / "tables").glob("*.tex"))
    assert fragments and all(f.read_text().startswith(r"\begin{tabular}") and r"\toprule" in f.read_text()
                             for f in fragments)
    assert all(rf"\input{{tables/{f.name}}}" in main for f in fragments)
    figures = sorted((out / "figures").glob("*.pdf"))
    assert figures and all(f.read_bytes().startswith(b"%PDF") for f in figures)
    assert not list((out / "figures").glob("*.svg"))  # the LaTeX report's figures are PDF only
    compiled = pdflatex(out, "report.tex")
    assert compiled.returncode == 0, compiled.stdout[-2000:]
    assert (out / "report.pdf").stat().st_size > 10_000


def test_a_table_fragment_pastes_into_a_document_of_ones_own(swept):
    folder, store = swept
    out = folder / "tex"
    assert subprocess.run([*CLI, "report", "exp.yaml", "--store", store, "--out", out, "--format", "latex"],
                          cwd=folder, capture_output=True).returncode == 0
    (fragment,) = (out / "tables").glob("*.tex")
    (out / "mine.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                                  f"My results:\\par\\input{{tables/{fragment.name}}}\n\\end{{document}}\n")
    compiled = pdflatex(out, "mine.tex")
    assert compiled.returncode == 0, compiled.stdout[-2000:]


def test_an_unknown_format_is_one_line(tmp_path):
    proc = subprocess.run([*CLI, "report", "exp.yaml", "--format", "docx", "--store", f"sqlite:///{tmp_path}/s.sqlite"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "accepted: html, pdf, latex" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_pdf_report_has_a_page_per_experiment_and_no_table_runs_off_a_page(swept, tmp_path):
    if shutil.which("chromium") is None or shutil.which("pdftoppm") is None:
        pytest.skip("needs chromium and pdftoppm (Debian: chromium, poppler-utils)")
    folder, store = swept
    out = folder / "pdf"
    made = subprocess.run([*CLI, "report", "exp.yaml", "--store", store, "--out", out, "--format", "pdf"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert (out / "index.html").is_file() and (out / "report.pdf").read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-r", "30", "-png", out / "report.pdf", tmp_path / "page"], check=True)
    from matplotlib.image import imread

    pages = [imread(p) for p in sorted(tmp_path.glob("page*.png"))]
    assert len(pages) >= 2  # the summary, then the experiment on a page of its own
    assert {p.shape for p in pages} == {pages[0].shape} and pages[0].shape[0] > pages[0].shape[1]  # A4, upright
    for page in pages:  # the margin stays white: the 14-column table shrank to the page instead of running off it
        assert (page[:, -6:, :3] > 0.95).all()
    texts = [subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), out / "report.pdf", "-"], capture_output=True,
                            text=True, check=True).stdout for n in range(1, len(pages) + 1)]
    starts = [n for n, text in enumerate(texts) if text.lstrip().startswith("Learning rates of")]
    assert starts and starts[0] > 0  # the experiment starts a page of its own, after the summary's


def test_without_chromium_the_pdf_is_one_line_and_nothing_is_left(swept):
    folder, store = swept
    out = folder / "nopdf"
    made = subprocess.run([*CLI, "report", "exp.yaml", "--store", store, "--out", out, "--format", "pdf"],
                          cwd=folder, capture_output=True, text=True, env={**os.environ, "PATH": str(folder)})
    assert made.returncode == 2 and "headless Chromium, which is not installed" in made.stderr
    assert len(made.stderr.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------------------- one model, three views
@pytest.fixture()
def hostile_store(tmp_path: Path) -> tuple[Path, str]:
    """An experiment with the attack in its title, a row's name, a run's note and a run's error; the runs are
    written to the store directly (nothing trains)."""
    store = open_store(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    spec = {"name": "inert", "title": f"Title {ATTACK}", "task": "toy2d",
            "variants": {f"row {ATTACK}": {"model": "mlp"}, "plain": {"model": "mlp_numpy"}},
            "columns": [{"title": "Test acc", "metric": "test/acc"}],
            "figures": [{"kind": "curves", "metrics": ["train/loss"]}]}
    path = write_experiment(tmp_path, yaml.safe_dump(spec), "inert")
    add_run(store, path, f"row {ATTACK}", series={"train/loss": [0.6, 0.3], "test/acc": [0.9]}, note=f"note {ATTACK}")
    add_run(store, path, "plain", series={"train/loss": [0.7]}, status="failed", error=f"boom {ATTACK}")
    return path, store.url


def views(folder: Path, path: Path, store_url: str) -> tuple[str, str, str]:
    """(index.html, report.md, report.tex with its table fragments); report.tex compiled with pdflatex."""
    store = open_store(store_url)
    html, markdown = (p.read_text() for p in write_report([str(path)], store, folder / "html").pages)
    write_report([str(path)], store, folder / "tex", fmt="latex")
    compiled = pdflatex(folder / "tex", "report.tex")
    assert compiled.returncode == 0, compiled.stdout[-2000:]
    latex = "".join(p.read_text() for p in [folder / "tex" / "report.tex", *(folder / "tex" / "tables").glob("*.tex")])
    return html, markdown, latex


def test_hostile_text_reaches_all_three_views_inert(hostile_store, tmp_path):
    """The attack in a title, a row's name, a run's note and its error: in every view as that view's one escaping
    filter writes it (so shown as typed), nowhere as markup; report.tex compiles."""
    html, markdown, latex = views(tmp_path, *hostile_store)
    for text, escaped in ((html, str(escape(ATTACK))), (markdown, md(ATTACK)), (latex, tex(ATTACK))):
        for where in ("Title ", "row ", "note ", "boom "):
            assert where + escaped in text, where
    assert "<script" not in html.lower() and "{{ 7*7 }} {% if 1 %}" in html  # as typed: no template read it
    assert not any(markup in markdown for markup in ("<script", "**x**", "$x$", "[a](javascript:x)"))
    assert r"\input{/etc/passwd}" not in latex and "$x$" not in latex


def test_a_section_added_to_the_model_appears_in_all_three_views(hostile_store, tmp_path, monkeypatch):
    """Adding a section (of a kind the views know) is one change in the model: every view renders it, escaped."""
    added = [Items("Caveats & <b>limits</b>", [Item(f"Seeds {ATTACK}.", "only one, **so far**")]),
             Definitions("Licence", [Term("Data", [f"CC-BY {ATTACK}", "see the source"])])]
    sections = ExperimentReport.sections
    monkeypatch.setattr(ExperimentReport, "sections", lambda self: [*sections(self), *added])
    html, markdown, latex = views(tmp_path, *hostile_store)
    assert "<h3>Caveats &amp; &lt;b&gt;limits&lt;/b&gt;</h3>" in html
    assert f"<li><strong>Seeds {escape(ATTACK)}.</strong> only one, **so far**</li>" in html
    assert f"<dt>Data</dt><dd>CC-BY {escape(ATTACK)}</dd><dd>see the source</dd>" in html
    assert "### Caveats &amp; &lt;b&gt;limits&lt;/b&gt;" in markdown
    assert f"- **Seeds {md(ATTACK)}.** only one, \\*\\*so far\\*\\*" in markdown
    assert f"### Licence\n\n- **Data**: CC-BY {md(ATTACK)}; see the source" in markdown
    assert r"\subsection*{Caveats \& \textless{}b\textgreater{}limits\textless{}/b\textgreater{}}" in latex
    assert rf"\item \textbf{{Seeds {tex(ATTACK)}.}} only one, **so far**" in latex
    assert r"\subsection*{Licence}" in latex and rf"\item \textbf{{Data}}: CC-BY {tex(ATTACK)}; see the source" in latex
    for text in (html, markdown, latex):  # after the per-run facts, in the order the model gives
        assert text.index("Per-run facts") < text.index("Caveats") < text.index("Licence")
