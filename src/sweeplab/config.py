"""Typed configuration: defaults, then the experiment file, then `key=value` overrides.

A leaf module: sections, RunConfig, run keys and value parsing. Resolution, which needs the registries,
lives in sweeplab/tasks/resolve.py.

Every component keeps its config class next to itself (a pydantic model with `extra="forbid"`
and strict types, so an override must keep the default's type). `resolve()` turns a task name
and layers of dotted keys into a validated `RunConfig`; `run_key()` hashes it.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sweeplab.errors import UserError

GROUPS = ("data", "model", "optim", "train")
TOP_LEVEL = ("seed", "device")
# Seeds go to np.random.seed, the narrowest of the seeders (torch.manual_seed takes up to 2**64 - 1).
MAX_SEED = 2**32 - 1


# How a field enters the run key (see `key_fields`). Most fields are plain: always part of it.
OUTSIDE_KEY = {"key": "outside"}  # cannot change the numbers (log interval, which checkpoints are kept)
NEUTRAL = {"key": "neutral"}  # added after runs were stored, with a default that behaves as before: at that
#                               default the key leaves it out, so runs stored before it existed are still found.
#                               A neutral field's default must never change.
SIZE = {"size": True}  # a model setting that sets how big the model is: named when one is too big to train
MAX_LAYERS = 1000  # bound of every layer count: models list their layers before the memory check can count them


class Section(BaseModel):
    """Base of every config section: unknown keys, type changes and NaN or infinite numbers are errors (no setting
    takes one, and the stored config is JSON, which has none)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class OptimConfig(Section):
    lr: float = Field(0.01, gt=0, description="learning rate")
    momentum: float = Field(0.0, ge=0, description="momentum (sgd, rmsprop)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    alpha: float = Field(0.99, gt=0, lt=1, description="rmsprop: smoothing of the squared-gradient average "
                         "(PyTorch's default 0.99; Keras and TensorFlow use 0.9)", json_schema_extra=NEUTRAL)


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="passes over the training data")
    max_steps: int = Field(0, ge=0, description="cap on optimizer steps, 0 = no cap")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="training batch size")
    eval_batch_size: int = Field(64, ge=1, le=1_000_000, description="evaluation batch size")
    clip: float = Field(0.0, ge=0, description="global-norm gradient clipping, 0 = off")
    schedule: Literal["constant", "step", "cosine", "plateau"] = Field("constant", description="lr schedule")
    step_size: int = Field(10, ge=1, description="step schedule: epochs between lr drops")
    gamma: float = Field(0.1, gt=0, description="step schedule: lr factor per drop")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    compile: bool = Field(False, description="torch.compile the model")
    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (steps for step-based tasks)")
    log_every: int = Field(200, ge=1, description="log every N training batches", json_schema_extra=OUTSIDE_KEY)
    keep_checkpoints: Literal["all", "best", "last"] = Field(
        "all", description="which checkpoints to keep (the best epoch's always)", json_schema_extra=OUTSIDE_KEY)
    nproc: int = Field(1, ge=1, description="processes training the run together (DDP): GPUs with device=cuda",
                       json_schema_extra=NEUTRAL)


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
    # The users' plugins its components come from: (name, path, sha256 of the source), for the run key and row.
    plugins: tuple[tuple[str, str, str], ...] = ()
    # A function trainable's keys (sweeplab.tasks.function), validated, as JSON values; None for every other task,
    # whose settings are the sections (a function run's sections stay at their defaults and are not stored).
    params: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.params is not None:
            d: dict[str, Any] = {"task": self.task, "seed": self.seed, "device": self.device, "params": dict(self.params)}
        else:
            d = {
                "task": self.task,
                "seed": self.seed,
                "device": self.device,
                "data": {"name": self.data_name, **self.data.model_dump()},
                "model": {"name": self.model_name, **self.model.model_dump()},
                "optim": {"name": self.optim_name, **self.optim.model_dump()},
                "train": self.train.model_dump(),
            }
        if self.plugins:
            d["plugins"] = [{"name": n, "path": p, "sha256": h} for n, p, h in self.plugins]
        return d

    def sections(self) -> list[tuple[str, str | None, Section]]:
        """(group, component name, settings) of each config group (none for a function trainable)."""
        if self.params is not None:
            return []
        return [("data", self.data_name, self.data), ("model", self.model_name, self.model),
                ("optim", self.optim_name, self.optim), ("train", None, self.train)]



def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config (`RunConfig.to_dict()`) as one layer of dotted keys, as `resolve` reads them."""
    flat: dict[str, Any] = {"seed": config["seed"], "device": config["device"]}
    if "params" in config:  # a function trainable's keys are its own, undotted
        return {**flat, **config["params"]}
    for group in GROUPS:
        for key, value in config[group].items():
            flat[group if key == "name" else f"{group}.{key}"] = value
    return flat


def key_fields(cfg: RunConfig) -> dict[str, Any]:
    """What a run's key covers: every setting that can change its numbers, as dotted keys.

    Settings that cannot (OUTSIDE_KEY) are left out, and so is a NEUTRAL field at its default. The device
    counts by its type: `cuda:1` trains the same run as `cuda` (`auto` is resolved before this)."""
    flat: dict[str, Any] = {"task": cfg.task, "seed": cfg.seed, "device": cfg.device.split(":")[0]}
    if cfg.plugins:  # the source, not where it lies: the same file on another machine is the same run
        flat["plugins"] = sorted(f"{name}:{sha256}" for name, _, sha256 in cfg.plugins)
    if cfg.params is not None:
        flat.update({f"params.{k}": v for k, v in cfg.params.items()})
    for group, name, section in cfg.sections():
        if name is not None:
            flat[group] = name
        for field_name, info in type(section).model_fields.items():
            value = getattr(section, field_name)
            role = (info.json_schema_extra or {}).get("key")
            if role == "outside" or (role == "neutral" and value == info.default):
                continue
            flat[f"{group}.{field_name}"] = value
    return flat


def json_safe(value: Any) -> Any:
    """`value` with each NaN and infinity as None, for JSON, which has neither (`json.dumps` would write `NaN`,
    which no strict parser reads). Value by value: a text-wide replace would corrupt a name holding "NaN"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def hash_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_key(cfg: RunConfig) -> str:
    """Same experiment (seed included) -> same key, so nothing is trained twice."""
    return hash_key(key_fields(cfg))


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
    except (yaml.YAMLError, ValueError):  # ValueError: an int of over 4,300 digits, a date such as 2020-13-45
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"override {pair!r} is not KEY=VALUE (e.g. model.nlayers=2)")
        if key.strip() in out:  # as a key written twice in an experiment file: which one was meant?
            raise UserError(f"override {key.strip()!r} is given twice; accepted: each key once")
        out[key.strip()] = parse_value(value)
    return out


def describe(cls: type[Section], group: str) -> list[tuple[str, str, str]]:
    """(key, default, description) rows for `--help`-style listings."""
    rows = []
    for name, field in cls.model_fields.items():
        rows.append((f"{group}.{name}", repr(field.default), field.description or ""))
    return rows
