"""Every task registers itself (and its models and datasets) on import: adding a task is one line here."""
from sweeplab.registry import TASKS
from sweeplab.tasks import (
    addition,  # noqa: F401
    image,  # noqa: F401
    lm,  # noqa: F401
    palindrome,  # noqa: F401
    plugins,
    toy2d,  # noqa: F401
)
from sweeplab.tasks.resolve import resolve

plugins.load_configured()  # users' own components ($SWEEPLAB_PLUGINS, entry points), after the built-ins


def capable(task: str, capability: str) -> bool:
    """Whether runs of `task` can do `capability` (see Task.capabilities); False for a task not installed here."""
    return task in TASKS and capability in TASKS.get(task).obj.capabilities


def tasks_with(capability: str) -> list[str]:
    return [name for name in TASKS.names() if capable(name, capability)]


__all__ = ["capable", "resolve", "tasks_with"]
