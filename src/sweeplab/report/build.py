"""`sweeplab report`: experiments -> index.html, report.md and figures/, from the run store only."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeplab.report.analysis import analyse
from sweeplab.report.collect import collect
from sweeplab.report.figures import ImageBlock, SvgBlock, create_blocks
from sweeplab.report.html import render_html
from sweeplab.report.markdown import render_markdown
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.spec import ReportSpec, load_target
from sweeplab.report.tables import build_table, common_note, default_columns
from sweeplab.store import Store
from sweeplab.store.db import redact

NOT_RUN = "not run: no stored run"


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
    return ExperimentReport(spec, cells, build_table(spec, cells, columns, note), create_blocks(spec, cells),
                            analyse(spec, cells, columns, note))


def write_report(targets: Iterable[str], store: Store, out_dir: Path) -> Written:
    """Read every target first (a bad one fails before anything is written), then write the report."""
    specs: dict[str, ReportSpec] = {}
    for target in targets:
        spec = load_target(target, store)
        specs.setdefault(spec.name, spec)  # the same experiment named twice is reported once
    reports = [build_experiment(spec, store) for spec in specs.values()]
    meta = ReportMeta(redact(store.url), time.time(), _version())
    figures = write_figures(reports, out_dir / "figures")
    html, markdown = out_dir / "index.html", out_dir / "report.md"
    html.write_text(render_html(reports, meta), encoding="utf8")
    markdown.write_text(render_markdown(reports, meta), encoding="utf8")
    return Written(html, markdown, figures)


def write_figures(reports: list[ExperimentReport], folder: Path) -> list[Path]:
    """figures/ holds this report's figures only: files of an earlier report are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        if old.is_file() and old.suffix in (".svg", ".png"):
            old.unlink()
    written = []
    for report in reports:
        for block in report.blocks:
            if isinstance(block, SvgBlock):
                path = folder / f"{block.name}.svg"
                path.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + block.svg, encoding="utf8")
            elif isinstance(block, ImageBlock):
                path = folder / f"{block.name}{block.suffix}"
                path.write_bytes(block.data)
            else:
                continue
            written.append(path)
    return written


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
