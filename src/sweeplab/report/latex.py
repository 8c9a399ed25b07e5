"""report.tex: the report as LaTeX a student hands in, from the same report model as the HTML and Markdown.

`sweeplab report ... --format latex --out DIR` writes DIR/report.tex (compiles with pdflatex), one booktabs
fragment per results table under DIR/tables/ (`\\input{tables/NAME.tex}` pastes it into one's own report; it needs
`\\usepackage{booktabs}`), and the report's figures as PDF under DIR/figures/. Every text that comes from runs,
experiment files or users goes through `tex()`, the one escaping filter, applied to every value the templates
(templates/report.tex.j2, table.tex.j2) print: it stays text, never a command.
"""
from __future__ import annotations

import re

from markupsafe import Markup

from sweeplab.report.model import ExperimentReport, ReportMeta, Tables
from sweeplab.report.tables import ResultTable
from sweeplab.report.templating import create_environment

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


def tex_lines(text: str) -> Markup:
    """Generated text, line by line, wrapped where TeX wraps (a word of it cannot run off the page)."""
    return Markup(r"\\ ".join(tex(line) for line in re.split(r"\r?\n", text.strip()) if line.strip()))


def tabular(table: ResultTable, long: bool = False) -> Markup:
    """A table as a booktabs tabular, rendered (and escaped) by its own template; `long`: a longtable with its
    caption, which breaks across pages (a setup's table of 27 models is taller than one)."""
    return Markup(_env.get_template("table.tex.j2").render(table=table, long=long))


# LaTeX's braces would read as Jinja's {{ }} and {% %}: values are << >>, statements <% %>, comments <# #>.
_env = create_environment(tex, variable_start_string="<<", variable_end_string=">>", block_start_string="<%",
                          block_end_string="%>", comment_start_string="<#", comment_end_string="#>")
_env.filters.update(tex_lines=tex_lines, tabular=tabular)
_env.globals["wide"] = WIDE


def render_latex(reports: list[ExperimentReport], meta: ReportMeta) -> tuple[str, dict[str, str]]:
    """(report.tex, {fragment file name: booktabs table}); figures are written from the blocks' PDF."""
    fragments = {f"{named.name}.tex": str(tabular(named.table)) for report in reports
                 for section in report.sections() if isinstance(section, Tables) for named in section.tables}
    return _env.get_template("report.tex.j2").render(reports=reports, meta=meta), fragments
