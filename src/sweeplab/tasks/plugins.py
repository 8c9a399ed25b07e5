"""Users' own code: a Python file or an importable module that registers models, datasets, tasks and optimizers
with the decorators of `sweeplab.api`, as sweeplab's own components do.

A function trainable is a plugin too: `FILE.py:FUNCTION` or `module:function` loads the file or module and
registers the function as a task (sweeplab.tasks.function), named `STEM:FUNCTION` (`module:function`).

Where plugins come from: `--plugin PATH_OR_MODULE` (every command that builds tasks or reads their runs),
`plugins:` in an experiment file (paths relative to the file), `$SWEEPLAB_PLUGINS` (separated by
`os.pathsep`; what the processes a command starts inherit: sweep workers, DDP ranks) and installed packages'
entry points (group `sweeplab.plugins`). Each plugin is known by its name, path and the SHA-256 of its source
(the file, or every .py file of the module's package): a run's key includes the hashes of the plugins its
components come from, so an edited model is a new run and never fills a cell with an old result.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sweeplab import registry
from sweeplab.errors import UserError

ENV = "SWEEPLAB_PLUGINS"
FUNCTIONS_ENV = "SWEEPLAB_FUNCTIONS"
ENTRY_POINTS = "sweeplab.plugins"


@dataclass(frozen=True)
class Plugin:
    name: str  # the module's name, or the file's stem
    path: str  # the file, or the package's folder
    sha256: str  # of its source
    ref: str  # what loads it again, in this process or another: the file's absolute path, or the module's name
    task: str | None = None  # a function trainable's task name (`STEM:FUNCTION`), None for a plugin of components

    def describe(self) -> str:
        return f"plugin {self.name} ({self.path})"


_LOADED: dict[str, Plugin] = {}  # by reference: a resolved file path or a module name (`:FUNCTION` added)
_module_names: dict[str, str] = {}  # by the same reference: the name it was imported as


def load(ref: str, base: Path | None = None) -> Plugin:
    """Import the plugin `ref` (a .py file, relative to `base` if given, or a module name) once; with a
    `:FUNCTION` suffix, also register that function of it as a task (its `task` is then that task's name)."""
    source, function = split_function(ref)
    path = _as_file(source, base)
    key = str(path) if path else source
    if key not in _LOADED:
        _LOADED[key] = _import_file(path) if path else _import_module(source)
    plugin = _LOADED[key]
    if function is None:
        return plugin
    full = f"{key}:{function}"
    if full not in _LOADED:
        from sweeplab.tasks.function import register_function  # the tasks sit above this leaf

        named = replace(plugin, ref=f"{plugin.ref}:{function}")
        with _loading(named):
            named = replace(named, task=register_function(named, sys.modules[_module_names[key]], function))
        _LOADED[full] = named
    return _LOADED[full]


def split_function(ref: str) -> tuple[str, str | None]:
    """`train.py:main` -> (`train.py`, `main`); a reference without a `:IDENTIFIER` suffix names no function."""
    source, sep, function = ref.rpartition(":")
    if sep and source and function.isidentifier():
        return source, function
    return ref, None


def use_task(task: str, base: Path | None = None) -> tuple[str, Plugin | None]:
    """The task `task` names (the built-ins loaded first): a registered task as it is; else a training function,
    `FILE.py:FUNCTION` (relative to `base`) or `module:function`, loaded and passed on as `use` does, its
    name `STEM:FUNCTION`, with its plugin."""
    import sweeplab.tasks  # noqa: F401 - the tasks sit above this leaf

    if task in registry.TASKS or split_function(task)[1] is None:
        return task, None
    plugin = use([task], base)[0]
    return plugin.task, plugin


def use(refs: list[str], base: Path | None = None) -> list[Plugin]:
    """Load `refs` and pass them on, through $SWEEPLAB_PLUGINS (training functions: $SWEEPLAB_FUNCTIONS), to
    every process this one starts."""
    plugins = [load(ref, base) for ref in refs]
    for plugin in plugins:
        if plugin.task is None:
            given = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
            os.environ[ENV] = os.pathsep.join(dict.fromkeys([*given, plugin.ref]))
        else:
            os.environ[FUNCTIONS_ENV] = json.dumps(list(dict.fromkeys([*_functions(), plugin.ref])))
    return plugins


def environment() -> dict[str, str]:
    """The variables that pass this process's plugins on (to a Ray task's runtime environment)."""
    return {name: os.environ[name] for name in (ENV, FUNCTIONS_ENV) if os.environ.get(name)}


def load_configured() -> None:
    """The plugins this process is configured with: $SWEEPLAB_PLUGINS, $SWEEPLAB_FUNCTIONS and installed entry
    points."""
    for ref in (r for r in os.environ.get(ENV, "").split(os.pathsep) if r):
        load(ref)
    for ref in _functions():
        load(ref)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        load(entry.value.split(":")[0])


def _functions() -> list[str]:
    """$SWEEPLAB_FUNCTIONS: a JSON list (a function's reference holds a colon, the path separator)."""
    text = os.environ.get(FUNCTIONS_ENV, "")
    try:
        refs = json.loads(text) if text else []
    except json.JSONDecodeError:
        refs = None
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise UserError(f"${FUNCTIONS_ENV}: {text[:80]!r} is not accepted; accepted: a JSON list of FILE.py:FUNCTION")
    return refs


def loaded() -> list[Plugin]:
    return list(_LOADED.values())


# -- importing ---------------------------------------------------------------------------------------
def _as_file(ref: str, base: Path | None) -> Path | None:
    """The file a reference names, or None for a module name (no .py suffix, no path separator)."""
    if not ref.endswith(".py") and os.sep not in ref and "/" not in ref:
        return None
    path = Path(ref).expanduser()
    path = (base / path if base and not path.is_absolute() else path).resolve()
    if not path.is_file():
        raise UserError(f"plugin {ref}: no such file ({path}); accepted: a .py file or an importable module name")
    return path


def _import_file(path: Path) -> Plugin:
    source = path.read_bytes()
    plugin = Plugin(path.stem, str(path), hashlib.sha256(source).hexdigest(), str(path))
    spec = importlib.util.spec_from_file_location(f"sweeplab_plugin_{path.stem}_{plugin.sha256[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    _module_names[str(path)] = spec.name
    with _loading(plugin):
        spec.loader.exec_module(module)
    return plugin


def _import_module(name: str) -> Plugin:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise UserError(f"plugin {name}: no such module (and no file of that name); accepted: a .py file or an "
                        "importable module name")
    origin = Path(spec.origin)
    folder = origin.parent if spec.submodule_search_locations else None
    files = sorted(folder.rglob("*.py")) if folder else [origin]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(folder or origin.parent)).encode() + b"\0" + file.read_bytes())
    plugin = Plugin(name, str(folder or origin), digest.hexdigest(), name)
    _module_names[name] = name
    with _loading(plugin):
        importlib.import_module(name)
    return plugin


@contextmanager
def _loading(plugin: Plugin) -> Iterator[None]:
    """While a plugin imports, what it registers is marked as its; an error in it is one line naming its file
    and line, the traceback in a log file the line names."""
    registry.LOADING_PLUGINS.append(plugin)
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: any error at all
        raise UserError(_import_error(plugin, exc)) from None
    finally:
        registry.LOADING_PLUGINS.pop()


def _import_error(plugin: Plugin, exc: Exception) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if f.filename.startswith(plugin.path)] or frames
    where = f"{inside[-1].filename}:{inside[-1].lineno}" if inside else plugin.path
    log = _log_folder() / f"plugin-{plugin.name}.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(exc)), encoding="utf8")
        told = f"; the traceback is in {log}"
    except OSError:
        told = ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"plugin {plugin.name} failed to import at {where}: {type(exc).__name__}: {first}{told}"


def _log_folder() -> Path:
    return Path(os.environ.get("SWEEPLAB_CACHE") or Path.home() / ".cache" / "sweeplab" / "cache").parent / "logs"
