"""A run folder written by a hostile user (the shared NFS/bucket set-up): `report`, `runs show`, `generate`,
`attention` and `compare` never read through a link out of it, never hang on a FIFO, never copy active SVG
content, and bound the text they are given. Two tiny real runs (toy2d, a Transformer LM) are swept once;
each case tampers with a fresh copy of their folders, runs one command, and looks at everything it wrote."""
from __future__ import annotations

import base64
import collections
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.report.svg_clean import clean_svg
from sweeplab.store import open_store

SECRET = "S3CR3T-7f3a91"  # what the reporting user's own files hold; no output may ever contain it
ACTIVE = re.compile(r"<script|\son\w+\s*=|foreignObject|href=\"(?!#|data:image/png)|<!ENTITY|<!DOCTYPE svg|@import", re.I)
TIMEOUT_S = 120  # a command that reads a FIFO waits forever: it must end well within this

TOY_EXPERIMENT = """
name: hostile_toy
task: toy2d
base: {data.n_samples: 100, train.epochs: 2}
variants: {MLP: {model: mlp}}
columns: [{title: Test acc, metric: test/acc}]
figures: [{kind: boundary}]
"""
LM_EXPERIMENT = """
name: hostile_lm
task: lm
base: {{data: text, data.path: "{corpus}", model.emsize: 16, model.nhid: 16, model.nlayers: 1, train.batch_size: 4,
       train.eval_batch_size: 4, train.bptt: 10, train.epochs: 1}}
variants: {{TF: {{model: transformer, model.nhead: 1}}}}
columns: [{{title: Test PPL, metric: test/ppl}}]
figures: [{{kind: text}}, {{kind: attention}}]
"""
SECRET_SVG = (f'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><text x="1" y="20">{SECRET}</text>'
              '</svg>')
ACTIVE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" '
              f'height="40" onload="alert(\'{SECRET}\')"><script>alert("{SECRET}")</script>'
              f'<foreignObject width="40" height="40"><p xmlns="http://www.w3.org/1999/xhtml">{SECRET}</p></foreignObject>'
              '<image xlink:href="https://attacker.example/beacon.png" width="1" height="1"/>'
              '<style>@import url(https://attacker.example/x.css);</style>'
              '<rect width="40" height="40" fill="#3b528b" onclick="steal()"/></svg>')
ENTITY_SVG = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY leak SYSTEM "file://{secret}">]>'
              '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><text>&leak;</text></svg>')


# ------------------------------------------------------------------------------------------ the runs
@dataclass
class Runs:
    url: str
    toy: Path  # the toy2d run's folder
    lm: Path  # the Transformer LM run's folder
    toy_id: str
    lm_id: str
    outside: Path  # the reporting user's own files, which the folders try to reach
    out: Path  # where the report goes

    def report(self) -> list[str]:
        return ["report", "hostile_toy", "hostile_lm", "--store", self.url, "--out", str(self.out)]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory):
    """Both experiments swept once into one store; pristine copies of their run folders kept aside."""
    root = tmp_path_factory.mktemp("hostile")
    corpus = _corpus(root / "corpus")
    (root / "toy.yaml").write_text(TOY_EXPERIMENT)
    (root / "lm.yaml").write_text(LM_EXPERIMENT.format(corpus=corpus))
    url = f"sqlite:///{root / 'runs' / 'sweeplab.sqlite'}"
    with pytest.MonkeyPatch.context() as mp:  # the module's runs stay in its own folders, as every test's do
        mp.setenv("SWEEPLAB_CACHE", str(root / "cache"))
        mp.setenv("SWEEPLAB_ARTIFACTS", "")
        for experiment in ("toy.yaml", "lm.yaml"):
            result = CliRunner().invoke(app, ["sweep", str(root / experiment), "--store", url])
            assert result.exit_code == 0, result.output
    store = open_store(url)
    ids = {row.sweep: row.id for row in store.list_runs()}
    folders = {sweep: store.run_dir(run_id) for sweep, run_id in ids.items()}
    for folder in folders.values():
        shutil.copytree(folder, root / "pristine" / folder.name)
    return root, url, ids, folders


