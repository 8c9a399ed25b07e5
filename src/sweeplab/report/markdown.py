"""report.md: the same report as GitHub-flavoured Markdown, figures linked from figures/.

Markdown passes raw HTML through, so user text is HTML-escaped as well as Markdown-escaped: a run
named `<script>` stays text in any renderer.
"""
from __future__ import annotations

import re
from html import escape

from sweeplab.report.figures import ImageBlock, NoteBlock, SvgBlock, TextBlock
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.tables import ResultTable

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # what can start emphasis, code, links or cells anywhere in a line


def md(text: object) -> str:
    """User text, inert in Markdown: HTML-escaped, Markdown specials backslashed, on one line."""
    return _SPECIAL.sub(r"\\\1", escape(str(text), quote=False)).replace("\r", " ").replace("\n", " ")


def render_markdown(reports: list[ExperimentReport], meta: ReportMeta) -> str:
    lines = ["# sweeplab report", "", md(meta.line()), ""]
    lines += ["## Summary", ""] + [f"- **{md(r.spec.title)}**: {md(r.summary_line())}" for r in reports]
    for report in reports:
        lines += ["", *render_experiment(report)]
    return "\n".join(lines) + "\n"


def render_experiment(report: ExperimentReport) -> list[str]:
    lines = [f"## {md(report.spec.title)}", "", md(report.meta_line()), ""]
    if report.answers:
        lines += ["### Questions", ""] + [f"- **{md(a.ask)}** {md(a.text)}" for a in report.answers] + [""]
    lines += ["### Results", ""]
    for table in report.pivots:  # a grid's pivots hold every result (the HTML keeps the flat table, collapsed)
        lines += [*render_table(table), ""]
    if not report.pivots:
        lines += render_table(report.table)
    if report.blocks:
        lines += ["", "### Figures"]
        for block in report.blocks:
            lines += ["", *render_block(block)]
    lines += render_setup(report)
    lines += ["", "### Per-run facts", ""]
    lines += [f"- **{md(s.topic)}.** {md(s.text)}" for s in report.analysis] or ["*No run to analyse.*"]
    return lines


def render_setup(report: ExperimentReport) -> list[str]:
    setup = report.setup
    if not any(cell.runs for cell in report.cells):
        return []
    lines = ["", "### Setup", ""]
    for title, items in (("Data", setup.data), ("Settings that vary", setup.varied),
                         ("Settings every run shares", [", ".join(setup.fixed)] if setup.fixed else []),
                         ("Hardware and software", setup.hardware), ("Time per run", setup.timing)):
        lines += [f"- **{title}**: {md('; '.join(items))}"] if items else []
    if setup.models:
        lines += ["", "| Configuration | Layers | Trainable params |", "| --- | --- | --: |"]
        lines += [f"| {md(m.row)} | {md(m.layers)} | {md(m.params)} |" for m in setup.models]
    return lines


def render_table(table: ResultTable) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    align = ["---"] + ["--:"] * (len(table.header) - 1)
    if table.notes_column:
        align[-1] = "---"
    body = [row([_cell(c.text, c.best) + (f"<br>*{md(c.note)}*" if c.note else "") for c in r]) for r in table.rows]
    sources = [f"[{i}] {md(source)}" for i, source in enumerate(table.sources, start=1)]
    return [f"*{md(table.caption)}*", "", row([md(h) for h in table.header]), row(align), *body,
            *(["", "References: " + "; ".join(sources)] if sources else [])]


def _cell(text: str, best: bool) -> str:
    return f"**{md(text)}**" if best else md(text)


def render_block(block: object) -> list[str]:
    if isinstance(block, SvgBlock | ImageBlock):
        suffix = ".svg" if isinstance(block, SvgBlock) else block.suffix
        return [f"![{md(block.caption)}](figures/{block.name}{suffix})", "", f"*{md(block.caption)}*"]
    if isinstance(block, TextBlock):
        lines = [f"**{md(block.caption)}**"]
        for whose, text in block.samples:
            fence = "`" * max(3, _longest_backticks(text) + 1)
            lines += ["", f"*{md(whose)}*", "", f"{fence}text", text, fence]
        return lines
    if isinstance(block, NoteBlock):
        return [f"> {md(block.caption)}: {md(block.note)}"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)
