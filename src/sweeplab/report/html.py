"""index.html: one self-contained page (inline CSS and SVG, no script, no network), from templates/report.html.j2.

The environment autoescapes: every piece of user text (run names, cell labels, titles, notes, errors, generated
text) is HTML-escaped where the template prints it, and a Content-Security-Policy forbids scripts and any fetch,
so even a missed escape could not run. Only the report's own drawings are printed as they are (`inline_svg`).
"""
from __future__ import annotations

import base64

from markupsafe import Markup

from sweeplab.report.figures import ImageBlock, SvgBlock
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.templating import create_environment

MIME = {".svg": "image/svg+xml", ".png": "image/png"}


def inline_svg(block: SvgBlock) -> Markup:
    """A figure the report drew: matplotlib writes every label as escaped XML text, and a run's own SVG never
    comes here (it is an ImageBlock, shown as an <img>, which a browser never scripts). So it is markup."""
    return Markup(block.svg)


def data_uri(block: ImageBlock) -> str:
    """A run's image, embedded: the page fetches nothing."""
    return f"data:{MIME[block.suffix]};base64,{base64.b64encode(block.data).decode('ascii')}"


_env = create_environment()
_env.filters.update(inline_svg=inline_svg, data_uri=data_uri)


def render_html(reports: list[ExperimentReport], meta: ReportMeta) -> str:
    return _env.get_template("report.html.j2").render(reports=reports, meta=meta)