@pytest.fixture
def runs(swept, tmp_path: Path) -> Runs:
    """Fresh copies of both run folders (a case tampers with them) and the user's secret files outside."""
    root, url, ids, folders = swept
    for folder in folders.values():
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(root / "pristine" / folder.name, folder)
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "notes.txt").write_text(f"password: {SECRET}\n")
    (outside / "figure.svg").write_text(SECRET_SVG)
    return Runs(url, folders["hostile_toy"], folders["hostile_lm"], ids["hostile_toy"], ids["hostile_lm"],
                outside, tmp_path / "report")


def _corpus(folder: Path) -> Path:
    words = "the cat sat on the mat and the dog ate the bone while a bird sang in the tree".split()
    folder.mkdir(parents=True)
    for split, lines in (("train", 60), ("valid", 10), ("test", 10)):
        text = "\n".join(" ".join(words[(i * 3 + j) % len(words)] for j in range(12)) for i in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


# ---------------------------------------------------------------------------------------- tampering
def link(path: Path, target: Path) -> None:
    """`path` in a run folder becomes a link to `target`, a file or folder of the reporting user."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


def link_run_folder(folder: Path, outside: Path) -> None:
    """The whole run folder is a link to a folder of the attacker's making, whose files lead further out."""
    fake = outside / "fake-run"
    shutil.copytree(folder, fake)
    link(fake / "decision_boundary.svg", outside / "figure.svg")
    link(fake / "generated.txt", outside / "notes.txt")
    link(folder, fake)


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def link_checkpoint(folder: Path, outside: Path) -> None:
    """The run's checkpoint moved out (a file only the reporting user may have made) and linked back."""
    checkpoint = sorted((folder / "checkpoints").glob("epoch_*.pt"))[-1]
    shutil.copy(checkpoint, outside / "weights.pt")
    link(checkpoint, outside / "weights.pt")


def link_checkpoints_folder(folder: Path, outside: Path) -> None:
    shutil.copytree(folder / "checkpoints", outside / "checkpoints")
    link(folder / "checkpoints", outside / "checkpoints")


def hard_link(path: Path, target: Path) -> None:
    """Another name of the user's file, inside the run folder (where protected_hardlinks is off)."""
    path.unlink()
    os.link(target, path)


def png_that_is_an_svg(folder: Path) -> None:
    (folder / "decision_boundary.svg").unlink()
    (folder / "decision_boundary.png").write_text(ACTIVE_SVG)


def fifo_figure(folder: Path) -> None:
    (folder / "decision_boundary.png").unlink()
    fifo(folder / "decision_boundary.svg")


def secret_vocabulary(folder: Path, outside: Path) -> None:
    """vocab.txt linked to a word list of the user's: generated text would spell out its words."""
    words = (folder / "vocab.txt").read_text().splitlines()
    (outside / "words.txt").write_text("".join(f"{SECRET}{i}\n" for i in range(len(words))))
    link(folder / "vocab.txt", outside / "words.txt")


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Runs], None]
    command: Callable[[Runs], list[str]]
    exit_code: int
    says: str = ""  # in the command's stderr, or in the report where it explains a missing figure
    subprocess: bool = False  # a FIFO: run where a hang can be cut short


def report(r: Runs) -> list[str]:
    return r.report()


def generate(r: Runs) -> list[str]:
    return ["generate", r.lm_id, "--words", "5", "--store", r.url]


