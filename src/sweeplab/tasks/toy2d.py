"""Toy 2D classification: an MLP in PyTorch against the same MLP written by hand in NumPy.

Both models see the same points, start from the same weights and get the same mini-batches in the
same order (the batches are the task's, a function of (seed, epoch)), so their curves differ only by
floating-point rounding. `valid` (held out from the training points) is evaluated every
`train.eval_every` epochs and picks the best epoch; `test` is scored once, with the best weights.
The run ends with a decision-boundary figure in the run folder.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sweeplab.config import RunConfig, TrainConfig
from sweeplab.data.images import epoch_generator
from sweeplab.data.toy2d import Toy2D, Toy2DDataConfig, make_toy2d
from sweeplab.errors import UserError
from sweeplab.models.mlp_numpy import NumpyMLP, NumpySGD, clip_global_norm, softmax_cross_entropy
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import TASKS
from sweeplab.store import Metric
from sweeplab.tasks.base import WHOLE, Part, StepOutput, Task

FIGURE = "decision_boundary"  # .png and .svg in the run folder
CONVERGED_WITHIN = 0.01  # convergence epoch: first evaluation within 1 point of the best valid accuracy


@TASKS.register("toy2d")
class Toy2DTask(Task):
    """Toy 2D classification (moons, circles, classification): PyTorch MLP vs NumPy MLP."""
    capabilities = frozenset({"predict"})
    directions = {**Task.directions, "acc": 1}

    name = "toy2d"
    train_config = TrainConfig
    defaults = {"data": "moons", "model": "mlp", "optim": "sgd", "optim.lr": 0.1, "train.epochs": 100,
                "train.batch_size": 32, "train.keep_checkpoints": "last", "train.log_every": 1000}
    monitor = "valid/loss"  # model selection on points held out from training, never on the test points
    eval_splits = ("valid",)  # train metrics come from the epoch itself
    final_splits = ("test",)
    data: Toy2D

    def build(self) -> nn.Module:
        assert isinstance(self.cfg.data, Toy2DDataConfig)
        self.data = make_toy2d(self.cfg.data_name, self.cfg.data, self.cfg.seed)
        model = self.create_model(VectorSpec(self.data.x_train.size(1), self.data.num_classes))
        if isinstance(model, NumpyMLP):
            self.device = torch.device("cpu")  # NumPy computes on the host, whatever the device
        d = self.data
        self.splits = {"train": (d.x_train.to(self.device), d.y_train.to(self.device)),
                       "valid": (d.x_valid.to(self.device), d.y_valid.to(self.device)),
                       "test": (d.x_test.to(self.device), d.y_test.to(self.device))}
        return model.to(self.device)

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """mlp_numpy's update is written by hand for plain SGD in NumPy: no other optimizer, autocast,
        compilation or DDP (checked when the config is resolved, so every cell of a sweep is checked at load)."""
        if cfg.model_name != "mlp_numpy":
            return
        t = cfg.train
        if cfg.optim_name != "sgd":
            raise UserError(f"optim={cfg.optim_name}: mlp_numpy implements its update by hand for sgd only; "
                            "accepted: optim=sgd (with optim.momentum, optim.weight_decay)")
        if t.precision != "fp32" or t.compile or t.nproc > 1:
            raise UserError("mlp_numpy computes in NumPy: train.precision must be fp32, train.compile false "
                            "and train.nproc 1")

    def chance(self) -> dict[str, float]:
        return {"acc": 1 / self.data.num_classes}

    def create_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if isinstance(model, NumpyMLP):
            o = self.cfg.optim
            return NumpySGD(model, o.lr, o.momentum, o.weight_decay)  # type: ignore[return-value]
        return super().create_optimizer(model)

    def count_params(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())  # mlp_numpy's are all trained, by hand

    # -- training ----------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        return -(-len(self.data.y_train) // self.cfg.train.batch_size)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.splits["train"]
        order = torch.randperm(len(y), generator=epoch_generator(self.cfg.seed, epoch)).to(self.device)
        for batch in order.split(self.cfg.train.batch_size):
            yield x[batch], y[batch]

    def train_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        if isinstance(model, NumpyMLP):
            return self._numpy_step(model, x, y)
        logits = model(x)  # (B, classes)
        return StepOutput(F.cross_entropy(logits, y), len(y), {"correct": (logits.argmax(1) == y).sum()})

    def _numpy_step(self, model: NumpyMLP, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """Forward and backward by hand; the engine then calls NumpySGD.step()."""
        logits, cache = model.forward_cache(x.numpy())
        loss, dlogits = softmax_cross_entropy(logits, y.numpy())
        model.grads = model.backward(cache, dlogits)
        if self.cfg.train.clip > 0:
            clip_global_norm(model.grads, self.cfg.train.clip)
        correct = int((logits.argmax(1) == y.numpy()).sum())
        return StepOutput(torch.tensor(loss), len(y), {"correct": torch.tensor(correct)})

    def metrics_of(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["n"], 1)
        return {"loss": sums["loss"] / n, "acc": sums["correct"] / n}

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_sums(self, model: nn.Module, split: str, part: Part = WHOLE) -> dict[str, Any]:
        x, y = (part.take(t) for t in self.splits[split])
        logits = model(x).float()  # (B, classes)
        return {"loss": F.cross_entropy(logits, y, reduction="sum"), "n": len(y), "correct": (logits.argmax(1) == y).sum()}

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Predicted and true labels of a split (for `sweeplab compare`); samples are named by index."""
        if split not in self.splits:
            raise UserError(f"--split: {split!r} is not a split of toy2d; accepted: {', '.join(self.splits)}")
        x, y = self.splits[split]
        return model(x).argmax(1).cpu(), y.cpu(), list(range(len(y)))

    def class_names(self) -> list[str]:
        return [str(c) for c in range(self.data.num_classes)]

    def finish(self, model: nn.Module, run_dir: Path) -> dict[str, float]:
        title = f"{self.cfg.model_name} on {self.cfg.data_name} (seed {self.cfg.seed})"
        save_decision_boundary(model, self.data, run_dir / FIGURE, title)
        return {}

    def summarize(self, metrics: list[Metric]) -> dict[str, float]:
        return convergence_epoch(metrics)


