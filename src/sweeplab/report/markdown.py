"""report.md: the same report as GitHub-flavoured Markdown, figures linked from figures/ (templates/report.md.j2).

Markdown passes raw HTML through, so user text is HTML-escaped as well as Markdown-escaped: a run named
`<script>` stays text in any renderer. `md` is applied to every value the template prints (templating.py).
"""
from __future__ import annotations

import re
from html import escape

from markupsafe import Markup

from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.templating import create_environment

# what can start emphasis, code, links, cells or (GitHub) math anywhere in a line
_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")


def md(text: object) -> str:
    """User text, inert in Markdown: HTML-escaped, Markdown specials backslashed, on one line."""
    return _SPECIAL.sub(r"\\\1", escape(str(text), quote=False)).replace("\r", " ").replace("\n", " ")


def fenced(text: str) -> Markup:
    """Generated text as it is, in a code fence longer than any run of backticks inside it: nothing in it can
    close the fence, so Markdown shows it literally and it needs no escaping."""
    fence = "`" * max(3, _longest_backticks(text) + 1)
    return Markup(f"{fence}text\n{text}\n{fence}")


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


_env = create_environment(md)
_env.filters["fenced"] = fenced


def render_markdown(reports: list[ExperimentReport], meta: ReportMeta) -> str:
    return _env.get_template("report.md.j2").render(reports=reports, meta=meta)
