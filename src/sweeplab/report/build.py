"""`sweeplab report`: experiments -> index.html, report.md and figures/, from the run store only."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.report.analysis import analyse
from sweeplab.report.collect import collect
from sweeplab.report.figures import ImageBlock, SvgBlock, create_blocks
from sweeplab.report.html import render_html
from sweeplab.report.markdown import render_markdown
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.questions import answer_questions
from sweeplab.report.selection import selection_note
from sweeplab.report.setup import describe_setup
from sweeplab.report.spec import ReportSpec, load_target
from sweeplab.report.tables import build_pivots, build_table, common_note, default_columns
from sweeplab.store import Store
from sweeplab.store.db import redact

NOT_RUN = "not run: no stored run"
FIGURES_MANIFEST = ".sweeplab-figures"  # in figures/: the files the last report wrote there, one name a line


@dataclass(frozen=True)
class Written:
    html: Path
    markdown: Path
    figures: list[Path]


def build_experiment(spec: ReportSpec, store: Store) -> ExperimentReport:
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
    return ExperimentReport(spec, cells, table, create_blocks(spec, cells), analyse(spec, cells, columns, note),
                            answer_questions(spec, cells, columns), build_pivots(spec, cells, columns),
                            describe_setup(cells))


def write_report(targets: Iterable[str], store: Store, out_dir: Path) -> Written:
    """Read every target first (a bad one fails before anything is written), then write the report."""
    check_out_dir(out_dir)
    specs: dict[str, ReportSpec] = {}
    for target in targets:
        spec = load_target(target, store)
        specs.setdefault(spec.name, spec)  # the same experiment named twice is reported once
    reports = [build_experiment(spec, store) for spec in specs.values()]
    meta = ReportMeta(redact(store.url), time.time(), _version())
    html, markdown = out_dir / "index.html", out_dir / "report.md"
    try:
        figures = write_figures(reports, out_dir / "figures")
        html.write_text(render_html(reports, meta), encoding="utf8")
        markdown.write_text(render_markdown(reports, meta), encoding="utf8")
    except OSError as exc:  # permissions, a full disk: the user's to fix, so one line naming the file
        raise UserError(f"report: cannot write {exc.filename or out_dir}: {exc.strerror or type(exc).__name__}") from None
    return Written(html, markdown, figures)


def check_out_dir(out_dir: Path) -> None:
    """--out is a folder (existing or not): a file there, or on the way there, fails before any work."""
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocker == out_dir:
        raise UserError(f"report: --out {out_dir} is a file; --out names a folder for index.html, report.md "
                        "and figures/")
    if blocker is not None:
        raise UserError(f"report: cannot make the folder --out {out_dir}: {blocker} is a file, not a folder")


def write_figures(reports: list[ExperimentReport], folder: Path) -> list[Path]:
    """figures/ gets this report's figures; an earlier report's figures that this one no longer draws are
    removed. Only files a report wrote (listed in the manifest) are ever removed: others are the user's."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [_write_figure(block, folder) for report in reports for block in report.blocks
               if isinstance(block, SvgBlock | ImageBlock)]
    names = {p.name for p in written}
    for stale in _manifest(folder) - names:
        (folder / stale).unlink(missing_ok=True)
    (folder / FIGURES_MANIFEST).write_text("".join(f"{name}\n" for name in sorted(names)), encoding="utf8")
    return written


def _write_figure(block: SvgBlock | ImageBlock, folder: Path) -> Path:
    if isinstance(block, SvgBlock):
        path = folder / f"{block.name}.svg"
        path.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + block.svg, encoding="utf8")
    else:
        path = folder / f"{block.name}{block.suffix}"
        path.write_bytes(block.data)
    return path


def _manifest(folder: Path) -> set[str]:
    """Names of the figures the last report wrote; only plain .svg/.png names in this folder are trusted."""
    manifest = folder / FIGURES_MANIFEST
    if not manifest.is_file():
        return set()
    try:
        lines = manifest.read_text(encoding="utf8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()  # a damaged manifest: keep every file rather than guess
    return {n for n in lines if n == Path(n).name and not n.startswith(".") and n.endswith((".svg", ".png"))}


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
