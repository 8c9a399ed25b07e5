"""The package's floor plan, checked over the import graph: a module imports only from its own floor or below.

Lowest first (one floor may hold several rooms, which do not import each other):

    leaves      errors, terminal; then config, registry, io, limits
    store       the run store and the artifacts
    data|models datasets, models, and the small torch helpers (device, autocast, optimizers)
    tasks       the tasks, their resolution, users' plugins and the artifacts tasks write
    engine|experiment   the training loop and runner | the experiment spec (columns, figures, questions, references)
    sweep       sweeps and the commands that drive whole runs (compare, bench)
    report      the report
    cli         the command line, the public API for users' files, the demo

Every import counts, a function-level one too: an import placed inside a function to dodge a cycle is still a
cycle. Within the engine, rank launching (`engine.launch`) sits above the runner it starts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sweeplab"

FLOORS: list[set[str]] = [
    {"errors", "terminal"},
    {"config", "registry", "io", "limits"},
    {"store"},
    {"data", "models"},
    {"tasks"},
    {"engine", "experiment"},
    {"sweep"},
    {"report"},
    {"cli", "api", "demo"},
    {"__main__"},
]
# Inside a floor's package, modules above others of the same package (importer -> what it may not be imported by).
ABOVE = {"engine.launch": {"engine.runner", "engine.trainer", "engine.trainable", "engine.distributed"}}


def floor_of(module: str) -> tuple[int, str]:
    room = module.split(".")[0]
    for number, rooms in enumerate(FLOORS):
        if room in rooms:
            return number, room
    raise AssertionError(f"sweeplab.{module} is on no floor of the plan: add it to FLOORS")


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            found[name] = path
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module relative to sweeplab) of every sweeplab import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: a relative import; the package uses absolute ones"
            out.append((node.lineno, node.module or ""))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]  # `from sweeplab import x`
    return [(line, t.removeprefix("sweeplab.")) for line, t in out if t.startswith("sweeplab.")]


def test_every_import_goes_down_the_floor_plan():
    known = modules()
    wrong = []
    for name, path in known.items():
        here, room = floor_of(name)
        for line, target in imports(path):
            if target not in known:  # `from sweeplab.x import some_function`: the module is checked by its own entry
                continue
            there, other = floor_of(target)
            if there > here or (there == here and other != room):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {name} (floor {here}) imports {target} "
                             f"(floor {there})")
            if any(name == low and target.startswith(high) for high, lows in ABOVE.items() for low in lows):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {name} imports {target}, which sits above it")
    assert not wrong, "imports against the floor plan:\n" + "\n".join(wrong)


@pytest.mark.parametrize("bad", ["from sweeplab.report.build import x", "import sweeplab.sweep.run"])
def test_the_check_sees_an_import_that_goes_up(bad, tmp_path):
    """The rule itself: an upward import, even inside a function, is found."""
    path = tmp_path / "mod.py"
    path.write_text(f"def f():\n    {bad}\n")
    (line, target), *_ = imports(path)
    assert line == 2 and floor_of(target)[0] > floor_of("tasks.mod")[0]
