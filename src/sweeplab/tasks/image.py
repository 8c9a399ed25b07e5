"""Image classification (CIFAR-10, MNIST, Tiny-ImageNet, digits): loss, top-1 and top-5 accuracy.

The whole training set lives on the training device as uint8; each epoch's order, crops and flips
are drawn from (seed, epoch) and applied to the batch on the device, so a resumed run is exact and
no per-sample Python runs in the loop. `valid` (held out from the training images) is evaluated at
every evaluation point and picks the best checkpoint; `test` is evaluated once, with that checkpoint,
so model selection never sees it.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sweeplab.config import TrainConfig
from sweeplab.data.images import (
    ImageData,
    ImageDataConfig,
    ImageSplit,
    Normalizer,
    augmented_batches,
    eval_batches,
    load_images,
    plan_epoch,
)
from sweeplab.errors import UserError
from sweeplab.models import vision
from sweeplab.models.device import autocast
from sweeplab.registry import TASKS
from sweeplab.tasks.base import WHOLE, Part, StepOutput, Task


class ImageTrainConfig(TrainConfig):
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on GPUs, bf16/fp16)")


def topk_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many of the batch have the truth as the top prediction, and among the top five."""
    k = min(5, logits.size(1))
    top = logits.topk(k, dim=1).indices  # (B, k)
    hits = top == y[:, None]
    return hits[:, 0].sum(), hits.any(dim=1).sum()


@TASKS.register("image")
class ImageTask(Task):
    """Image classification: loss, top-1 and top-5 accuracy, a checkpoint per epoch."""
    capabilities = frozenset({"predict"})

    name = "image"
    train_config = ImageTrainConfig
    defaults = {"data": "digits", "model": "vgg8", "optim": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                "optim.weight_decay": 5e-4, "train.epochs": 10, "train.batch_size": 128,
                "train.eval_batch_size": 500, "train.schedule": "cosine", "train.log_every": 50}
    item_name = "images"
    directions = {**Task.directions, "acc1": 1, "acc5": 1, "images_per_s": 1}
    monitor = "valid/loss"  # every dataset has a `valid` split: carved from the training images if need be
    eval_splits = ("valid",)
    final_splits = ("test",)
    data: ImageData

    def build(self) -> nn.Module:
        assert isinstance(self.cfg.data, ImageDataConfig)
        self.data = load_images(self.cfg.data_name, self.cfg.data, self.cfg.seed)
        self.train_x = self.data.train.x.to(self.device)
        self.train_y = self.data.train.y.to(self.device)
        self.held_out = {k: ImageSplit(s.x.to(self.device), s.y.to(self.device), s.index, s.names)
                         for k, s in self.data.held_out.items()}
        channels_last = self.cfg.train.channels_last
        self.normalize = Normalizer(self.data.mean, self.data.std, self.device, channels_last)
        c, h, w = self.data.shape
        spec = vision.ImageSpec(c, h, w, self.data.num_classes)
        vision.check_classes(spec, self.cfg.model)
        model = self.create_model(spec).to(self.device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    def chance(self) -> dict[str, float]:
        classes = self.data.num_classes
        return {"acc1": 1 / classes, "acc5": min(5, classes) / classes}

    # -- training ----------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        return max(len(self.train_y) // self.cfg.train.batch_size, 1)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.cfg.data
        plan = plan_epoch(len(self.train_y), self.cfg.seed, epoch, d.crop_padding, d.flip, self.device)
        yield from augmented_batches(self.train_x, self.train_y, plan, self.cfg.train.batch_size, d.crop_padding,
                                     self.normalize)

    def train_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        logits = model(x)  # (B, classes)
        correct1, correct5 = topk_correct(logits.detach(), y)
        return StepOutput(F.cross_entropy(logits, y), len(y), {"correct1": correct1, "correct5": correct5})

    def metrics_of(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["n"], 1)
        return {"loss": sums["loss"] / n, "acc1": sums["correct1"] / n, "acc5": sums["correct5"] / n}

    # -- evaluation --------------------------------------------------------------------------
    def eval_batch_count(self, split: str) -> int:
        return -(-len(self.held_out[split]) // self.cfg.train.eval_batch_size)

    @torch.no_grad()
    def evaluate_sums(self, model: nn.Module, split: str, part: Part = WHOLE,
                      limit_batches: int | None = None) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, device=self.device)  # loss, correct1, correct5: summed on the device
        whole = self.held_out[split]
        images = ImageSplit(part.take(whole.x), part.take(whole.y), part.take(whole.index))
        size, n = self.cfg.train.eval_batch_size, len(images)
        batches = eval_batches(images, size, self.normalize, self.device)
        if limit_batches is not None:  # the first limit_batches batches only
            batches, n = islice(batches, limit_batches), min(n, limit_batches * size)
        for x, y in batches:
            with autocast(self.device, self.cfg.train.precision):
                logits = model(x)
            c1, c5 = topk_correct(logits, y)
            sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum"), c1.float(), c5.float()])
        model.train(was_training)
        loss, c1, c5 = sums
        return {"loss": loss, "n": n, "correct1": c1, "correct5": c5}

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str] | list[int]]:
        """Top-1 predictions and truth of a split, and its sample ids (file names or indices)."""
        if split not in self.held_out:
            raise UserError(f"--split: {split!r} is not a held-out split of this run; "
                            f"accepted: {', '.join(self.held_out)}")
        model.eval()
        preds = []
        for x, _ in eval_batches(self.held_out[split], self.cfg.train.eval_batch_size, self.normalize, self.device):
            with autocast(self.device, self.cfg.train.precision):
                preds.append(model(x).argmax(1))
        split_data = self.held_out[split]
        return torch.cat(preds).cpu(), split_data.y.cpu(), split_data.sample_ids()

    def class_names(self) -> list[str]:
        return self.data.classes

    def finish(self, model: nn.Module, run_dir: Path) -> dict[str, float]:
        """The class names beside the checkpoints, so predictions can be read without the data."""
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "classes.txt").write_text("\n".join(self.data.classes) + "\n", encoding="utf8")
        return {}
