"""Errors a user can cause: one clear line and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input (config, data, arguments). The message names the key or file and what is accepted."""

    exit_code = 2


class Diverged(Exception):
    """A training or evaluation metric (loss, perplexity, ...) became NaN or infinite."""
