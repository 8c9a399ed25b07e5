"""The Task interface: what the engine needs from an experiment, and nothing about how it trains.

A task builds its data and model from the resolved config, turns a batch into a loss, and
evaluates a split into metrics. The engine (engine/trainer.py) owns the loop, the optimizer, the
schedule, checkpoints and the store.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sweeplab.config import RunConfig, TrainConfig
from sweeplab.engine.optim import create_optimizer
from sweeplab.store import Metric


@dataclass
class StepOutput:
    loss: torch.Tensor  # mean loss of the batch: the one that is backpropagated
    n: int  # items the mean runs over (tokens, samples): weights the epoch average
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # extra sums, kept on the device (e.g. correct)


class Task:
    name: ClassVar[str]
    train_config: ClassVar[type[TrainConfig]] = TrainConfig
    defaults: ClassVar[dict[str, Any]] = {}  # a layer of dotted keys below the experiment file and overrides
    monitor: ClassVar[str] = "valid/loss"  # lower is better: picks the best checkpoint, drives `plateau`
    eval_splits: ClassVar[tuple[str, ...]] = ("valid",)  # evaluated at every evaluation point
    final_splits: ClassVar[tuple[str, ...]] = ("test",)  # evaluated once, with the best checkpoint
    item_name: ClassVar[str] = "samples"  # what `n` counts: throughput is reported as <item>/s
    batch_name: ClassVar[str] = "batches"
    epoch_name: ClassVar[str] = "epoch"  # what one pass of train_batches is called in the log lines
    # What the task's runs can do beyond training, asked by the commands and the report (`sweeplab.tasks.capable`)
    # instead of lists of task names: "steps" (an "epoch" is train.eval_every optimizer steps on fresh data),
    # "predict" (`predict(model, split)`: labelled predictions, for `compare`), "text" (a language model:
    # `generate`), "attention" (attention maps of its Transformer models: `attention`).
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        self.device = device

    # -- building ----------------------------------------------------------------------------
    def build(self) -> nn.Module:
        """Prepare the data and return the model on `self.device`. Bad data raises UserError."""
        raise NotImplementedError

    def create_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return create_optimizer(self.cfg.optim_name, self.cfg.optim, model.parameters())

    def count_params(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    # -- training ----------------------------------------------------------------------------
    def num_epochs(self) -> int:
        return self.cfg.train.epochs

    def batches_per_epoch(self) -> int:
        raise NotImplementedError

    def eval_interval(self) -> int:
        """Epochs between evaluations. A step-based task, whose epoch is `train.eval_every` steps, returns 1."""
        return self.cfg.train.eval_every

    def train_batches(self, epoch: int) -> Iterator[Any]:
        """The batches of one epoch: a pure function of (seed, epoch), so a resumed run sees the same ones."""
        raise NotImplementedError

    def shard(self, batch: Any, rank: int, world: int) -> Any:
        """This rank's part of a training batch under DDP (train.nproc > 1): equal slices of every tensor."""
        return tuple(t.tensor_split(world)[rank] for t in batch)

    def train_step(self, model: nn.Module, batch: Any) -> StepOutput:
        raise NotImplementedError

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Epoch (or interval) training metrics from the accumulated sums; `loss` and `n` are always there."""
        return {"loss": sums["loss"] / max(sums["n"], 1)}

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of a split. A task whose evaluation is long also takes `limit_batches` (only the first
        that many batches) and says how many there are in `eval_batch_count`: the planner times a few."""
        raise NotImplementedError

    def eval_batch_count(self, split: str) -> int | None:
        """Batches in one evaluation of `split`; None: `evaluate` takes no `limit_batches` (it is timed whole)."""
        return None

    def finish(self, model: nn.Module, run_dir: Path) -> dict[str, float]:
        """After training, with the best weights loaded: write artifacts (text, figures); extra summary values."""
        return {}

    def summarize(self, metrics: list[Metric]) -> dict[str, float]:
        """Extra summary values computed from the run's whole metric history (a resumed run's included),
        e.g. the step at which accuracy settled."""
        return {}
