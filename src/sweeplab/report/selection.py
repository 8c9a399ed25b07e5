"""Which split chose the checkpoints a table reports: said once, in the table's caption.

The trainer records the metric that picked a run's best epoch as `best/<metric>` (e.g. `best/valid/loss`,
logged at that epoch); the final splits (`test`) are scored once, with those weights.
"""
from __future__ import annotations

from sweeplab.report.collect import CellData

PREFIX = "best/"


def selection_note(cells: list[CellData]) -> str | None:
    """`checkpoints chosen by valid/loss (test scored once, with them)`, or None when no run records it."""
    chosen: dict[str, None] = {}
    unrecorded = 0
    for cell in cells:
        for run in cell.runs:
            keys = [k.removeprefix(PREFIX) for k in run.series if k.startswith(PREFIX)]
            chosen.update(dict.fromkeys(keys))
            unrecorded += run.done and not keys
    if not chosen:
        return None
    note = f"checkpoints chosen by {', '.join(chosen)}"
    if any(m.startswith("test/") for m in chosen):  # runs stored before every task had a valid split
        note += ": the test split, so test numbers are not held-out scores"
    else:
        note += " (test scored once, with them)"
    if unrecorded:
        note += f"; {unrecorded} finished run{'s' if unrecorded > 1 else ''} without a record of it"
    return note