def convergence_epoch(metrics: list[Metric], split: str = "valid") -> dict[str, float]:
    """The first evaluated epoch whose accuracy is within CONVERGED_WITHIN of the run's best."""
    acc = [(m.epoch, m.value) for m in metrics if m.split == split and m.name == "acc" and m.value == m.value]
    if not acc:
        return {}
    best = max(v for _, v in acc)
    first = min(e for e, v in acc if v >= best - CONVERGED_WITHIN)
    return {"convergence_epoch": float(first), f"best_{split}_acc": best}


@torch.no_grad()
def save_decision_boundary(model: nn.Module, data: Toy2D, stem: Path, title: str, grid: int = 200) -> list[Path]:
    """The predicted class over the plane (filled), with train (dots), valid (triangles) and test points (crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = torch.cat([data.x_train, data.x_valid, data.x_test]).numpy()
    lo, hi = points.min(axis=0) - 0.5, points.max(axis=0) + 0.5
    xs, ys = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    plane = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32))  # (grid*grid, 2)
    device = next(model.parameters()).device
    probs = model(plane.to(device)).float().softmax(1).cpu().numpy()  # (grid*grid, classes)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.contourf(xs, ys, probs.argmax(1).reshape(xs.shape), levels=np.arange(data.num_classes + 1) - 0.5,
                cmap="coolwarm", alpha=0.35, rasterized=True)  # a bitmap inside the SVG: small files
    if data.num_classes == 2:  # the boundary itself: where both classes are equally likely
        ax.contour(xs, ys, probs[:, 1].reshape(xs.shape), levels=[0.5], colors="k", linewidths=1)
    for x, y, marker, label in ((data.x_train, data.y_train, "o", "train"), (data.x_valid, data.y_valid, "^", "valid"),
                                (data.x_test, data.y_test, "x", "test")):
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", marker=marker, s=12, label=label, vmin=0,
                   vmax=max(data.num_classes - 1, 1), linewidths=1, rasterized=True)
    test_acc = float((model(data.x_test.to(device)).argmax(1).cpu() == data.y_test).float().mean())
    ax.set_title(f"{title}\ntest accuracy {test_acc:.3f}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return paths
