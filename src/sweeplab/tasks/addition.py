"""Addition of big integers, digit by digit: can a recurrent net learn to carry?

Each step reads one digit of both operands and predicts that digit of the sum (data/sequences.py).
Exact-match accuracy (`acc`: every digit of the sum right) is the headline; `digit_acc` counts
digits, the final-carry step included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sweeplab.data.sequences import AdditionData
from sweeplab.registry import TASKS
from sweeplab.tasks.base import StepOutput
from sweeplab.tasks.steps import StepTask


@TASKS.register("addition")
class AdditionTask(StepTask):
    """Big-integer addition, one digit per step: exact-match and per-digit accuracy (rnn, gru, lstm)."""

    name = "addition"
    defaults = {**StepTask.defaults, "model": "lstm", "train.max_steps": 5_000}
    data: AdditionData

    def score(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch  # (B, T, 20), (B, T)
        logits = model(x)  # (B, T, 10)
        hit = logits.argmax(-1) == y  # (B, T)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())  # mean over every digit
        return StepOutput(loss, y.size(0), {"exact": hit.all(1).sum(), "digits": hit.sum()})

    def chance(self) -> dict[str, float]:
        digit = 1 / self.data.num_classes  # every digit of the sum guessed
        return {"digit_acc": digit, "acc": digit ** self.data.seq_len}

    def metrics_of(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["n"], 1)
        digits = n * self.data.seq_len
        return {"loss": sums["loss"] / n, "acc": sums["exact"] / n, "digit_acc": sums["digits"] / digits}
