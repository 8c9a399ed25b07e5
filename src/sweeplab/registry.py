"""One generic registry: tasks, models, datasets and optimizers register by name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sweeplab.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and what a user needs to choose it."""

    name: str
    obj: T
    config: type | None  # the pydantic config class of this component, if it has one
    doc: str
    source: str = "sweeplab"  # where it was registered: sweeplab itself, or a plugin (its name and path)
    plugin: Any = None  # the sweeplab.tasks.plugins.Plugin that registered it, None for a built-in


class Registry(Generic[T]):
    """Name -> object. A duplicate name is an error; an unknown name lists the accepted ones.

    A registry may be partitioned by a `group` (e.g. models per task): entries are then
    looked up as (group, name), so `lstm` can mean different models in `lm` and `addition`.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[tuple[str, str], Entry[T]] = {}

    def register(self, name: str, *, group: str = "", config: type | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            plugin = loading_plugin()
            source = plugin.describe() if plugin else "sweeplab"
            if (group, name) in self._entries:
                other = self._entries[(group, name)].source
                scope = f" for task {group!r}" if group else ""
                raise UserError(f"{self.kind} name {name!r}{scope} is registered twice: by {other} and by {source}; "
                                "accepted: a name not taken (`sweeplab run TASK --help` lists them)")
            doc = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[(group, name)] = Entry(name, obj, config, doc, source, plugin)
            return obj

        return decorator

    def get(self, name: str, *, group: str = "", key: str | None = None) -> Entry[T]:
        try:
            return self._entries[(group, name)]
        except KeyError:
            where = f"{key}: " if key else ""
            scope = f" for {group!r}" if group else ""
            accepted = ", ".join(self.names(group)) or "(none)"
            raise UserError(f"{where}unknown {self.kind} {name!r}{scope}; accepted: {accepted}") from None

    def names(self, group: str = "") -> list[str]:
        return sorted(n for g, n in self._entries if g == group)

    def __contains__(self, item: Any) -> bool:
        group, name = item if isinstance(item, tuple) else ("", item)
        return (group, name) in self._entries


LOADING_PLUGINS: list[Any] = []  # the plugins being imported now (sweeplab.tasks.plugins), innermost last


def loading_plugin() -> Any:
    return LOADING_PLUGINS[-1] if LOADING_PLUGINS else None


TASKS: Registry = Registry("task")
MODELS: Registry = Registry("model")  # grouped by task
DATASETS: Registry = Registry("dataset")  # grouped by task
OPTIMIZERS: Registry = Registry("optimizer")
