"""report.tex: the report as LaTeX a student hands in, from the same report model as the HTML and Markdown.

`sweeplab report ... --format latex --out DIR` writes DIR/report.tex (compiles with pdflatex), one booktabs
fragment per table under DIR/tables/ (`\\input{tables/NAME.tex}` pastes it into one's own report; it needs
`\\usepackage{booktabs}`), and the report's figures as PDF under DIR/figures/. Every text that comes from runs,
experiment files or users goes through `tex()`, the one escaping filter: it stays text, never a command.
"""
from __future__ import annotations

import re

from sweeplab.report.figures import ImageBlock, NoteBlock, SvgBlock, TextBlock, slug
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.tables import ResultTable, TableCell

_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
            "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"\ensuremath{\pm}", "×": r"\ensuremath{\times}",
            "−": r"\ensuremath{-}", "—": "---", "–": "--", "…": r"\ldots{}", "·": r"\ensuremath{\cdot}",
            "≥": r"\ensuremath{\geq}", "≤": r"\ensuremath{\leq}", "→": r"\ensuremath{\rightarrow}",
            "≈": r"\ensuremath{\approx}", "’": "'", "‘": "`", "“": "``", "”": "''"}
WIDE = 6  # tables of more columns are scaled to the text width


def tex(text: object) -> str:
    """Any text as LaTeX that prints it: specials escaped, typographic signs as their commands, control
    characters as spaces, and characters pdflatex's default fonts lack as `?`."""
    out = []
    for char in str(text):
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
        elif char < " " or "\x7f" <= char < "\xa0":
            out.append(" ")
        elif char > "\xff":
            out.append("?")
        else:
            out.append(char)
    return "".join(out)


def render_latex(reports: list[ExperimentReport], meta: ReportMeta) -> tuple[str, dict[str, str]]:
    """(report.tex, {fragment file name: booktabs table}); figures are written from the blocks' PDF."""
    fragments: dict[str, str] = {}
    body = [r"\section*{Summary}", r"\begin{itemize}"]
    body += [rf"\item \textbf{{{tex(r.spec.title)}}}: {tex(r.summary_line())}" for r in reports]
    body += [r"\end{itemize}"]
    for report in reports:
        body += render_experiment(report, fragments)
    return PREAMBLE + "\n".join([rf"{{\small {tex(meta.line())}}}", "", *body, r"\end{document}", ""]), fragments


PREAMBLE = r"""\documentclass[a4paper,10pt]{article}
\usepackage[utf8]{inputenc}
\usepackage[margin=2cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{float}
\title{sweeplab report}
\date{}
\begin{document}
\maketitle
"""


def render_experiment(report: ExperimentReport, fragments: dict[str, str]) -> list[str]:
    lines = [rf"\section{{{tex(report.spec.title)}}}", rf"{{\small {tex(report.meta_line())}}}", ""]
    if report.answers:
        lines += [r"\subsection*{Questions}", r"\begin{itemize}"]
        lines += [rf"\item \textbf{{{tex(a.ask)}}} {tex(a.text)}" for a in report.answers] + [r"\end{itemize}"]
    lines += [r"\subsection*{Results}"]
    for number, table in enumerate(report.pivots or [report.table], start=1):  # each result once
        name = f"{slug(report.spec.name)}-table{number}"
        fragments[f"{name}.tex"] = render_table(table)
        lines += render_float(table, name)
    figures = [render_block(block) for block in report.blocks]
    if figures:
        lines += [r"\subsection*{Figures}", *[line for block in figures for line in block]]
    lines += render_setup(report)
    lines += [r"\subsection*{Per-run facts}", r"\begin{itemize}"]
    lines += [rf"\item \textbf{{{tex(s.topic)}.}} {tex(s.text)}" for s in report.analysis] or [r"\item No run to analyse."]
    return [*lines, r"\end{itemize}", ""]


def render_table(table: ResultTable) -> str:
    """A booktabs tabular: numbers right-aligned, the column's best in bold, a notes column as a paragraph."""
    columns = "l" + "r" * (len(table.header) - 1)
    if table.notes_column:
        columns = columns[:-1] + "p{5cm}"
    rows = [" & ".join(_cell(c) for c in row) + r" \\" for row in table.rows]
    return "\n".join([rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
                      " & ".join(tex(h) for h in table.header) + r" \\", r"\midrule", *rows, r"\bottomrule",
                      r"\end{tabular}", ""])


def render_float(table: ResultTable, name: str) -> list[str]:
    fragment = rf"\input{{tables/{name}.tex}}"
    if len(table.header) > WIDE:
        fragment = rf"\resizebox{{\linewidth}}{{!}}{{{fragment}}}"
    sources = "; ".join(f"[{i}] {tex(s)}" for i, s in enumerate(table.sources, start=1))
    return [r"\begin{table}[H]", r"\centering", rf"\caption{{{tex(table.caption)}}}", fragment,
            *([rf"\par\smallskip{{\footnotesize References: {sources}}}"] if sources else []), r"\end{table}", ""]


def _cell(cell: TableCell) -> str:
    """A cell's text (bold when best) and its references as a smaller second line."""
    text = rf"\textbf{{{tex(cell.text)}}}" if cell.best else tex(cell.text)
    if not cell.note:
        return text
    return rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}{text}\\ \footnotesize {tex(cell.note)}\end{{tabular}}"


def render_block(block: object) -> list[str]:
    if isinstance(block, SvgBlock) and block.figure is not None:
        return [r"\begin{figure}[H]", r"\centering",
                rf"\includegraphics[width=\linewidth,height=0.4\textheight,keepaspectratio]{{figures/{block.name}.pdf}}",
                rf"\caption{{{tex(block.caption)}}}", r"\end{figure}", ""]
    if isinstance(block, SvgBlock | ImageBlock):  # a run's own file: in the HTML report, not converted here
        return [rf"\paragraph{{{tex(block.caption)}}} In the HTML report (figures/{tex(block.name)})."]
    if isinstance(block, TextBlock):
        lines = [rf"\paragraph{{{tex(block.caption)}}}"]
        for whose, text in block.samples:
            lines += [rf"\emph{{{tex(whose)}}}\par", r"{\small\ttfamily " + _lines(text) + "}", ""]
        return lines
    if isinstance(block, NoteBlock):
        return [rf"\paragraph{{{tex(block.caption)}}} {tex(block.note)}"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_setup(report: ExperimentReport) -> list[str]:
    setup = report.setup
    if not any(cell.runs for cell in report.cells):
        return []
    lines = [r"\subsection*{Setup}", r"\begin{itemize}"]
    for title, items in (("Data", setup.data), ("Settings that vary", setup.varied),
                         ("Settings every run shares", [", ".join(setup.fixed)] if setup.fixed else []),
                         ("Hardware and software", setup.hardware), ("Time per run", setup.timing)):
        lines += [rf"\item \textbf{{{title}}}: {tex('; '.join(items))}"] if items else []
    return [*lines, r"\end{itemize}", ""]


def _lines(text: str) -> str:
    """Generated text, line by line, wrapped where TeX wraps (a word of it cannot run off the page)."""
    return r"\\ ".join(tex(line) for line in re.split(r"\r?\n", text.strip()) if line.strip())
