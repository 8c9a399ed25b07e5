"""What a task's data tells a model factory, the first argument of every factory: `create(spec, cfg)`.

Images get an ImageSpec (sweeplab.models.vision: channels, height, width, num_classes), language models a
VocabSpec, and the tasks whose items are vectors or sequences of vectors (toy2d, palindrome, addition) a
VectorSpec. Sizes come from the data, never typed by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from sweeplab.registry import MODELS


def create_model(task: str, name: str, spec: Any, cfg: Any) -> nn.Module:
    """The model `name` of `task` (a built-in or a plugin's) for data that `spec` describes: the one way a model
    is made from its name (sweeplab.tasks.base.Task.create_model checks first that it fits in memory)."""
    return MODELS.get(name, group=task, key="model").obj(spec, cfg)


@dataclass(frozen=True)
class VectorSpec:
    input_dim: int  # features of a point, or of one step of a sequence
    num_classes: int  # outputs: classes, or digit values


@dataclass(frozen=True)
class VocabSpec:
    ntoken: int  # the vocabulary's size: the embedding's rows and the decoder's outputs
