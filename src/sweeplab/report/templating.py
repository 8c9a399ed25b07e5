"""The template environment the three views share: templates/ of this package, undefined names an error, and
every printed value escaped by the view's one filter unless it is markup the view made itself.

Jinja escapes only for HTML. Markdown and LaTeX get the same guarantee through `finalize`, which Jinja applies to
every `{{ value }}` before printing it: anything that is not `Markup` goes through the view's filter (`md`, `tex`)
and comes back as `Markup`, which autoescaping then leaves alone. What a view's templates print unescaped is
`Markup` by construction: a macro's output, or a filter of the writer's own (a file name checked to be one, a
table fragment rendered by its own template). `|e` and `|escape` are the view's filter too, never HTML's in a
LaTeX file. (Joining markup to text with `~` would HTML-escape the text: templates print pieces side by side.)
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context
from markupsafe import Markup

from sweeplab.report.model import block_kind

_FILE_NAME = re.compile(r"[A-Za-z0-9._=-]+")  # what figures.slug makes: safe in a path, a link and \input


def create_environment(escape: Callable[[object], str] | None = None, **options: Any) -> Environment:
    """An environment over the package's templates; `escape`: the view's filter for every printed value (None: HTML)."""
    finalize = None
    if escape is not None:
        def escaped(value: object) -> Markup:
            return value if isinstance(value, Markup) else Markup(escape(value))

        # Taking the eval context stops Jinja folding `{{ "literal" }}` at compile time, where it would be
        # HTML-escaped and never reach `escaped`.
        finalize = pass_eval_context(lambda _context, value: escaped(value))
    env = Environment(loader=PackageLoader("sweeplab.report", "templates"), undefined=StrictUndefined,
                      autoescape=True, finalize=finalize, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, **options)
    if escape is not None:
        env.filters["e"] = env.filters["escape"] = escaped
    env.filters["kind"] = block_kind
    env.filters["file_name"] = file_name
    return env


def file_name(name: str) -> Markup:
    """A figure's or table's file name as the report made it (figures.slug): printed as it is, in a link or path."""
    if not _FILE_NAME.fullmatch(name):
        raise ValueError(f"not a file name the report made: {name!r}")
    return Markup(name)
