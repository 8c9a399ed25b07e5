"""The results tables of an experiment, shaped like the course's.

The full table has a row per cell and a column per `columns:` entry, a reason in every gap. A grid
(variants against an axis, or two or more axes) is also pivoted as the course reports tabulate it: rows
are the variants (or the first axes), columns the values of the last axis, one table per metric. Numbers
a named source reports (`references:`) stand beside ours, with the difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sweeplab.experiment import Reference
from sweeplab.report.collect import CellData, origin
from sweeplab.report.spec import Column, ReportSpec, cell_key, measured
from sweeplab.report.values import (
    CellValue,
    cell_value,
    direction,
    ended_value,
    fmt_cell,
    integral,
    label_value,
    label_without,
    shown,
    status_reason,
)

ROW_TITLE = "Configuration"


@dataclass(frozen=True)
class TableCell:
    text: str
    best: bool = False  # the best value of its column (bold)
    missing: bool = False  # a reason stands where a number would
    note: str = ""  # a second, smaller line: the references of the cell and ours minus each


@dataclass
class ResultTable:
    caption: str
    header: list[str]
    rows: list[list[TableCell]]  # first cell of a row: the cell label
    notes_column: bool = False  # the last column holds notes (reductions, reasons), not numbers
    sources: list[str] = field(default_factory=list)  # where the reference values come from, numbered [1], [2]...


def find_references(refs: list[Reference], label: str, column: Column) -> list[Reference]:
    """Every reference for a cell (by its label, or its variant's name: every grid point of it) and column,
    one per source."""
    def names_cell(ref: Reference) -> bool:
        return cell_key(ref.row) == cell_key(label) or label.partition(",")[0] == ref.row

    return [r for r in refs if names_cell(r) and r.column in (column.title, column.metric)]


def reference_note(refs: list[Reference], ours: CellValue, sources: list[str], spec: ReportSpec, metric: str) -> str:
    """The second line of a cell with references, one clause each: `reference 120.94 [1], ours − reference -2.94`.
    Nothing is subtracted from a number the scale does not measure, nor from a reference measured at other
    settings (it says which); an empty cell in the source is said when the source says why (else its source is
    listed under the table, and the cell stays quiet)."""
    return "; ".join(filter(None, (_reference_clause(ref, ours, sources, spec, metric) for ref in refs)))


def _reference_clause(ref: Reference, ours: CellValue, sources: list[str], spec: ReportSpec, metric: str) -> str:
    if ref.source not in sources:
        sources.append(ref.source)
    mark = f"[{sources.index(ref.source) + 1}]"
    if ref.value is None:
        return f"{mark} gives no number: {ref.note}" if ref.note else ""
    note = f" ({ref.note})" if ref.note else ""
    theirs = f"{int(ref.value):,}" if ref.value == int(ref.value) else f"{ref.value:,}"  # as the source prints it
    clause = f"reference {theirs} {mark}{note}"
    if ref.settings:
        return f"{clause}, at {ref.settings}: not subtracted"
    if not measured(spec, metric):
        return f"{clause}, not subtracted: scale {spec.scale} does not measure it"
    if ours.mean is None:
        return clause
    counts = ours.mean == int(ours.mean) and ref.value == int(ref.value)  # steps, params: whole numbers
    return f"{clause}, ours − reference {ours.mean - ref.value:+,.{0 if counts else 2}f}"


def build_table(spec: ReportSpec, cells: list[CellData], columns: list[Column], common_note: str | None) -> ResultTable:
    values = {c: [cell_value(cell, c.metric, c.aggregate, c.epoch, spec.seeds, spec.convergence_threshold)
                  for cell in cells] for c in columns}
    best = {c: best_rows(spec, c.metric, values[c]) for c in columns}
    counts = {c: integral(c.metric, values[c]) for c in columns}
    notes = [row_notes(cell, common_note, spec.seeds) for cell in cells]
    refs, sources = spec.references, []
    with_notes = any(notes)
    axis = _single_axis(spec)
    rows = []
    for i, cell in enumerate(cells):
        value = label_value(cell.label, axis) if axis else None
        row = [TableCell(spec.labels.cell(cell.label) if value is None else spec.labels.bare_value(axis, value))]
        for c in columns:
            cv = values[c][i]
            note = reference_note(find_references(refs, cell.label, c), cv, sources, spec, c.metric)
            row.append(TableCell(fmt_cell(cv, counts[c]), best=i in best[c], missing=not cv.has_value, note=note))
        if with_notes:
            row.append(TableCell(notes[i] or "—"))
        rows.append(row)
    header = [spec.labels.axis(axis) if axis else ROW_TITLE]
    header += [c.title for c in columns]
    header += ["Notes"] if with_notes else []
    return ResultTable(_caption(spec, common_note), header, rows, with_notes, sources)


def _single_axis(spec: ReportSpec) -> str | None:
    """A grid of one axis and no variants: rows are that axis's values, headed by its key."""
    return next(iter(spec.axes)) if len(spec.axes) == 1 and not spec.variants else None


# ---------------------------------------------------------------------------------------- pivots
def build_pivots(spec: ReportSpec, cells: list[CellData], columns: list[Column]) -> list[ResultTable]:
    """Variants against an axis, or two axes or more: a table per metric, rows × the last axis's values."""
    if not spec.axes or (len(spec.axes) < 2 and not spec.variants):
        return []
    axis = list(spec.axes)[-1]
    grid: dict[str, dict[str, CellData]] = {}
    for cell in cells:
        if cell.expected and label_value(cell.label, axis) is not None:
            grid.setdefault(label_without(cell.label, axis), {})[label_value(cell.label, axis)] = cell
    return [_pivot(spec, grid, axis, column) for column in columns]


def _pivot(spec: ReportSpec, grid: dict[str, dict[str, CellData]], axis: str, column: Column) -> ResultTable:
    refs, sources = spec.references, []
    values = {(row, x): cell_value(cell, column.metric, column.aggregate, column.epoch, spec.seeds,
                                   spec.convergence_threshold) for row, xs in grid.items() for x, cell in xs.items()}
    counts = integral(column.metric, list(values.values()))
    rows, order = [], list(grid)
    best = {x: best_rows(spec, column.metric, [values.get((row, x)) for row in order]) for x in spec.axes[axis]}
    for i, (row, xs) in enumerate(grid.items()):
        out = [TableCell(spec.labels.cell(row))]
        for x in spec.axes[axis]:
            cell, cv = xs.get(x), values.get((row, x))
            if cv is None:
                out.append(TableCell("not in the grid", missing=True))
                continue
            note = reference_note(find_references(refs, cell.label, column), cv, sources, spec, column.metric)
            out.append(TableCell(fmt_cell(cv, counts), best=i in best[x], missing=not cv.has_value, note=note))
        rows.append(out)
    row_title = "Variant" if spec.variants else ", ".join(spec.labels.axis(k) for k in list(spec.axes)[:-1])
    caption = f"{column.title} ({column.metric}, {column.aggregate}): {row_title.lower()} × {spec.labels.axis(axis)}"
    header = [row_title, *(spec.labels.value(axis, x) for x in spec.axes[axis])]
    return ResultTable(caption, header, rows, sources=sources)


def best_rows(spec: ReportSpec, metric: str, values: list[CellValue | None]) -> set[int]:
    """The bold rows of a column: the best mean as shown (all of them on a tie) among the rows that ended and
    learned, when the metric has a direction, the scale measures it, and two or more rows have ended values."""
    sign = direction(metric)
    scored = {i: shown(v.mean) * sign for i, v in enumerate(values) if v is not None and ended_value(v)}
    if not sign or not scored or not measured(spec, metric) or sum(v is not None and v.ended for v in values) < 2:
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
        if run in cell.extra.get("adopted", []):
            notes.append(f"{who}the same run, made by {origin(run.row)}")
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
