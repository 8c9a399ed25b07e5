"""The public contract of users' own files: what a plugin imports from sweeplab, and nothing else.

    from sweeplab.api import ImageSpec, ModelConfig, register_model
    from pydantic import Field
    from torch import nn

    class MyCNNConfig(ModelConfig):
        width: int = Field(32, ge=1, description="channels of the first convolution")

    @register_model("my_cnn", task="image", config=MyCNNConfig)
    def my_cnn(spec: ImageSpec, cfg: MyCNNConfig) -> nn.Module:
        ...

A model factory takes what its task's data says about the input and output, its spec (`image`: ImageSpec;
`lm`: VocabSpec; `toy2d`, `palindrome`, `addition`: VectorSpec), and the model's validated config, as sweeplab's
own models do. A training function of your own needs nothing from here but, for its annotation, `Run`:

    def train(config: MyConfig, run: Run) -> None: ...   # sweeplab run train.py:train lr=0.01

Load the file with `--plugin my_models.py`, `plugins: [my_models.py]` in an experiment
file, `$SWEEPLAB_PLUGINS`, or an installed package's entry point in group `sweeplab.plugins`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeplab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from sweeplab.models.spec import VectorSpec, VocabSpec
from sweeplab.models.vision import ImageSpec
from sweeplab.registry import DATASETS, MODELS, OPTIMIZERS, TASKS
from sweeplab.tasks.base import Part, StepOutput, Task
from sweeplab.tasks.function import Run


def register_model(name: str, *, task: str, config: type[ModelConfig] | None = None) -> Callable[[Any], Any]:
    """A model of `task`, chosen with `model=NAME`; its keys are `config`'s fields (`model.KEY=VALUE`)."""
    return MODELS.register(name, group=task, config=config)


def register_dataset(name: str, *, task: str, config: type[DataConfig] | None = None) -> Callable[[Any], Any]:
    """A dataset of `task`, chosen with `data=NAME`, built as the task's own datasets are."""
    return DATASETS.register(name, group=task, config=config)


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """A task: a subclass of Task (build, train_batches, train_step, evaluate_sums, metrics_of)."""
    return TASKS.register(name)


def register_optimizer(name: str) -> Callable[[Any], Any]:
    """An optimizer, chosen with `optim=NAME`: a function (params, cfg: OptimConfig) -> torch.optim.Optimizer."""
    return OPTIMIZERS.register(name)


__all__ = ["DataConfig", "ImageSpec", "ModelConfig", "OptimConfig", "Part", "Run", "RunConfig", "StepOutput", "Task",
           "TrainConfig", "VectorSpec", "VocabSpec", "register_dataset", "register_model", "register_optimizer",
           "register_task"]
