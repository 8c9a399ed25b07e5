"""Optimizers by name: `create_optimizer(name, cfg, params)`."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from sweeplab.config import OptimConfig
from sweeplab.registry import OPTIMIZERS


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015)."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adagrad")
def _adagrad(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adagrad (Duchi et al., 2011)."""
    return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """RMSprop (Tieleman & Hinton, 2012)."""
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def create_optimizer(name: str, cfg: OptimConfig, params: Iterable) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(name, key="optim").obj(params, cfg)


def list_optimizers() -> list[str]:
    return OPTIMIZERS.names()
