"""Typed configuration: defaults, then the experiment file, then `key=value` overrides.

Every component keeps its config class next to itself (a pydantic model with `extra="forbid"`
and strict types, so an override must keep the default's type). `resolve()` turns a task name
and layers of dotted keys into a validated `RunConfig`; `run_key()` hashes it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sweeplab.errors import UserError
from sweeplab.registry import DATASETS, MODELS, OPTIMIZERS, TASKS

GROUPS = ("data", "model", "optim", "train")
TOP_LEVEL = ("seed", "device")


class Section(BaseModel):
    """Base of every config section: unknown keys and type changes are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OptimConfig(Section):
    lr: float = Field(0.01, gt=0, description="learning rate")
    momentum: float = Field(0.0, ge=0, description="momentum (sgd, rmsprop)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="passes over the training data")
    max_steps: int = Field(0, ge=0, description="cap on optimizer steps, 0 = no cap")
    batch_size: int = Field(32, ge=1, description="training batch size")
    eval_batch_size: int = Field(64, ge=1, description="evaluation batch size")
    clip: float = Field(0.0, ge=0, description="global-norm gradient clipping, 0 = off")
    schedule: Literal["constant", "step", "cosine", "plateau"] = Field("constant", description="lr schedule")
    step_size: int = Field(10, ge=1, description="step schedule: epochs between lr drops")
    gamma: float = Field(0.1, gt=0, description="step schedule: lr factor per drop")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    compile: bool = Field(False, description="torch.compile the model")
    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (steps for step-based tasks)")
    log_every: int = Field(200, ge=1, description="log every N training batches")
    keep_checkpoints: Literal["all", "best", "last"] = Field("all", description="which checkpoints to keep")
    nproc: int = Field(1, ge=1, description="processes training the run together (DDP): GPUs with device=cuda")


class DataConfig(Section):
    path: str = Field("", description="folder that overrides the data root's default sub-folder")


class ModelConfig(Section):
    """A model without settings of its own."""


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run: the task, its components' names and validated settings."""

    task: str
    seed: int
    device: str
    data_name: str
    model_name: str
    optim_name: str
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "seed": self.seed,
            "device": self.device,
            "data": {"name": self.data_name, **self.data.model_dump()},
            "model": {"name": self.model_name, **self.model.model_dump()},
            "optim": {"name": self.optim_name, **self.optim.model_dump()},
            "train": self.train.model_dump(),
        }



def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config (`RunConfig.to_dict()`) as one layer of dotted keys, as `resolve` reads them."""
    flat: dict[str, Any] = {"seed": config["seed"], "device": config["device"]}
    for group in GROUPS:
        for key, value in config[group].items():
            flat[group if key == "name" else f"{group}.{key}"] = value
    return flat


def run_key(cfg: RunConfig) -> str:
    """Same resolved config (seed included) -> same key, so nothing is trained twice."""
    blob = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Parsing values: YAML 1.1 reads "1e-4" as a string; this loader reads it as the float it is.

class _Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_value(text: str) -> Any:
    """`KEY=VALUE` value: int, float, bool, null, or the string itself."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"override {pair!r} is not KEY=VALUE (e.g. model.nlayers=2)")
        out[key.strip()] = parse_value(value)
    return out


# ---------------------------------------------------------------------------------------------
# Resolution

def resolve(task_name: str, *layers: dict[str, Any]) -> RunConfig:
    """Task defaults, then each layer in order (experiment file, overrides); validated."""
    import sweeplab.tasks  # noqa: F401 - fills the registries

    task = TASKS.get(task_name, key="task").obj
    merged: dict[str, Any] = {"seed": 1111, "device": "auto", **task.defaults}
    for layer in layers:
        merged.update(layer)
    _check_keys(merged)
    names = {g: merged.get(g) for g in ("data", "model", "optim")}
    for group, name in names.items():
        if not isinstance(name, str):
            raise UserError(f"{group}: expected a name, got {name!r}")
    data = DATASETS.get(names["data"], group=task_name, key="data")
    model = MODELS.get(names["model"], group=task_name, key="model")
    OPTIMIZERS.get(names["optim"], key="optim")
    return RunConfig(
        task=task_name,
        seed=_typed(merged, "seed", int),
        device=_device(merged["device"]),
        data_name=names["data"],
        model_name=names["model"],
        optim_name=names["optim"],
        data=_section(data.config or DataConfig, "data", merged),
        model=_section(model.config or ModelConfig, "model", merged),
        optim=_section(OptimConfig, "optim", merged),
        train=_section(task.train_config, "train", merged),
    )


def _check_keys(merged: dict[str, Any]) -> None:
    for key in merged:
        group = key.split(".", 1)[0]
        if key in TOP_LEVEL or key in GROUPS[:3] or ("." in key and group in GROUPS):
            continue
        accepted = ", ".join([*TOP_LEVEL, "data=NAME", "model=NAME", "optim=NAME", "data.*", "model.*", "optim.*", "train.*"])
        raise UserError(f"unknown key {key!r}; accepted: {accepted}")


def _typed(merged: dict[str, Any], key: str, kind: type) -> Any:
    value = merged[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _device(value: Any) -> str:
    if value not in ("auto", "cpu", "cuda") and not (isinstance(value, str) and value.startswith("cuda:")):
        raise UserError(f"device: {value!r} is not accepted; accepted: auto, cpu, cuda, cuda:N")
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
    given = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {key!r}; accepted: " + ", ".join(f"{group}.{f}" for f in cls.model_fields)
    if kind == "literal_error":
        return f"{key}: {given!r} is not accepted; accepted: {err['ctx']['expected']}"
    if kind in _TYPE_WORDS:
        return f"{key}: expected {_TYPE_WORDS[kind]}, got {given!r}"
    if kind == "value_error":
        return f"{key}: {err['ctx']['error']}" if loc else f"invalid {group} settings: {err['ctx']['error']}"
    return f"{key}: {err['msg'].lower()}, got {given!r}"


def describe(cls: type[Section], group: str) -> list[tuple[str, str, str]]:
    """(key, default, description) rows for `--help`-style listings."""
    rows = []
    for name, field in cls.model_fields.items():
        rows.append((f"{group}.{name}", repr(field.default), field.description or ""))
    return rows
