"""Function trainables: a plain function `main(config, run)` of the user's, run as a task.

`sweeplab run train.py:main lr=0.01` (or `task: train.py:main` in an experiment file) loads the file as a
plugin (sweeplab.tasks.plugins) and registers the function here as the task `train:main`. Its keys are the fields of
the pydantic model its first parameter is annotated with (defaults, types and bounds checked like the built-ins'
keys), or, without an annotation, whatever keys are given (the function receives them as a dict). The function
owns its loop; the `run` handle (sweeplab.engine.trainable) stores what it logs and checkpoints, and tells it
when to stop. Everything else — keys, the store, leases, sweeps, the planner, Ray, the report — treats the
function's runs as any task's.
"""
from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ValidationError

from sweeplab.errors import UserError, brief
from sweeplab.registry import TASKS
from sweeplab.tasks.base import Task


class Run(Protocol):
    """What a training function receives as `run` (sweeplab.engine.trainable.RunHandle implements it)."""

    id: str
    dir: Path  # the run's folder: files written here stay with the run
    seed: int
    device: torch.device
    config: Any  # the function's config, as its first argument
    step: int  # the last step and epoch logged or restored
    epoch: int

    def log(self, *, step: int | None = None, epoch: int | None = None, split: str = "train",
            **metrics: Any) -> None: ...

    def save(self, state: dict[str, Any]) -> None: ...

    def restore(self) -> Any: ...

    def should_stop(self) -> bool: ...

    def summarize(self, **values: Any) -> None: ...


# Keys every run has: the function's config may declare them as fields too (it then receives the run's values).
RUN_KEYS = ("seed", "device")
# What the planner shortens under --budget: the config's `epochs` field, when it has one.
LENGTH_KEY = "epochs"


class FunctionTask(Task):
    """A user's training function (see sweeplab.tasks.function)."""

    function: ClassVar[Callable[..., Any]]
    params_model: ClassVar[type[BaseModel] | None] = None  # None: the config is the dict of the given keys
    monitor = ""  # the function picks its own best weights, if any

    @classmethod
    def validate(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The function's keys: the model's fields, with their defaults, as JSON values (the stored config)."""
        if cls.params_model is None:
            return dict(given)
        fields = cls.params_model.model_fields
        for key in given:
            if key not in fields:
                accepted = ", ".join([*RUN_KEYS, *(f for f in fields if f not in RUN_KEYS)])
                raise UserError(f"unknown key {key!r}; accepted: {accepted}")
        try:
            params = cls.params_model.model_validate(given, strict=True)
        except ValidationError as exc:
            raise UserError(_explain(exc)) from None
        return {k: v for k, v in params.model_dump(mode="json").items() if k not in RUN_KEYS}

    @classmethod
    def config_for(cls, params: dict[str, Any], seed: int, device: str) -> Any:
        """What the function receives as its config: an instance of its model, or the dict."""
        run_values = {"seed": seed, "device": device}
        if cls.params_model is None:
            return dict(params)
        fields = cls.params_model.model_fields
        return cls.params_model.model_validate({**params, **{k: v for k, v in run_values.items() if k in fields}})

    @classmethod
    def length_key(cls) -> str | None:
        """The field the planner shortens (an int `epochs`), None when the function has none."""
        model = cls.params_model
        if model is not None and LENGTH_KEY in model.model_fields and model.model_fields[LENGTH_KEY].annotation is int:
            return LENGTH_KEY
        return None

    def build(self) -> None:
        return None

    def count_params(self, model: Any) -> int:
        return 0

    def batches_per_epoch(self) -> int:
        return 0


def register_function(plugin: Any, module: ModuleType, name: str) -> str:
    """Register `module.name` as the task `STEM:NAME`; its signature is checked now, in one line."""
    where = f"{plugin.path}:{name}"
    function = getattr(module, name, None)
    if not callable(function):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__)
        raise UserError(f"{where}: no function {name!r} in {plugin.path}; accepted: "
                        f"{', '.join(defined) or '(it defines no functions)'}")
    params = list(inspect.signature(function).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional[2:] if p.default is p.empty]
    if len(positional) < 2 or required:
        raise UserError(f"{where}: a training function takes (config, run), e.g. `def {name}(config: Config, run):`; "
                        f"it takes ({', '.join(p.name for p in params)})")
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # noqa: BLE001 - the user's annotations: a name that does not resolve
        raise UserError(f"{where}: its annotations do not resolve: {type(exc).__name__}: {exc}") from None
    model = hints.get(positional[0].name)
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        if model not in (dict, typing.Any) and typing.get_origin(model) is not dict:
            raise UserError(f"{where}: its config is annotated {brief(model)}; accepted: a pydantic model "
                            "(its fields are the keys), dict, or no annotation")
        model = None
    task_name = f"{plugin.name}:{name}"
    doc = (function.__doc__ or f"the training function {name} of {plugin.path}").strip()
    cls = type(f"Function_{name}", (FunctionTask,), {"name": task_name, "function": staticmethod(function),
                                                      "params_model": model, "__doc__": doc})
    TASKS.register(task_name)(cls)
    return task_name


def _explain(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "missing":
        return f"{key}: required; give it as {key}=VALUE"
    return f"{key}: {err['msg'].lower()}, got {brief(err.get('input'))}"
