"""Errors a user can cause: one clear line and exit code 2, never a traceback."""
from __future__ import annotations

import errno
import math
import reprlib
from typing import Any


class UserError(Exception):
    """Bad input (config, data, arguments). The message names the key or file and what is accepted."""

    exit_code = 2


class Diverged(Exception):
    """A training or evaluation metric (loss, perplexity, ...) became NaN or infinite."""


def interrupted(exc: BaseException) -> bool:
    """A Ctrl-C (or SIGTERM made one), or an error raised while one unwound: a library's cleanup that fails on
    the call the interrupt cut short (SQLAlchemy's PostgreSQL pre-ping, interrupted mid-ping, restores autocommit
    on a busy connection and raises ProgrammingError in place of the KeyboardInterrupt). Such a run was stopped,
    not broken: it ends interrupted and resumes."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        pending += [e.__cause__, e.__context__]
    return False


BRIEF_CHARS = 80
_BRIEF = reprlib.Repr()  # Python 3.11's Repr takes its limits as attributes, not arguments
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict, _BRIEF.maxset = 2, 4, 4, 4, 4
_BRIEF.maxstring, _BRIEF.maxlong, _BRIEF.maxother = 60, 40, 60


def brief(value: Any) -> str:
    """A user's value as an error message quotes it: its repr, at most ~80 characters. reprlib never builds the
    whole repr, so a value that YAML aliases blew up to millions of items costs no more to quote than a small one."""
    try:
        text = _BRIEF.repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits() has no decimal text
        return f"about 10^{int(value.bit_length() * math.log10(2))}"
    return text if len(text) <= BRIEF_CHARS else text[:BRIEF_CHARS - 3] + "..."


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a quota


def no_space_message(exc: BaseException) -> str | None:
    """The one line for a full disk or quota anywhere (artifacts, store, cache, report), else None."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return f"no space left on device: {exc.filename or 'a file being written'}"
    return None
