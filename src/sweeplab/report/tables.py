"""The results table of an experiment: a row per cell, a column per `columns:` entry, a reason in every gap."""
from __future__ import annotations

from dataclasses import dataclass

from sweeplab.report.collect import CellData
from sweeplab.report.spec import Column, ReportSpec
from sweeplab.report.values import CellValue, cell_value, direction, fmt_cell, integral, status_reason

ROW_TITLE = "Configuration"


@dataclass(frozen=True)
class TableCell:
    text: str
    best: bool = False  # the best value of its column (bold)
    missing: bool = False  # a reason stands where a number would


@dataclass
class ResultTable:
    caption: str
    header: list[str]
    rows: list[list[TableCell]]  # first cell of a row: the cell label
    notes_column: bool = False  # the last column holds notes (reductions, reasons), not numbers


def build_table(spec: ReportSpec, cells: list[CellData], columns: list[Column], common_note: str | None) -> ResultTable:
    values = {c: [cell_value(cell, c.metric, c.aggregate, c.epoch, spec.seeds) for cell in cells] for c in columns}
    best = {c: _best_index(c, values[c]) for c in columns}
    counts = {c: integral(c.metric, values[c]) for c in columns}
    notes = [row_notes(cell, common_note, spec.seeds) for cell in cells]
    with_notes = any(notes)
    rows = []
    for i, cell in enumerate(cells):
        row = [TableCell(cell.label)]
        for c in columns:
            cv = values[c][i]
            row.append(TableCell(fmt_cell(cv, counts[c]), best=i in best[c], missing=not cv.has_value))
        if with_notes:
            row.append(TableCell(notes[i] or "—"))
        rows.append(row)
    header = [ROW_TITLE, *(_header(c) for c in columns), *(["Notes"] if with_notes else [])]
    return ResultTable(_caption(spec, common_note), header, rows, with_notes)


def _header(column: Column) -> str:
    return column.title


def _best_index(column: Column, values: list[CellValue]) -> set[int]:
    """The rows with the best mean (all of them on a tie), when the metric has a direction and
    at least two rows have numbers."""
    sign = direction(column.metric)
    scored = {i: v.mean * sign for i, v in enumerate(values) if v.mean is not None}
    if not sign or len(scored) < 2:
        return set()
    top = max(scored.values())
    return {i for i, score in scored.items() if score == top}


def row_notes(cell: CellData, common_note: str | None, seeds: int = 1) -> str:
    """What the numbers of a row do not say: missing seeds, unfinished runs, reductions."""
    notes = []
    if not cell.expected:
        notes.append("not in the experiment's cells")
    if 0 < len(cell.runs) < seeds:
        notes.append(f"{seeds - len(cell.runs)} of {seeds} seeds not run")
    for run in cell.runs:
        who = f"seed {run.seed}: " if len(cell.runs) > 1 or seeds > 1 else ""
        if not run.done:
            notes.append(f"{who}{status_reason(run)}")
        if run.row.note and run.row.note != common_note:
            notes.append(f"{who}{run.row.note}")
        if run in cell.extra.get("stale", []):
            notes.append(f"{who}from an earlier sweep (another scale or budget)")
    return "; ".join(dict.fromkeys(notes))


def _caption(spec: ReportSpec, common_note: str | None) -> str:
    parts = [spec.title]
    if spec.scale:
        parts.append(f"scale {spec.scale}" + (f": {spec.scale_note}" if spec.scale_note else ""))
    if common_note and common_note != spec.scale_note:
        parts.append(f"every run: {common_note}")
    if spec.seeds > 1:
        parts.append(f"mean ± std over {spec.seeds} seeds")
    return " — ".join(parts)


def common_note(cells: list[CellData]) -> str | None:
    """The note every run shares (typically the scale's reduction), said once instead of per row."""
    notes = {run.row.note for cell in cells for run in cell.runs}
    return notes.pop() if len(notes) == 1 else None


def default_columns(cells: list[CellData]) -> list[Column]:
    """Without `columns:`: the final loss/ppl/accuracy of each split, ms/batch, and the parameter count."""
    keys: dict[str, None] = {}
    for cell in cells:
        for run in cell.runs:
            keys.update(dict.fromkeys(k for k in run.series if k.split("/")[0] in ("train", "valid", "test")))
    wanted = [k for split in ("train", "valid", "test") for k in keys
              if k.startswith(split + "/") and any(w in k.split("/")[1] for w in ("loss", "ppl", "acc"))]
    columns = [Column(title=k, metric=k) for k in wanted]
    if "train/ms_per_batch" in keys:
        columns.append(Column(title="ms/batch", metric="train/ms_per_batch", aggregate="mean"))
    if any("params" in run.summary for cell in cells for run in cell.runs):
        columns.append(Column(title="Trainable params", metric="params"))
    return columns
