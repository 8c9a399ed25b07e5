"""The toy-2D MLP twice: `mlp` in PyTorch, and `mlp_numpy` with forward, backward and SGD by hand.

Both build the same layers in the same order with nn.Linear's own initialisation, so with the same
seed they start from the same weights; their state_dicts have the same keys, so a checkpoint of
one loads into the other. `mlp_numpy` keeps its weights in (non-differentiable) torch Parameters
only so that checkpoints, parameter counts and the trainer work unchanged; every computation on
them is NumPy on views that share their memory. Nothing here is differentiated by autograd: the
tests check the hand-written gradients against autograd's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sweeplab.config import MAX_LAYERS, SIZE, ModelConfig
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import MODELS

Activation = Literal["relu", "tanh", "sigmoid"]


class Toy2DMLPConfig(ModelConfig):
    hidden: int = Field(32, ge=1, description="units per hidden layer", json_schema_extra=SIZE)
    layers: int = Field(2, ge=1, le=MAX_LAYERS, description="hidden layers", json_schema_extra=SIZE)
    activation: Activation = Field("relu", description="relu, tanh or sigmoid")


def layer_sizes(cfg: Toy2DMLPConfig, in_features: int, num_classes: int) -> list[int]:
    return [in_features, *[cfg.hidden] * cfg.layers, num_classes]


def init_linear_(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """nn.Linear.reset_parameters, step for step (same draws from the same RNG in the same order)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(weight.size(1))
    nn.init.uniform_(bias, -bound, bound)


# ------------------------------------------------------------------------------------- PyTorch
_TORCH_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class TorchMLP(nn.Module):
    def __init__(self, sizes: list[int], activation: Activation):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.act = _TORCH_ACT[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))  # (B, hidden)
        return self.layers[-1](x)  # (B, classes) logits


# --------------------------------------------------------------------------------------- NumPy
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))  # no overflow for large |z|


# activation, and its derivative written with the pre-activation z and the output a
_NUMPY_ACT: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
}


class Affine(nn.Module):
    """Storage for one layer's weight (out, in) and bias (out,), named as nn.Linear names them."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
        init_linear_(self.weight, self.bias)


class NumpyMLP(nn.Module):
    """MLP whose forward pass, backward pass and SGD update are NumPy written out by hand."""

    def __init__(self, sizes: list[int], activation: Activation):
        super().__init__()
        self.layers = nn.ModuleList(Affine(a, b) for a, b in pairwise(sizes))
        self.act, self.act_grad = _NUMPY_ACT[activation]
        self.grads: list[np.ndarray] = []  # set by `backward`, in the order of `arrays()`

    def arrays(self) -> list[np.ndarray]:
        """W0, b0, W1, b1, ...: NumPy views sharing memory with the Parameters (fetched afresh, so they
        stay valid after `.double()` or `load_state_dict`)."""
        return [p.data.numpy() for p in self.parameters()]

    def forward_cache(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
        """Logits (B, classes), and what the backward pass needs: each layer's input and pre-activation."""
        params = self.arrays()
        inputs, pre = [], []
        h = x  # (B, in)
        for i in range(0, len(params), 2):
            weight, bias = params[i], params[i + 1]
            inputs.append(h)
            z = h @ weight.T + bias  # (B, out)
            pre.append(z)
            h = self.act(z) if i + 2 < len(params) else z
        return h, {"inputs": inputs, "pre": pre}

    def backward(self, cache: dict[str, list[np.ndarray]], dlogits: np.ndarray) -> list[np.ndarray]:
        """Gradients of the loss w.r.t. W0, b0, W1, b1, ... given dL/dlogits (B, classes)."""
        params = self.arrays()
        grads: list[np.ndarray] = []
        dz = dlogits  # dL/dz of the current layer, (B, out)
        for layer in reversed(range(len(params) // 2)):
            weight = params[2 * layer]
            h = cache["inputs"][layer]  # (B, in)
            grads[:0] = [dz.T @ h, dz.sum(axis=0)]  # dL/dW (out, in), dL/db (out,)
            if layer > 0:
                z = cache["pre"][layer - 1]
                dz = (dz @ weight) * self.act_grad(z, h)  # back through the activation that produced h
        return grads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.forward_cache(x.detach().cpu().numpy())
        return torch.from_numpy(logits)


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of the batch and its gradient w.r.t. the logits: (softmax - onehot) / B."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # stable: exp never overflows
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1
    return float(loss), dlogits / len(y)


def clip_global_norm(grads: list[np.ndarray], max_norm: float) -> None:
    """In place, as torch.nn.utils.clip_grad_norm_ (Pascanu et al., 2013)."""
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale


class NumpySGD:
    """torch.optim.SGD's update (momentum without dampening, L2 weight decay), by hand on the NumPy views.

    It stands where the engine expects a torch optimizer: `param_groups` (the engine sets the lr
    there), `zero_grad`, `step`, `state_dict`, `load_state_dict`.
    """

    def __init__(self, model: NumpyMLP, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.model = model
        self.param_groups = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.buffers: list[np.ndarray | None] = [None] * len(model.arrays())

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to do: each backward pass replaces `model.grads`."""

    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        for i, (param, grad) in enumerate(zip(self.model.arrays(), self.model.grads, strict=True)):
            d = grad + decay * param if decay else grad
            if momentum:
                self.buffers[i] = d.copy() if self.buffers[i] is None else momentum * self.buffers[i] + d
                d = self.buffers[i]
            param -= lr * d  # in place: the Parameter sees it

    def state_dict(self) -> dict[str, Any]:
        return {"param_groups": [dict(g) for g in self.param_groups],
                "momentum_buffers": [None if b is None else torch.from_numpy(b.copy()) for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.param_groups = [dict(g) for g in state["param_groups"]]
        self.buffers = [None if b is None else b.cpu().numpy().copy() for b in state["momentum_buffers"]]


# ------------------------------------------------------------------------------------ registry
@MODELS.register("mlp", group="toy2d", config=Toy2DMLPConfig)
def _mlp(spec: VectorSpec, cfg: Toy2DMLPConfig) -> TorchMLP:
    """MLP in PyTorch (autograd, torch.optim)."""
    return TorchMLP(layer_sizes(cfg, spec.input_dim, spec.num_classes), cfg.activation)


@MODELS.register("mlp_numpy", group="toy2d", config=Toy2DMLPConfig)
def _mlp_numpy(spec: VectorSpec, cfg: Toy2DMLPConfig) -> NumpyMLP:
    """MLP from scratch in NumPy: hand-written forward, backward and SGD (same init as mlp)."""
    return NumpyMLP(layer_sizes(cfg, spec.input_dim, spec.num_classes), cfg.activation)
