"""Sequence-puzzle models: registry-parametrised checks, exact parameter counts, and oracles:
the hand-written RNN and LSTM against torch.nn.RNN / nn.LSTM with the same weights (values and grads)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sweeplab.tasks  # noqa: F401  (fills the registries)
from sweeplab.models.sequence import HandLSTM, VanillaRNN
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import MODELS
from sweeplab.tasks import resolve

TASK_MODELS = [(task, name) for task in ("palindrome", "addition") for name in MODELS.names(task)]


def build(task: str, name: str, input_dim: int, **overrides) -> nn.Module:
    cfg = resolve(task, {"model": name, **{f"model.{k}": v for k, v in overrides.items()}})
    return MODELS.get(name, group=task).obj(VectorSpec(input_dim, 10), cfg.model)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("task, name", TASK_MODELS)
def test_every_sequence_model_shapes_finite_and_backward(task, name):
    torch.manual_seed(0)
    model = build(task, name, 7, hidden=16)
    logits = model(torch.randn(5, 9, 7))  # (B, T, I)
    expected = (5, 10) if task == "palindrome" else (5, 9, 10)  # last step vs every step
    assert logits.shape == expected and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("input_dim", [1, 10])
def test_palindrome_parameter_counts(input_dim):
    H, C, D = 128, 10, input_dim  # noqa: N806
    assert count(build("palindrome", "rnn", D)) == H * D + H * H + H + C * H + C  # one bias b_h, not torch's two
    assert count(build("palindrome", "lstm", D)) == 4 * (H * D + H * H + H) + C * H + C


@pytest.mark.parametrize("name, layer", [("rnn", nn.RNN), ("gru", nn.GRU), ("lstm", nn.LSTM)])
@pytest.mark.parametrize("nlayers", [1, 3])
def test_addition_counts_equal_torch_stack_plus_decoder(name, layer, nlayers):
    textbook = count(layer(20, 32, nlayers)) + count(nn.Linear(32, 10))
    assert count(build("addition", name, 20, hidden=32, nlayers=nlayers)) == textbook


# -- oracles: the hand-written cells equal torch's, forward and backward --------------------------

def _compare(ours: nn.Module, torch_rnn: nn.Module, head: nn.Linear, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run both on x, check the hidden states and logits agree, backprop the same loss; torch's grads."""
    out, _ = torch_rnn(x)  # (B, T, H)
    states = torch.stack(list(ours.states(x)), dim=1)
    torch.testing.assert_close(states, out, rtol=1e-5, atol=1e-6)
    logits, expected = ours(x), head(out[:, -1])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    target = torch.arange(x.size(0)) % 10
    nn.functional.cross_entropy(logits, target).backward()
    nn.functional.cross_entropy(expected, target).backward()
    return dict(torch_rnn.named_parameters())


def _head(model: nn.Module) -> nn.Linear:
    head = nn.Linear(model.W_ph.size(1), model.W_ph.size(0))
    head.weight.data.copy_(model.W_ph.data)
    head.bias.data.copy_(model.b_p.data)
    return head


@pytest.mark.parametrize("input_dim, T", [(1, 4), (10, 19)])
def test_hand_rnn_equals_torch_rnn_values_and_gradients(input_dim, T):
    torch.manual_seed(0)
    ours = VanillaRNN(input_dim, 24, 10).double()
    ref = nn.RNN(input_dim, 24, nonlinearity="tanh", batch_first=True).double()
    ref.weight_ih_l0.data.copy_(ours.W_hx.data)
    ref.weight_hh_l0.data.copy_(ours.W_hh.data)
    ref.bias_ih_l0.data.copy_(ours.b_h.data)
    ref.bias_hh_l0.data.zero_()  # torch has two biases; their sum plays the role of b_h
    head = _head(ours).double()
    grads = _compare(ours, ref, head, torch.randn(6, T, input_dim, dtype=torch.double))
    torch.testing.assert_close(ours.W_hx.grad, grads["weight_ih_l0"].grad)
    torch.testing.assert_close(ours.W_hh.grad, grads["weight_hh_l0"].grad)
    torch.testing.assert_close(ours.b_h.grad, grads["bias_ih_l0"].grad)
    torch.testing.assert_close(ours.W_ph.grad, head.weight.grad)
    torch.testing.assert_close(ours.b_p.grad, head.bias.grad)


@pytest.mark.parametrize("input_dim, T", [(1, 4), (10, 19)])
def test_hand_lstm_equals_torch_lstm_values_and_gradients(input_dim, T):
    torch.manual_seed(0)
    ours = HandLSTM(input_dim, 24, 10).double()
    ref = nn.LSTM(input_dim, 24, batch_first=True).double()
    ref.weight_ih_l0.data.copy_(ours.stacked("x").data)  # torch stacks the gates as i, f, g, o
    ref.weight_hh_l0.data.copy_(ours.stacked("h").data)
    ref.bias_ih_l0.data.copy_(ours.stacked("b").data)
    ref.bias_hh_l0.data.zero_()
    head = _head(ours).double()
    grads = _compare(ours, ref, head, torch.randn(6, T, input_dim, dtype=torch.double))
    for kind, torch_name in (("x", "weight_ih_l0"), ("h", "weight_hh_l0"), ("b", "bias_ih_l0")):
        expected = grads[torch_name].grad.chunk(4)
        for gate, grad in zip(HandLSTM.GATES, expected, strict=True):
            name = f"b_{gate}" if kind == "b" else f"W_{gate}{kind}"
            torch.testing.assert_close(getattr(ours, name).grad, grad, msg=name)
    torch.testing.assert_close(ours.W_ph.grad, head.weight.grad)


def test_hand_lstm_gates_are_separate_parameters():
    names = {n for n, _ in HandLSTM(3, 4, 10).named_parameters()}
    expected = {f"W_{g}x" for g in "ifgo"} | {f"W_{g}h" for g in "ifgo"} | {f"b_{g}" for g in "ifgo"} | {"W_ph", "b_p"}
    assert names == expected
