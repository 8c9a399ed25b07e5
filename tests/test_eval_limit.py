"""`evaluate(..., limit_batches=N)`: the first N batches of a split only (the planner times a few); the default
evaluates the whole split, as before."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.sweep_helpers import TINY_BASE

from sweeplab.data.text import get_batch
from sweeplab.registry import TASKS
from sweeplab.tasks import resolve

pytestmark = pytest.mark.usefixtures("one_thread")


def _built(task_name: str, overrides: dict):
    cfg = resolve(task_name, overrides)
    task = TASKS.get(task_name).obj(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    return task, task.build().eval()


@torch.no_grad()
def _lm_loss_by_hand(task, model, split: str, windows: int) -> float:
    """Mean cross-entropy over the targets of the first `windows` bptt windows, the hidden state carried on."""
    model.eval()  # evaluate() leaves the model in training mode (dropout on)
    source, bptt = task.splits[split], task.cfg.train.bptt
    hidden, total, n = model.init_hidden(source.size(1)), 0.0, 0
    for i in range(0, min(windows * bptt, source.size(0) - 1), bptt):
        x, y = get_batch(source, i, bptt)
        logits, hidden = model(x, hidden)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        n += y.numel()
    return total / n


def test_lm_limit_batches(tiny_corpus):
    task, model = _built("lm", {**TINY_BASE, "data.path": str(tiny_corpus)})
    windows = task.eval_batch_count("valid")
    assert windows == math.ceil((task.splits["valid"].size(0) - 1) / task.cfg.train.bptt) == 7
    whole = task.evaluate(model, "valid")
    assert whole["loss"] == pytest.approx(_lm_loss_by_hand(task, model, "valid", windows), rel=1e-5)
    assert task.evaluate(model, "valid", limit_batches=windows + 5) == whole
    first_two = task.evaluate(model, "valid", limit_batches=2)
    assert first_two["loss"] == pytest.approx(_lm_loss_by_hand(task, model, "valid", 2), rel=1e-5)
    assert abs(first_two["loss"] - whole["loss"]) > 1e-4  # an untrained model: close, but not the same windows
    assert first_two["ppl"] == pytest.approx(math.exp(first_two["loss"]))


@torch.no_grad()
def _image_metrics_by_hand(task, model, split: str, images: int) -> dict[str, float]:
    held = task.held_out[split]
    model.eval()
    logits = model(task.normalize(held.x[:images])).float()
    y = held.y[:images]
    top5 = logits.topk(5, dim=1).indices
    return {"loss": float(F.cross_entropy(logits, y)), "acc1": float((top5[:, 0] == y).float().mean()),
            "acc5": float((top5 == y[:, None]).any(1).float().mean())}


def test_image_limit_batches():
    task, model = _built("image", {"data": "digits", "model": "mlp", "model.hidden": 32, "model.layers": 1,
                                   "data.train_limit": 256, "train.eval_batch_size": 50})
    split = task.eval_splits[0]
    images = len(task.held_out[split])
    assert task.eval_batch_count(split) == math.ceil(images / 50) > 2
    whole = task.evaluate(model, split)
    assert whole == pytest.approx(_image_metrics_by_hand(task, model, split, images), rel=1e-5)
    assert task.evaluate(model, split, limit_batches=1000) == whole
    assert task.evaluate(model, split, limit_batches=2) == pytest.approx(
        _image_metrics_by_hand(task, model, split, 100), rel=1e-5)


def test_a_task_without_a_count_is_evaluated_whole():
    task, _ = _built("toy2d", {"train.epochs": 1})
    assert task.eval_batch_count("test") is None
