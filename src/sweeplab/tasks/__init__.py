"""Every task registers itself (and its models and datasets) on import: adding a task is one line here."""
from sweeplab.tasks import (
    addition,  # noqa: F401
    image,  # noqa: F401
    lm,  # noqa: F401
    palindrome,  # noqa: F401
    toy2d,  # noqa: F401
)
from sweeplab.tasks.resolve import resolve  # noqa: E402 - after the tasks, whose registries it reads

__all__ = ["resolve"]
