"""`sweeplab report`: experiments -> index.html, report.md and figures/, from the run store only."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sweeplab import io
from sweeplab.errors import UserError, no_space_message
from sweeplab.report.analysis import analyse
from sweeplab.report.collect import collect
from sweeplab.report.figures import ImageBlock, SvgBlock, create_blocks
from sweeplab.report.html import render_html
from sweeplab.report.latex import render_latex
from sweeplab.report.markdown import render_markdown
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.pdf import print_pdf
from sweeplab.report.questions import answer_questions
from sweeplab.report.selection import selection_note
from sweeplab.report.setup import describe_setup
from sweeplab.report.spec import ReportSpec, directions, load_target
from sweeplab.report.tables import build_pivots, build_table, common_note, default_columns
from sweeplab.report.values import declared_directions
from sweeplab.store import Store
from sweeplab.store.db import redact

NOT_RUN = "not run: no stored run"
FIGURES_MANIFEST = ".sweeplab-figures"  # in figures/: the files the last report wrote there, one name a line


@dataclass(frozen=True)
class Written:
    pages: list[Path]  # index.html and report.md (and report.pdf), or report.tex
    figures: list[Path]


def build_experiment(spec: ReportSpec, store: Store) -> ExperimentReport:
    with declared_directions(directions(spec)):  # what is ranked, bolded and compared: declared, never guessed
        return _build_experiment(spec, store)


def _build_experiment(spec: ReportSpec, store: Store) -> ExperimentReport:
    cells = collect(spec, store)
    for cell in cells:
        if not cell.runs:
            cell.extra["not_run"] = not_run_reason(spec, cell.label)
    columns = spec.columns or default_columns(cells)
    note = common_note(cells)
    table = build_table(spec, cells, columns, note)
    selection = selection_note(cells)
    if selection:  # which split chose the checkpoints the numbers come from
        table.caption += f" — {selection}"
    words = spec.labels.text  # the sentences name variants, axes and values as people read them
    analysis = [replace(s, text=words(s.text)) for s in analyse(spec, cells, columns, note)]
    answers = [replace(a, text=words(a.text)) for a in answer_questions(spec, cells, columns)]
    setup = describe_setup(cells)
    setup.models = [replace(m, row=spec.labels.cell(m.row)) for m in setup.models]
    setup.timing = [words(line) for line in setup.timing]
    return ExperimentReport(spec, cells, table, create_blocks(spec, cells), analysis, answers,
                            build_pivots(spec, cells, columns), setup)


# html: index.html and report.md; pdf: those and report.pdf, printed by Chromium; latex: report.tex, tables/*.tex,
# figures as PDF
FORMATS = ("html", "pdf", "latex")


def write_report(targets: Iterable[str], store: Store, out_dir: Path, fmt: str = "html") -> Written:
    """Read every target first (a bad one fails before anything is written), then write the report."""
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not accepted; accepted: {', '.join(FORMATS)}")
    check_out_dir(out_dir)
    specs: dict[str, ReportSpec] = {}
    for target in targets:
        spec = load_target(target, store)
        specs.setdefault(spec.name, spec)  # the same experiment named twice is reported once
    reports = [build_experiment(spec, store) for spec in specs.values()]
    meta = ReportMeta(redact(store.url), time.time(), _version())
    writer = _Writer()
    try:
        writer.made = io.make_folders(out_dir / "figures")
        figures = write_figures(reports, out_dir / "figures", writer, pdf=fmt == "latex")
        if fmt == "latex":
            main, fragments = render_latex(reports, meta)
            writer.made = io.make_folders(out_dir / "tables") + writer.made
            for name, text in fragments.items():
                writer.write(out_dir / "tables" / name, text.encode("utf8"))
            pages = {out_dir / "report.tex": main}
        else:
            pages = {out_dir / "index.html": render_html(reports, meta), out_dir / "report.md": render_markdown(reports, meta)}
        for path, text in pages.items():
            writer.write(path, text.encode("utf8"))
        if fmt == "pdf":  # the page as printed: written once index.html is there to print
            pdf = out_dir / "report.pdf"
            writer.write(pdf, print_pdf(out_dir / "index.html"))
            pages[pdf] = ""
    except UserError:  # Chromium missing or failing: no half report stays
        writer.undo()
        raise
    except OSError as exc:  # permissions, a full disk: the user's to fix, so one line naming the file
        writer.undo()
        raise UserError(no_space_message(exc) or
                        f"report: cannot write {exc.filename or out_dir}: {exc.strerror or type(exc).__name__}") from None
    return Written(list(pages), figures)


class _Writer:
    """Writes the report's files atomically and remembers what it added, so that a report that cannot be
    finished (a full disk) takes back its new files and folders: no half report is left to be read as whole."""

    def __init__(self) -> None:
        self.made: list[Path] = []  # folders created for this report, deepest first
        self.added: list[Path] = []  # files that did not exist before

    def write(self, path: Path, data: bytes) -> None:
        new = not path.exists()
        io.write_bytes(path, data)
        if new:
            self.added.append(path)

    def undo(self) -> None:
        for path in self.added:
            path.unlink(missing_ok=True)
        for folder in self.made:
            with contextlib.suppress(OSError):  # not empty: files of an earlier report stay
                folder.rmdir()


def check_out_dir(out_dir: Path) -> None:
    """--out is a folder (existing or not): a file there, or on the way there, fails before any work."""
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker == out_dir:
        raise UserError(f"report: --out {out_dir} is a file; --out names a folder for index.html, report.md "
                        "and figures/")
    if blocker is not None:
        raise UserError(f"report: cannot make the folder --out {out_dir}: {blocker} is a file, not a folder")


def write_figures(reports: list[ExperimentReport], folder: Path, writer: _Writer, *, pdf: bool = False) -> list[Path]:
    """figures/ gets this report's figures: the drawn ones as SVG, PNG and PDF (`pdf`: PDF only, for LaTeX), a run's own as
    it wrote them; an earlier report's figures that this one no longer draws are removed. Only files a report wrote
    (listed in the manifest) are ever removed: others are the user's."""
    written = [path for report in reports for block in report.blocks
               if isinstance(block, SvgBlock | ImageBlock) and not (pdf and getattr(block, "figure", None) is None)
               for path in _write_figure(block, folder, writer, pdf)]
    names = {p.name for p in written}
    for stale in _manifest(folder) - names:
        (folder / stale).unlink(missing_ok=True)
    writer.write(folder / FIGURES_MANIFEST, "".join(f"{name}\n" for name in sorted(names)).encode("utf8"))
    return written


