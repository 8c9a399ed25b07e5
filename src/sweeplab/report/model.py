"""What one report holds, and the sections every view of it shows, in order.

The HTML, Markdown and LaTeX views render `ExperimentReport.sections()` through one template macro per section
kind (`Items`, `Tables`, `Figures`, `Definitions`): a new section of an existing kind is one entry in
`sections()`, and all three views show it.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from sweeplab.report.analysis import Sentence
from sweeplab.report.collect import CellData
from sweeplab.report.figures import Block, ImageBlock, NoteBlock, SvgBlock, TextBlock, slug
from sweeplab.report.questions import Answer
from sweeplab.report.setup import ModelFacts, Setup
from sweeplab.report.spec import ReportSpec
from sweeplab.report.tables import ResultTable, TableCell
from sweeplab.report.values import plural


# ------------------------------------------------------------------------------------- section kinds
@dataclass(frozen=True)
class Item:
    topic: str  # a question, or a fact's topic with its full stop (`Best.`)
    text: str
    muted: bool = False  # said in a quieter voice: a question not answered yet


@dataclass(frozen=True)
class Items:
    """Topics, each with its text: the questions and their answers, the per-run facts."""

    title: str
    items: list[Item]
    empty: str = ""  # said instead when there is no item
    questions: bool = False  # each topic is a question its text answers (HTML sets it above the answer)
    kind: ClassVar[str] = "items"


@dataclass(frozen=True)
class NamedTable:
    name: str  # unique in the report: the file stem of the LaTeX fragment (tables/NAME.tex)
    table: ResultTable


@dataclass(frozen=True)
class Tables:
    title: str
    tables: list[NamedTable]
    folded: ResultTable | None = None  # HTML only, collapsed: the flat table behind pivots that hold every result
    folded_title: str = "Every cell, with notes"
    kind: ClassVar[str] = "tables"


@dataclass(frozen=True)
class Figures:
    title: str
    blocks: list[Block]  # figures, images, text samples and notes: a view renders each by its `block_kind`
    kind: ClassVar[str] = "blocks"


@dataclass(frozen=True)
class Term:
    name: str
    lines: list[str]
    folded: bool = False  # long and rarely read: HTML collapses it


@dataclass(frozen=True)
class Definitions:
    """Named facts, each a line or a few, and a table beside them: the setup."""

    title: str
    terms: list[Term]
    table: ResultTable | None = None
    kind: ClassVar[str] = "definitions"


Section = Items | Tables | Figures | Definitions
BLOCK_KINDS = {SvgBlock: "drawing", ImageBlock: "image", TextBlock: "text", NoteBlock: "note"}


def block_kind(block: Block) -> str:
    """drawing (drawn by the report), image (a run's own file), text (generated samples) or note (why none)."""
    try:
        return BLOCK_KINDS[type(block)]
    except KeyError:
        raise TypeError(f"unknown report block {type(block).__name__}") from None


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

    @property
    def key(self) -> str:
        """The experiment's name as it appears in an anchor or a file name."""
        return slug(self.spec.name)

    def sections(self) -> list[Section]:
        """What every view shows under the experiment's title and meta line, in order; a section with nothing to
        show is left out, except the facts, which say that there is no run to analyse."""
        sections: list[Section] = []
        if self.answers:
            sections.append(Items("Questions", [Item(a.ask, a.text, muted=not a.answered) for a in self.answers],
                                  questions=True))
        sections.append(self.results())
        if self.blocks:
            sections.append(Figures("Figures", self.blocks))
        if any(cell.runs for cell in self.cells):
            sections.append(Definitions("Setup", setup_terms(self.setup), models_table(self.setup.models)))
        sections.append(Items("Per-run facts", [Item(f"{s.topic}.", s.text) for s in self.analysis],
                              empty="No run to analyse."))
        return sections

    def results(self) -> Tables:
        """Each result once: a grid's pivots (the flat table folded away in HTML), or the table itself."""
        shown = self.pivots or [self.table]
        named = [NamedTable(f"{self.key}-table{n}", table) for n, table in enumerate(shown, start=1)]
        return Tables("Results", named, folded=self.table if self.pivots else None)

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


def setup_terms(setup: Setup) -> list[Term]:
    """Data preparation and technical details, generated from the runs; what is not known is said."""
    terms = [Term("Data", setup.data or ["not rebuilt here (see the models below)"]),
             Term("Settings that vary", setup.varied or ["none: every run has the same settings"])]
    if setup.fixed:
        terms.append(Term(f"Settings every run shares ({len(setup.fixed)})", [", ".join(setup.fixed)], folded=True))
    terms += [Term(name, lines) for name, lines in (("Hardware and software", setup.hardware),
                                                    ("Time per run", setup.timing)) if lines]
    return terms


def models_table(models: list[ModelFacts]) -> ResultTable | None:
    """Each configuration's model; its layers, a long text, are the last column (left-aligned, wrapped in LaTeX)."""
    if not models:
        return None
    rows = [[TableCell(m.row), TableCell(m.params), TableCell(m.layers)] for m in models]
    return ResultTable("Each model: the trainable parameters the run recorded and its top-level layers (parameters)",
                       ["Configuration", "Trainable params", "Layers"], rows, notes_column=True)
