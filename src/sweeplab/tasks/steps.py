"""Tasks on generated data that count optimizer steps (palindrome, addition).

There is no dataset to pass over, so the engine's "epoch" is `train.eval_every` steps of fresh
batches, and an evaluation follows each one.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from sweeplab.config import TrainConfig
from sweeplab.data.sequences import TEST_SEED, seeded_rng
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import DATASETS
from sweeplab.store import Metric
from sweeplab.tasks.base import WHOLE, Part, StepOutput, Task


class StepTrainConfig(TrainConfig):
    epochs: int = Field(1, ge=1, description="unused: this task counts optimizer steps (train.max_steps)")
    max_steps: int = Field(10_000, ge=1, description="optimizer steps, each on a fresh batch")
    eval_every: int = Field(100, ge=1, description="steps between evaluations (and checkpoints)")
    eval_batch_size: int = Field(1000, ge=1, le=1_000_000, description="fresh examples per evaluation (and the test set's chunk)")
    step_size: int = Field(10, ge=1, description="step schedule: evaluations between lr drops")
    converged_at: float = Field(0.99, gt=0, le=1, description="convergence step: the first evaluation from which "
                                                              "valid/acc stays at or above this")

    @model_validator(mode="after")
    def _steps_not_epochs(self) -> StepTrainConfig:
        if self.epochs != 1:
            raise ValueError("train.epochs does not apply to a step-based task; set train.max_steps")
        return self


def convergence_step(points: list[tuple[int, float]], threshold: float) -> float:
    """Step of the first evaluation from which accuracy stays >= threshold to the end; NaN if it never settles."""
    step = math.nan
    for at, acc in points:
        if acc < threshold:
            step = math.nan
        elif math.isnan(step):
            step = float(at)
    return step


class StepTask(Task):
    """Generated data, counted in steps: epoch e = steps (e-1)*eval_every+1 .. e*eval_every.

    Training batches are a pure function of (seed, epoch, batch index), so a run resumed from a
    checkpoint sees the same batches. Each evaluation scores a fresh batch drawn from (seed, epoch);
    the test set, scored once with the best weights, is the same for every run seed.
    """
    capabilities = frozenset({"steps"})
    directions = {**Task.directions, "acc": 1, "digit_acc": 1}

    train_config = StepTrainConfig
    # The course report's settings: RMSprop, lr 1e-2, batch 128, clipping at max-norm 10, evaluation every 100 steps.
    defaults = {"data": "generated", "optim": "rmsprop", "optim.lr": 1e-2, "train.batch_size": 128,
                "train.eval_every": 100, "train.clip": 10.0, "train.keep_checkpoints": "best"}
    eval_splits = ("valid",)
    final_splits = ("test",)
    batch_name = "steps"
    epoch_name = "block"  # train.eval_every steps, then an evaluation
    data: Any  # the dataset object: input_dim, num_classes, batch(rng, n, device)

    def build(self) -> nn.Module:
        self.data = DATASETS.get(self.cfg.data_name, group=self.name).obj(self.cfg.data)
        self.epoch = 0  # the epoch being trained: seeds its evaluation batch
        self.test_set: list[Any] | None = None
        return self.create_model(VectorSpec(self.data.input_dim, self.data.num_classes)).to(self.device)

    # -- the step-based schedule -----------------------------------------------------------------
    def num_epochs(self) -> int:
        return math.ceil(self.cfg.train.max_steps / self.cfg.train.eval_every)

    def batches_per_epoch(self) -> int:
        return self.cfg.train.eval_every

    def eval_interval(self) -> int:
        return 1  # an epoch already is `eval_every` steps

    def train_batches(self, epoch: int) -> Iterator[Any]:
        self.epoch = epoch
        return (self.data.batch(seeded_rng(self.cfg.seed, "train", (epoch - 1) * self.batches_per_epoch() + i),
                                self.cfg.train.batch_size, self.device) for i in range(self.batches_per_epoch()))

    def train_step(self, model: nn.Module, batch: Any) -> StepOutput:
        return self.score(model, batch)

    def score(self, model: nn.Module, batch: Any) -> StepOutput:
        """Mean loss of a batch (backpropagated in training) and the sums its metrics need."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_sums(self, model: nn.Module, split: str, part: Part = WHOLE) -> dict[str, Any]:
        model.eval()
        sums: dict[str, Any] = {"loss": 0.0, "n": 0}
        for batch in self.eval_batches(split):
            batch, _ = self.shard(batch, part)
            if batch[0].size(0) == 0:  # more ranks than examples in this batch
                continue
            out = self.score(model, batch)
            sums["loss"] += out.loss.float() * out.n
            sums["n"] += out.n
            for key, value in out.sums.items():
                sums[key] = sums.get(key, 0) + value
        model.train()
        return sums

    def eval_batches(self, split: str) -> list[Any]:
        size = self.cfg.train.eval_batch_size
        if split == "valid":
            return [self.data.batch(seeded_rng(self.cfg.seed, "valid", self.epoch), size, self.device)]
        if self.test_set is None:  # drawn once, in eval-batch-size chunks
            rng, total = seeded_rng(TEST_SEED, "test"), self.cfg.data.test_size
            self.test_set = [self.data.batch(rng, min(size, total - i), self.device) for i in range(0, total, size)]
        return self.test_set

    def summarize(self, metrics: list[Metric]) -> dict[str, float]:
        """`converged` 1/0 and, when 1, `convergence_step` (no NaN: the store and --json keep only numbers)."""
        points = [(m.step, m.value) for m in metrics if m.key == "valid/acc"]
        step = convergence_step(points, self.cfg.train.converged_at)
        return {"converged": 0.0} if math.isnan(step) else {"converged": 1.0, "convergence_step": step}
