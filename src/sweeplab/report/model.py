"""What one report holds, shared by the HTML and Markdown writers."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from sweeplab.report.analysis import Sentence
from sweeplab.report.collect import CellData
from sweeplab.report.figures import Block
from sweeplab.report.spec import ReportSpec
from sweeplab.report.tables import ResultTable


@dataclass
class ExperimentReport:
    spec: ReportSpec
    cells: list[CellData]
    table: ResultTable
    blocks: list[Block]  # figures, images, text samples and notes, in the experiment's figure order
    analysis: list[Sentence]

    def status_counts(self) -> Counter[str]:
        return Counter(run.row.status for cell in self.cells for run in cell.runs)

    def meta_line(self) -> str:
        counts = self.status_counts()
        runs = sum(counts.values())
        states = ", ".join(f"{n} {status}" for status, n in counts.most_common())
        parts = [f"sweep {self.spec.name}", f"task {self.spec.task or 'unknown'}"]
        if self.spec.scale:
            parts.append(f"scale {self.spec.scale}")
        parts.append(f"{len(self.cells)} cells, {runs} runs" + (f" ({states})" if states else ""))
        parts.append(f"experiment read from {self.spec.source}")
        return " · ".join(parts)


@dataclass(frozen=True)
class ReportMeta:
    store: str  # the store URL, password removed
    generated_at: float
    version: str

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.generated_at))
        return f"Generated {when} by sweeplab {self.version} from the run store {self.store} (stored runs only)."