def _write_figure(block: SvgBlock | ImageBlock, folder: Path, writer: _Writer, pdf: bool) -> list[Path]:
    if pdf:
        files = {f"{block.name}.pdf": block.pdf()}
    elif isinstance(block, SvgBlock):
        files = {f"{block.name}.svg": ('<?xml version="1.0" encoding="utf-8"?>\n' + block.svg).encode("utf8"),
                 f"{block.name}.png": block.png(), f"{block.name}.pdf": block.pdf()}
    else:
        files = {f"{block.name}{block.suffix}": block.data}
    for name, data in files.items():
        writer.write(folder / name, data)
    return [folder / name for name in files]


def _manifest(folder: Path) -> set[str]:
    """Names of the figures the last report wrote; only plain .svg/.png/.pdf names in this folder are trusted."""
    manifest = folder / FIGURES_MANIFEST
    if not manifest.is_file():
        return set()
    try:
        lines = manifest.read_text(encoding="utf8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()  # a damaged manifest: keep every file rather than guess
    return {n for n in lines if n == Path(n).name and not n.startswith(".") and n.endswith((".svg", ".png", ".pdf"))}


def not_run_reason(spec: ReportSpec, label: str) -> str:
    """The planner's word on a cell it did not run, when the stored plan has one."""
    reason = _plan_reason(spec.plan, label)
    return f"not run: {reason}" if reason else NOT_RUN


def _plan_reason(node: Any, label: str) -> str | None:
    if isinstance(node, dict):
        if label in (node.get("cell"), node.get("label")):
            if isinstance(node.get("error"), str) and node["error"]:  # the planner's calibration run failed
                return f"calibration failed: {node['error']}"
            text = node.get("reason") or node.get("skip")
            if isinstance(text, str) and text:
                return text
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _plan_reason(child, label)
        if found:
            return found
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweeplab")
    except PackageNotFoundError:
        return "unknown"


def default_out_dir(targets: list[str]) -> Path:
    """reports/NAME for one experiment (its file's stem or the sweep name), reports/combined for several."""
    names = list(dict.fromkeys(Path(t).stem if t.endswith((".yaml", ".yml")) else t for t in targets))
    return Path("reports") / (names[0] if len(names) == 1 else "combined")
