"""Learning-rate schedules as pure functions of progress (plus, for plateau, the drops so far)."""
from __future__ import annotations

import math

from sweeplab.config import TrainConfig

PLATEAU_FACTOR = 4.0  # word_language_model: "anneal the learning rate if no improvement has been seen"


def get_lr(cfg: TrainConfig, base_lr: float, *, epoch: int, step: int, total_steps: int, plateau_drops: int) -> float:
    """lr for optimizer `step` (0-based) within 1-based `epoch`."""
    if cfg.schedule == "step":
        return base_lr * cfg.gamma ** ((epoch - 1) // cfg.step_size)
    if cfg.schedule == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "plateau":
        return base_lr / PLATEAU_FACTOR**plateau_drops
    return base_lr