CASES = {
    # report: a file not embedded is a gap with its reason, exit 0
    "report/run-folder-is-a-link": Case(lambda r: link_run_folder(r.toy, r.outside), report, 0,
                                        "the run folder refused (a symbolic link"),
    "report/svg-links-out": Case(lambda r: link(r.toy / "decision_boundary.svg", r.outside / "figure.svg"), report, 0),
    "report/text-links-out": Case(lambda r: link(r.lm / "generated.txt", r.outside / "notes.txt"), report, 0,
                                  "generated.txt refused (a symbolic link"),
    "report/text-hard-link": Case(lambda r: hard_link(r.lm / "generated.txt", r.outside / "notes.txt"), report, 0,
                                  "generated.txt refused (a hard link"),
    "report/text-oversize": Case(lambda r: (r.lm / "generated.txt").write_text(SECRET * 500_000), report, 0,
                                 "at most 5,242,880 are read"),
    "report/svg-with-active-content": Case(lambda r: (r.toy / "decision_boundary.svg").write_text(ACTIVE_SVG),
                                           report, 0),
    "report/svg-with-an-external-entity": Case(lambda r: (r.toy / "decision_boundary.svg").write_text(
        ENTITY_SVG.format(secret=r.outside / "notes.txt")), report, 0),
    "report/png-that-is-an-svg": Case(lambda r: png_that_is_an_svg(r.toy), report, 0, "not a PNG file"),
    "report/fifo-figure": Case(lambda r: fifo_figure(r.toy), report, 0, "not a regular file", subprocess=True),
    # runs show: the row is shown; the listing never goes through a link
    "runs-show/run-folder-is-a-link": Case(lambda r: link_run_folder(r.toy, r.outside),
                                           lambda r: ["runs", "show", r.toy_id, "--store", r.url], 0,
                                           "refused: a symbolic link"),
    # commands that asked for the file: one line, exit 2
    "generate/run-folder-is-a-link": Case(lambda r: link_run_folder(r.lm, r.outside), generate, 2,
                                          "refused: a symbolic link"),
    "generate/vocabulary-links-out": Case(lambda r: secret_vocabulary(r.lm, r.outside), generate, 2,
                                          "vocab.txt: refused: a symbolic link"),
    "generate/checkpoint-links-out": Case(lambda r: link_checkpoint(r.lm, r.outside), generate, 2,
                                          "refused: a symbolic link"),
    "generate/fifo-vocabulary": Case(lambda r: fifo(r.lm / "vocab.txt"), generate, 2, "not a regular file",
                                     subprocess=True),
    "attention/checkpoints-folder-links-out": Case(
        lambda r: link_checkpoints_folder(r.lm, r.outside),
        lambda r: ["attention", r.lm_id, "--text", "the cat", "--out", str(r.out / "a.svg"), "--store", r.url], 2,
        "'checkpoints': a symbolic link"),
    "compare/checkpoint-links-out": Case(lambda r: link_checkpoint(r.toy, r.outside),
                                         lambda r: ["compare", r.toy_id, r.toy_id, "--store", r.url], 2,
                                         "refused: a symbolic link"),
}


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("name", CASES)
def test_a_hostile_run_folder_never_reaches_the_users_files(name, runs: Runs):
    case = CASES[name]
    case.tamper(runs)
    code, stdout, stderr = _invoke(case.command(runs), in_subprocess=case.subprocess)
    assert code == case.exit_code, stdout + stderr
    assert "Traceback" not in stdout + stderr and SECRET not in stdout + stderr
    if case.exit_code == 2:
        assert len(stderr.strip().splitlines()) == 1 and case.says in stderr, stderr
        return
    written = _written(runs.out)
    assert case.says in stderr + "".join(written.values()), stderr
    for path, text in written.items():
        assert SECRET not in text, path
        assert not ACTIVE.search(text), f"{path}: {ACTIVE.search(text).group()}"


def test_runs_show_lists_no_file_through_a_link(runs: Runs):
    link(runs.toy / "decision_boundary.svg", runs.outside / "figure.svg")
    fifo(runs.toy / "decision_boundary.png")
    code, stdout, _ = _invoke(["runs", "show", runs.toy_id, "--store", runs.url])
    assert code == 0 and '"checkpoints/epoch_002.pt"' in stdout
    assert "decision_boundary.svg" not in stdout and "decision_boundary.png" not in stdout


def test_a_cleaned_svg_keeps_its_drawing(runs: Runs):
    """A hostile SVG loses its active parts only; the report still shows the figure, as an image."""
    (runs.toy / "decision_boundary.svg").write_text(ACTIVE_SVG)
    code, *_ = _invoke(runs.report())
    figure = runs.out / "figures" / "hostile_toy-01-boundary-mlp.svg"
    assert code == 0 and figure.is_file()
    assert '<rect width="40" height="40" fill="#3b528b" />' in figure.read_text()


