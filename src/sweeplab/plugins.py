"""Users' own code: a Python file or an importable module that registers models, datasets, tasks and optimizers
with the decorators of `sweeplab.api`, as sweeplab's own components do.

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
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sweeplab import registry
from sweeplab.errors import UserError

ENV = "SWEEPLAB_PLUGINS"
ENTRY_POINTS = "sweeplab.plugins"


@dataclass(frozen=True)
class Plugin:
    name: str  # the module's name, or the file's stem
    path: str  # the file, or the package's folder
    sha256: str  # of its source
    ref: str  # what loads it again, in this process or another: the file's absolute path, or the module's name

    def describe(self) -> str:
        return f"plugin {self.name} ({self.path})"


_LOADED: dict[str, Plugin] = {}  # by reference: a resolved file path or a module name


def load(ref: str, base: Path | None = None) -> Plugin:
    """Import the plugin `ref` (a .py file, relative to `base` if given, or a module name) once."""
    path = _as_file(ref, base)
    key = str(path) if path else ref
    if key not in _LOADED:
        _LOADED[key] = _import_file(path) if path else _import_module(ref)
    return _LOADED[key]


def use(refs: list[str], base: Path | None = None) -> list[Plugin]:
    """Load `refs` and pass them on, through $SWEEPLAB_PLUGINS, to every process this one starts."""
    plugins = [load(ref, base) for ref in refs]
    given = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    os.environ[ENV] = os.pathsep.join(dict.fromkeys([*given, *(p.ref for p in plugins)]))
    return plugins


def load_configured() -> None:
    """The plugins this process is configured with: $SWEEPLAB_PLUGINS and installed entry points."""
    for ref in (r for r in os.environ.get(ENV, "").split(os.pathsep) if r):
        load(ref)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        load(entry.value.split(":")[0])


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
