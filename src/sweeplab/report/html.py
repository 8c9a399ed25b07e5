"""index.html: one self-contained page (inline CSS and SVG, no script, no network).

Every piece of user text (run names, cell labels, titles, notes, errors, generated text) goes through
`esc`; a Content-Security-Policy forbids scripts and any fetch, so even a missed escape could not run.
"""
from __future__ import annotations

import base64
from html import escape

from sweeplab.report.figures import ImageBlock, NoteBlock, SvgBlock, TextBlock, slug
from sweeplab.report.model import ExperimentReport, ReportMeta
from sweeplab.report.tables import ResultTable

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MIME = {".svg": "image/svg+xml", ".png": "image/png"}

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --accent: #2456a6; --bad: #a8322d; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       max-width: 1180px; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; } h2 { margin-top: 2.8rem; border-bottom: 2px solid var(--line); }
h3 { margin-top: 1.8rem; color: var(--accent); }
.meta { color: var(--muted); font-size: .9rem; }
code { background: #f2f4f8; padding: 0 .25em; border-radius: 3px; }
table.results { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
table.results caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: .4rem; }
table.results th, table.results td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: right; }
table.results th { background: #f2f4f8; }
table.results td:first-child, table.results th:first-child, table.results td.notes { text-align: left; }
table.results td.best { font-weight: 700; }
table.results td.missing { color: var(--bad); font-style: italic; }
figure { margin: 1.2rem 0; } figure svg, figure img { max-width: 100%; height: auto; }
figure.artifact { display: inline-block; vertical-align: top; max-width: 48%; margin-right: 1%; }
figcaption { color: var(--muted); font-size: .88rem; }
.note { color: var(--bad); font-style: italic; }
pre.sample { white-space: pre-wrap; background: #f7f8fb; border: 1px solid var(--line); padding: .6rem;
             font-size: .85rem; max-height: 16rem; overflow: auto; }
ul.analysis li { margin: .3rem 0; }
dl.answers dt { font-weight: 600; margin-top: .6rem; } dl.answers dd { margin: .1rem 0 0 1.2rem; }
dd.unanswered, td .ref { color: var(--muted); }
td .ref { display: block; font-size: .78rem; font-weight: 400; }
.summary li { margin: .35rem 0; }
details > summary { cursor: pointer; color: var(--accent); margin: .6rem 0; }
.setup dt { font-weight: 600; } .setup dd { margin: 0 0 .5rem 1.2rem; }
table.results.models td { text-align: left; }
p.sources { color: var(--muted); font-size: .85rem; margin-top: 0; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 11px; }
  section.experiment { break-before: page; }
  table.results { font-size: 8.5px; width: 100%; table-layout: auto; }
  table.results th, table.results td { padding: .15rem .3rem; overflow-wrap: anywhere; }
  table.results tr, figure, dl.answers dd { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  details > summary { display: none; }
  details:not([open]) { display: none; }
  pre.sample { max-height: none; overflow: visible; }
}
"""


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def render_html(reports: list[ExperimentReport], meta: ReportMeta) -> str:
    title = "sweeplab report: " + ", ".join(r.spec.name for r in reports)
    nav = "".join(f'<li><a href="#{anchor(r)}">{esc(r.spec.title)}</a></li>' for r in reports)
    body = "\n".join(render_experiment(r) for r in reports)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>sweeplab report</h1>
<p class="meta">{esc(meta.line())}</p>
<nav><ol>{nav}</ol></nav>
</header>
{render_summary(reports)}
<main>
{body}
</main>
</body>
</html>
"""


def anchor(report: ExperimentReport) -> str:
    return "exp-" + slug(report.spec.name)


def render_summary(reports: list[ExperimentReport]) -> str:
    """The findings before the details: each experiment's main answer and the state of its cells."""
    items = "".join(f'<li><a href="#{anchor(r)}">{esc(r.spec.title)}</a>: {esc(r.summary_line())}</li>'
                    for r in reports)
    return f'<section class="summary"><h2>Summary</h2><ul>{items}</ul></section>'


def render_experiment(report: ExperimentReport) -> str:
    parts = [f'<section class="experiment" id="{anchor(report)}">', f"<h2>{esc(report.spec.title)}</h2>",
             f'<p class="meta">{esc(report.meta_line())}</p>']
    if report.answers:
        parts += ["<h3>Questions</h3>", render_answers(report)]
    parts.append("<h3>Results</h3>")
    if report.pivots:
        parts += [render_table(table) for table in report.pivots]
        parts.append(f"<details><summary>Every cell, with notes</summary>{render_table(report.table)}</details>")
    else:
        parts.append(render_table(report.table))
    if report.blocks:
        parts.append("<h3>Figures</h3>")
        parts += [render_block(block) for block in report.blocks]
    parts.append(render_setup(report))
    parts.append("<h3>Per-run facts</h3>")
    items = "".join(f"<li><strong>{esc(s.topic)}.</strong> {esc(s.text)}</li>" for s in report.analysis)
    parts.append(f'<ul class="analysis">{items}</ul>' if items else '<p class="note">No run to analyse.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_answers(report: ExperimentReport) -> str:
    unanswered = ' class="unanswered"'
    items = "".join(f"<dt>{esc(a.ask)}</dt><dd{'' if a.answered else unanswered}>{esc(a.text)}</dd>"
                    for a in report.answers)
    return f'<dl class="answers">{items}</dl>'


def render_setup(report: ExperimentReport) -> str:
    """Data preparation and technical details, generated from the runs."""
    setup = report.setup
    if not report.cells or not any(cell.runs for cell in report.cells):
        return ""
    rows = "".join(f"<tr><th scope=\"row\">{esc(m.row)}</th><td>{esc(m.layers)}</td><td>{esc(m.params)}</td></tr>"
                   for m in setup.models)
    models = (f'<table class="results models"><caption>Each model: its top-level layers (parameters) and the '
              f"trainable parameters the run recorded</caption><thead><tr><th>Configuration</th><th>Layers</th>"
              f"<th>Trainable params</th></tr></thead><tbody>{rows}</tbody></table>") if rows else ""
    facts = [("Data", setup.data or ["not rebuilt here (see the models below)"]),
             ("Settings that vary", setup.varied or ["none: every run has the same settings"]),
             ("Hardware and software", setup.hardware), ("Time per run", setup.timing)]
    items = "".join(f"<dt>{esc(title)}</dt>" + "".join(f"<dd>{esc(line)}</dd>" for line in lines)
                    for title, lines in facts if lines)
    fixed = (f"<details><summary>Settings every run shares ({len(setup.fixed)})</summary>"
             f"<p class=\"meta\">{esc(', '.join(setup.fixed))}</p></details>") if setup.fixed else ""
    return f'<h3>Setup</h3><div class="setup"><dl>{items}</dl>{fixed}{models}</div>'


def render_table(table: ResultTable) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    rows = []
    for row in table.rows:
        cells = [f"<th scope=\"row\">{esc(row[0].text)}</th>"]
        for i, cell in enumerate(row[1:], start=1):
            classes = [c for c, on in (("best", cell.best), ("missing", cell.missing),
                                       ("notes", table.notes_column and i == len(row) - 1)) if on]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            note = f'<span class="ref">{esc(cell.note)}</span>' if cell.note else ""
            cells.append(f"<td{attr}>{esc(cell.text)}{note}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    sources = "".join(f"<br>[{i}] {esc(source)}" for i, source in enumerate(table.sources, start=1))
    return (f'<table class="results"><caption>{esc(table.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f'<p class="sources">References:{sources}</p>' if sources else ""))


def render_block(block: object) -> str:
    if isinstance(block, SvgBlock):  # drawn by the report: inline SVG, text escaped by matplotlib
        return (f'<figure class="plot" id="{esc(block.name)}">{block.svg}'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, ImageBlock):  # written by a run: an image, which a browser never scripts
        uri = f"data:{MIME[block.suffix]};base64,{base64.b64encode(block.data).decode('ascii')}"
        return (f'<figure class="artifact" id="{esc(block.name)}"><img alt="{esc(block.caption)}" src="{uri}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, TextBlock):
        samples = "".join(f'<h4>{esc(whose)}</h4><pre class="sample">{esc(text)}</pre>'
                          for whose, text in block.samples)
        return f'<figure class="text"><figcaption>{esc(block.caption)}</figcaption>{samples}</figure>'
    if isinstance(block, NoteBlock):
        return f'<p class="note">{esc(block.caption)}: {esc(block.note)}</p>'
    raise TypeError(f"unknown report block {type(block).__name__}")
