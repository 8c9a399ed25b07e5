"""The Task interface: what the engine needs from an experiment, and nothing about how it trains.

A task builds its data and model from the resolved config, turns a batch into a loss, and
evaluates a split into metrics. The engine (engine/trainer.py) owns the loop, the optimizer, the
schedule, checkpoints and the store.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sweeplab.config import RunConfig, TrainConfig
from sweeplab.models.optim import create_optimizer
from sweeplab.models.size import check_fits
from sweeplab.models.spec import create_model
from sweeplab.store import Metric


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` of everything a DDP group shares out (a batch, a split to evaluate): the
    slices `tensor_split` makes, so the parts of N items hold N // count or one more; `Part()` is the whole."""

    index: int = 0
    count: int = 1

    def bounds(self, n: int) -> tuple[int, int]:
        size, extra = divmod(n, self.count)
        start = self.index * size + min(self.index, extra)
        return start, start + size + (self.index < extra)

    def take(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if self.count == 1:
            return tensor
        start, stop = self.bounds(tensor.size(dim))
        return tensor.narrow(dim, start, stop - start)


WHOLE = Part()


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
    # Which way its metrics are better, by name (the part after `split/`, or a summary key): +1 higher, -1 lower.
    # The report ranks, bolds and compares only what is declared here or by a column's `better:`.
    directions: ClassVar[dict[str, int]] = {"loss": -1, "ms_per_batch": -1, "epoch_time_s": -1,
                                            "samples_per_s": 1, "convergence_epoch": -1, "convergence_step": -1}

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Combinations of settings the task cannot train, as one UserError; called when a config is resolved,
        so a sweep's every cell is checked when its file is loaded, before the first one trains."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        self.device = device

    # -- building ----------------------------------------------------------------------------
    def build(self) -> nn.Module:
        """Prepare the data and return the model on `self.device`. Bad data raises UserError."""
        raise NotImplementedError

    def create_model(self, spec: Any) -> nn.Module:
        """The config's model (built-in or a plugin's: one factory shape, `create(spec, cfg)`) for data that
        `spec` describes; once it is known to fit in memory to train, else one UserError before a byte is
        allocated (the count runs on the meta device: sweeplab.models.size)."""
        create = functools.partial(create_model, self.cfg.task, self.cfg.model_name)
        check_fits(create, (spec, self.cfg.model), self.cfg, self.device)
        return create(spec, self.cfg.model)

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

    def shard(self, batch: Any, part: Part) -> tuple[Any, float]:
        """This rank's part of a training batch under DDP (train.nproc > 1), and its share of the batch's items
        (`StepOutput.n`): the engine weights the part's mean loss by it, so the ranks' averaged gradient is
        the whole batch's. Here: rows of every tensor (the first dimension counts the items)."""
        first = batch[0].size(0)
        return tuple(part.take(t) for t in batch), part.take(batch[0]).size(0) / max(first, 1)

    def train_step(self, model: nn.Module, batch: Any) -> StepOutput:
        raise NotImplementedError

    def metrics_of(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from sums, for training (an epoch, a log interval) and evaluation alike; `loss` (summed over
        items) and `n` (items) are always there."""
        return {"loss": sums["loss"] / max(sums["n"], 1)}

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, split: str, **limits: Any) -> dict[str, float]:
        """Metrics of a whole split, in this process."""
        return self.metrics_of({k: float(v) for k, v in self.evaluate_sums(model, split, WHOLE, **limits).items()})

    def evaluate_sums(self, model: nn.Module, split: str, part: Part = WHOLE) -> dict[str, Any]:
        """Sums (`loss`, `n` and what `metrics_of` reads) over `part` of a split; under DDP each rank scores
        its part and the engine adds them up. A task whose evaluation is long also takes `limit_batches` (only
        the first that many batches) and says how many there are in `eval_batch_count`: the planner times a few."""
        raise NotImplementedError

    def eval_batch_count(self, split: str) -> int | None:
        """Batches in one evaluation of `split`; None: `evaluate` takes no `limit_batches` (it is timed whole)."""
        return None

    def finish(self, model: nn.Module, run_dir: Path) -> dict[str, float]:
        """After training, with the best weights loaded: write artifacts (text, figures); extra summary values."""
        return {}

    def chance(self) -> dict[str, float]:
        """What guessing scores, by metric name, once `build` has run (a perplexity of the vocabulary's size, an
        accuracy of one over the classes): the run's summary keeps it as `chance/NAME`, and the report marks a run
        no better than it as one that did not learn (never bold, never a winner). {}: nothing declared."""
        return {}

    def summarize(self, metrics: list[Metric]) -> dict[str, float]:
        """Extra summary values computed from the run's whole metric history (a resumed run's included),
        e.g. the step at which accuracy settled."""
        return {}