@pytest.mark.parametrize("name", ["decision_boundary.svg", "attention.svg"])
def test_sweeplabs_own_svg_figures_pass_the_cleaner_whole(name, swept):
    """matplotlib's SVG (what runs write) keeps every drawing element: only its RDF metadata goes."""
    root, *_ = swept
    original = next((root / "pristine").glob(f"*/{name}")).read_bytes()
    before, after = _elements(original), _elements(clean_svg(original))
    drawing = ("path", "image", "use", "g", "clipPath", "defs", "style", "rect", "text")
    assert {t: after[t] for t in drawing} == {t: before[t] for t in drawing} and before["path"] and before["use"]
    assert set(before) - set(after) <= {"metadata", "RDF", "Work", "type", "date", "format", "creator", "Agent",
                                        "title"}


def test_the_report_embeds_the_runs_own_figures(runs: Runs):
    code, *_ = _invoke(runs.report())
    html = (runs.out / "index.html").read_text()
    assert code == 0 and html.count('src="data:image/svg+xml;base64,') == 2  # boundary and attention
    assert "<h4>TF</h4>" in html  # the generated text


def test_untampered_runs_still_load(runs: Runs):
    """What every command reads goes through the checks, and a run's own files pass them."""
    code, stdout, stderr = _invoke(generate(runs))
    assert code == 0 and len(stdout.split()) >= 5, stderr
    code, stdout, stderr = _invoke(["compare", runs.toy_id, runs.toy_id, "--json", "--store", runs.url])
    assert code == 0 and '"agreement": 1.0' in stdout, stderr


@pytest.mark.parametrize("args, says", [
    (["attention", "nosuch", "--text", " ".join(["the"] * 129)],
     "--text: 129 words, more than the limit of 128; to allow more, use SWEEPLAB_MAX_ATTENTION_WORDS=N"),
    (["generate", "nosuch", "--words", "10001"],
     "--words: 10,001 words, more than the limit of 10,000; to allow more, use SWEEPLAB_MAX_GENERATE_WORDS=N"),
    (["generate", "nosuch", "--prompt", " ".join(["the"] * 513)],
     "--prompt: 513 words, more than the limit of 512: the context a Transformer reads"),
])
def test_text_given_to_a_command_is_bounded_before_any_work(args, says, store_url):
    """The limit is checked first: the run is not even looked up (it does not exist)."""
    code, _, stderr = _invoke([*args, "--store", store_url])
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and says in stderr, stderr


def test_the_attention_cap_is_raised_by_environment(store_url, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_MAX_ATTENTION_WORDS", "200")
    code, _, stderr = _invoke(["attention", "nosuch", "--text", " ".join(["the"] * 129), "--store", store_url])
    assert code == 2 and "run 'nosuch' not found" in stderr, stderr  # past the cap: on to the run


# ---------------------------------------------------------------------------------------- helpers
def _invoke(args: list[str], *, in_subprocess: bool = False) -> tuple[int, str, str]:
    if not in_subprocess:
        result = CliRunner().invoke(app, args)
        return result.exit_code, result.stdout, result.stderr
    try:
        done = subprocess.run([sys.executable, "-m", "sweeplab", *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sweeplab {args[0]} still running after {TIMEOUT_S} s: it waits on a FIFO")
    return done.returncode, done.stdout, done.stderr


def _written(folder: Path) -> dict[Path, str]:
    """Every file the report wrote, as text, with the images the HTML carries as data URIs decoded too."""
    texts = {p: p.read_bytes().decode("utf8", errors="replace") for p in folder.rglob("*") if p.is_file()}
    html = texts.get(folder / "index.html", "")
    for i, data in enumerate(re.findall(r"data:image/[\w+]+;base64,([A-Za-z0-9+/=]+)", html)):
        texts[folder / f"index.html#image{i}"] = base64.b64decode(data).decode("utf8", errors="replace")
    return texts


def _elements(svg: bytes) -> collections.Counter:
    root = ET.fromstring(svg[svg.find(b"<svg"):])
    return collections.Counter(element.tag.rpartition("}")[2] for element in root.iter())
