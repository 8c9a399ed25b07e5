"""Resolution: a task name and layers of dotted keys become a validated `RunConfig`.

Lives beside the task registry (importing `sweeplab.tasks` fills every registry first), so that
sweeplab/config.py stays a leaf.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError

from sweeplab.config import GROUPS, MAX_SEED, TOP_LEVEL, DataConfig, ModelConfig, OptimConfig, RunConfig, Section, TrainConfig
from sweeplab.errors import UserError, brief
from sweeplab.registry import DATASETS, MODELS, OPTIMIZERS, TASKS, Entry
from sweeplab.tasks.function import RUN_KEYS, FunctionTask


def resolve(task_name: str, *layers: dict[str, Any], auto_device: str | None = None) -> RunConfig:
    """Task defaults, then each layer in order (experiment file, overrides); validated. `device=auto` becomes
    `auto_device` when given (what the machines that will train have: a Ray cluster's GPUs), else what this
    machine has."""
    task_entry = TASKS.get(task_name, key="task")
    task = task_entry.obj
    merged: dict[str, Any] = {"seed": 1111, "device": "auto", **task.defaults}
    for layer in layers:
        merged.update(layer)
    if issubclass(task, FunctionTask):
        return _resolve_function(task_entry, merged, auto_device)
    _check_keys(merged)
    names = {g: merged.get(g) for g in ("data", "model", "optim")}
    for group, name in names.items():
        if not isinstance(name, str):
            raise UserError(f"{group}: expected a name, got {brief(name)}")
    data = DATASETS.get(names["data"], group=task_name, key="data")
    model = MODELS.get(names["model"], group=task_name, key="model")
    optim = OPTIMIZERS.get(names["optim"], key="optim")
    cfg = RunConfig(
        task=task_name,
        seed=_seed(merged["seed"]),
        device=_device(merged["device"], auto_device),
        data_name=names["data"],
        model_name=names["model"],
        optim_name=names["optim"],
        data=_section(data.config or DataConfig, "data", merged),
        model=_section(model.config or ModelConfig, "model", merged),
        optim=_section(OptimConfig, "optim", merged),
        train=_section(task.train_config, "train", merged),
        plugins=_plugins(task_entry, data, model, optim),
    )
    task.check(cfg)
    return cfg


def capable(task: str, capability: str) -> bool:
    """Whether runs of `task` can do `capability` (see Task.capabilities); False for a task not installed here."""
    return task in TASKS and capability in TASKS.get(task).obj.capabilities


def tasks_with(capability: str) -> list[str]:
    return [name for name in TASKS.names() if capable(name, capability)]


def _resolve_function(entry: Entry, merged: dict[str, Any], auto_device: str | None) -> RunConfig:
    """A function trainable's config: the run's seed and device, and the function's own keys."""
    given = {k: v for k, v in merged.items() if k not in RUN_KEYS}
    seed, device = _seed(merged["seed"]), _device(merged["device"], auto_device)
    params = entry.obj.validate({**given, **{k: merged[k] for k in RUN_KEYS if k in _fields(entry.obj)}})
    return RunConfig(task=entry.name, seed=seed, device=device, data_name="", model_name="", optim_name="",
                     data=DataConfig(), model=ModelConfig(), optim=OptimConfig(), train=TrainConfig(),
                     plugins=_plugins(entry), params=params)


def _fields(task: type[FunctionTask]) -> dict[str, Any]:
    return task.params_model.model_fields if task.params_model else {}


def _plugins(*entries: Entry) -> tuple[tuple[str, str, str], ...]:
    """(name, path, sha256) of the users' plugins the components come from, each once."""
    found = {(e.plugin.name, e.plugin.path, e.plugin.sha256) for e in entries if e.plugin is not None}
    return tuple(sorted(found))


def _check_keys(merged: dict[str, Any]) -> None:
    for key in merged:
        group = key.split(".", 1)[0]
        if key in TOP_LEVEL or key in GROUPS[:3] or ("." in key and group in GROUPS):
            continue
        accepted = ", ".join([*TOP_LEVEL, "data=NAME", "model=NAME", "optim=NAME", "data.*", "model.*", "optim.*", "train.*"])
        raise UserError(f"unknown key {key!r}; accepted: {accepted}")


def _seed(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"seed: expected int, got {brief(value)}")
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"seed: {brief(value)} is out of range; accepted: an integer from 0 to {MAX_SEED:,}")
    return value


def _device(value: Any, auto_device: str | None) -> str:
    """The device a run trains on; `auto` is resolved here, so `auto` and `cuda` on a GPU are one run."""
    if value not in ("auto", "cpu", "cuda") and not (isinstance(value, str) and value.startswith("cuda:")):
        raise UserError(f"device: {brief(value)} is not accepted; accepted: auto, cpu, cuda, cuda:N")
    if value == "auto":
        return auto_device or ("cuda" if torch.cuda.is_available() else "cpu")
    return value


def _section(cls: type[Section], group: str, merged: dict[str, Any]) -> Any:
    prefix = group + "."
    fields = {k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)}
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise UserError(_explain(exc, group, cls)) from None


_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string"}


def _explain(exc: ValidationError, group: str, cls: type[Section]) -> str:
    """One line from pydantic's first error: the key, what was given, what is accepted."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    key = f"{group}.{loc}" if loc else group
    given = brief(err.get("input"))  # never the whole value: YAML aliases can make it millions of items long
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {key!r}; accepted: " + ", ".join(f"{group}.{f}" for f in cls.model_fields)
    if kind == "literal_error":
        return f"{key}: {given} is not accepted; accepted: {err['ctx']['expected']}"
    if kind in _TYPE_WORDS:
        return f"{key}: expected {_TYPE_WORDS[kind]}, got {given}"
    if kind == "finite_number":
        return f"{key}: expected a finite number, got {given}"
    if kind == "value_error":
        return f"{key}: {err['ctx']['error']}" if loc else f"invalid {group} settings: {err['ctx']['error']}"
    return f"{key}: {err['msg'].lower()}, got {given}"
