"""Text from users and stored runs, made safe to print: no control characters reach a terminal or a CSV file.

A run name, a note, an error message or a path can hold escape sequences (ESC[2J clears the screen, OSC 52
writes the clipboard), a newline that forges a second log line, or a bidirectional override that makes text
read differently from what it is. `printable` shows every such character as its escape (`\\x1b`, `\\n`,
`\\u202e`); `redact_url` takes every secret out of a URL, whatever characters its password holds.
"""
from __future__ import annotations

import re
import unicodedata
from urllib.parse import parse_qsl, urlencode

_SECRET_QUERY_KEY = re.compile(r"pass|secret|token|key|credential|auth|signature", re.I)


def printable(text: object) -> str:
    """`text` with its control, format and unassigned characters escaped (Unicode categories C*)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c == " " or unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode()
                   for c in text)


def redact_url(url: str) -> str:
    """The URL without its password and secret query values: `scheme://user:***@host/path?password=***`.

    The user information ends at the last `@`, so a password holding `@`, `/`, `:`, `?` or `#` is hidden whole
    (URL parsers, which stop at the first `/`, `?` or `#`, would print the rest of it). An `@` in the query
    makes this hide more than the password: never less."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        hidden = f"{user}:***@" if colon else f"{userinfo}@"
    else:
        hidden, location = "", rest
    before_query, q, query = location.partition("?")
    before_query = hidden + before_query
    if q:
        query, _, _ = query.partition("#")
        pairs = [(k, "***" if _SECRET_QUERY_KEY.search(k) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        return f"{scheme}://{before_query}?{urlencode(pairs, safe='*')}"
    return f"{scheme}://{before_query}"
