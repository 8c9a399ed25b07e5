"""What one report holds, shared by the HTML and Markdown writers."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from sweeplab.report.analysis import Sentence
from sweeplab.report.collect import CellData
from sweeplab.report.figures import Block
from sweeplab.report.questions import Answer
from sweeplab.report.setup import Setup
from sweeplab.report.spec import ReportSpec
from sweeplab.report.tables import ResultTable
from sweeplab.report.values import plural


@dataclass
class ExperimentReport:
    spec: ReportSpec
    cells: list[CellData]
    table: ResultTable
    blocks: list[Block]  # figures, images, text samples and notes, in the experiment's figure order
    analysis: list[Sentence]
    answers: list[Answer] = field(default_factory=list)  # the experiment's questions, answered; the first is the main
    pivots: list[ResultTable] = field(default_factory=list)  # a grid tabulated rows × the varied setting
    setup: Setup = field(default_factory=Setup)

    def cell_states(self) -> str:
        """`9 of 11 cells finished, 1 running, 1 not run`: by the least finished run of each cell."""
        states = []
        for cell in self.cells:
            statuses = [run.row.status for run in cell.runs]
            if not statuses:
                states.append("not run")
            elif all(s in ("finished", "imported") for s in statuses):
                states.append("finished" if len(statuses) >= self.spec.seeds else "short of seeds")
            else:
                states.append(next(s for s in statuses if s not in ("finished", "imported")))
        counts = Counter(states)
        done = counts.pop("finished", 0)
        rest = ", ".join(f"{n} {state}" for state, n in counts.most_common())
        return f"{done} of {plural(len(self.cells), 'cell')} finished" + (f", {rest}" if rest else "")

    def summary_line(self) -> str:
        """The main question's answer and the state of the cells (reduced scale said), for the top."""
        scale = f" at scale {self.spec.scale} ({self.spec.scale_note})" if self.spec.scale else ""
        states = self.cell_states() + scale + "."
        if not self.answers:
            return states
        main = self.answers[0]
        return f"{main.ask} {main.headline} {states}"

    def status_counts(self) -> Counter[str]:
        return Counter(run.row.status for cell in self.cells for run in cell.runs)

    def meta_line(self) -> str:
        counts = self.status_counts()
        runs = sum(counts.values())
        states = ", ".join(f"{n} {status}" for status, n in counts.most_common())
        parts = [f"sweep {self.spec.name}", f"task {self.spec.task or 'unknown'}"]
        if self.spec.scale:
            parts.append(f"scale {self.spec.scale}")
        parts.append(f"{plural(len(self.cells), 'cell')}, {plural(runs, 'run')}" + (f" ({states})" if states else ""))
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
