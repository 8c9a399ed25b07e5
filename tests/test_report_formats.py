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

from sweeplab.report.latex import tex

CLI = [sys.executable, "-m", "sweeplab"]
HOSTILE = r"A&B_50% $x$ #1 {y} \input{/etc/passwd} ~^ <i>"
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
