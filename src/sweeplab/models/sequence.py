"""Recurrent models of the sequence puzzles.

`palindrome`: a vanilla tanh RNN and an LSTM written out with explicit parameters and unrolled by
hand, as the course skeleton asks (the tests check both against torch.nn.RNN / nn.LSTM with the
same weights, values and gradients). They read (B, T, I) and classify the last step.
`addition`: torch's own nn.RNN / nn.GRU / nn.LSTM stacks with a per-step digit classifier.
Input and output sizes come from the dataset object (`input_dim`, `num_classes`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from pydantic import Field
from torch import nn

from sweeplab.config import MAX_LAYERS, SIZE, ModelConfig
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import MODELS


class PalindromeModelConfig(ModelConfig):
    hidden: int = Field(128, gt=0, description="hidden units of the recurrent cell", json_schema_extra=SIZE)


class AdditionModelConfig(ModelConfig):
    hidden: int = Field(128, gt=0, description="hidden units per layer", json_schema_extra=SIZE)
    nlayers: int = Field(1, ge=1, le=MAX_LAYERS, description="stacked recurrent layers", json_schema_extra=SIZE)
    embed: int = Field(0, ge=0, description="0: read the digits one-hot; E > 0: one learned E-vector per digit "
                                            "(nn.Embedding(10, E), shared by both operands), as the course "
                                            "skeleton's Embedding(10, 32) + RNN(64, 64, 2)", json_schema_extra=SIZE)


def _param(*shape: int, bound: float) -> nn.Parameter:
    """U(-1/sqrt(H), 1/sqrt(H)): the initialisation torch.nn.RNN and nn.LSTM use."""
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class VanillaRNN(nn.Module):
    """h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h);  p = W_ph h_T + b_p  (Elman, 1990)."""

    def __init__(self, input_dim: int, hidden: int, num_classes: int):
        super().__init__()
        k = 1 / math.sqrt(hidden)
        self.W_hx = _param(hidden, input_dim, bound=k)
        self.W_hh = _param(hidden, hidden, bound=k)
        self.b_h = _param(hidden, bound=k)
        self.W_ph = _param(num_classes, hidden, bound=k)
        self.b_p = _param(num_classes, bound=k)

    def states(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The hidden state after each step of x (B, T, I), each (B, H)."""
        xh = x @ self.W_hx.T + self.b_h  # (B, T, H): the input terms of every step in one product
        h = x.new_zeros(x.size(0), self.W_hh.size(0))  # (B, H)
        for xh_t in xh.unbind(1):  # unbind, not xh[:, t]: one backward copy for all steps instead of one per step
            h = torch.tanh(xh_t + h @ self.W_hh.T)
            yield h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, h = self.states(x)  # the last hidden state (B, H)
        return h @ self.W_ph.T + self.b_p  # (B, C)


class HandLSTM(nn.Module):
    """LSTM (Hochreiter & Schmidhuber, 1997, with forget gate: Gers et al., 2000), gate by gate:

    g = tanh(W_gx x + W_gh h + b_g),  i = σ(W_ix x + W_ih h + b_i),  f = σ(W_fx x + W_fh h + b_f),
    o = σ(W_ox x + W_oh h + b_o),  c = g ⊙ i + c ⊙ f,  h = tanh(c) ⊙ o;  p = W_ph h_T + b_p.
    """

    GATES = ("i", "f", "g", "o")  # torch.nn.LSTM's order of the stacked gate weights

    def __init__(self, input_dim: int, hidden: int, num_classes: int):
        super().__init__()
        k = 1 / math.sqrt(hidden)
        for gate in self.GATES:
            setattr(self, f"W_{gate}x", _param(hidden, input_dim, bound=k))
            setattr(self, f"W_{gate}h", _param(hidden, hidden, bound=k))
            setattr(self, f"b_{gate}", _param(hidden, bound=k))
        self.W_ph = _param(num_classes, hidden, bound=k)
        self.b_p = _param(num_classes, bound=k)

    def stacked(self, kind: str) -> torch.Tensor:
        """The four gates' `kind` ('x', 'h' or bias) parameters stacked: one product per step, not four."""
        name = "b_{}" if kind == "b" else "W_{}" + kind
        return torch.cat([getattr(self, name.format(g)) for g in self.GATES])  # (4H, ...)

    def states(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        W_hT = self.stacked("h").T  # (H, 4H)
        xg = x @ self.stacked("x").T + self.stacked("b")  # (B, T, 4H)
        h = c = x.new_zeros(x.size(0), W_hT.size(0))  # (B, H)
        for xg_t in xg.unbind(1):  # see VanillaRNN.states
            # addmm: the step's product and sum in one node (one backward op fewer per step); measured
            # 1.1x to 1.5x faster steps than `xg_t + h @ W_h.T` (benchmarks/RESULTS.md, issue 12)
            i, f, g, o = torch.addmm(xg_t, h, W_hT).chunk(4, dim=1)
            c = torch.tanh(g) * torch.sigmoid(i) + c * torch.sigmoid(f)
            h = torch.tanh(c) * torch.sigmoid(o)
            yield h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, h = self.states(x)  # the last hidden state (B, H)
        return h @ self.W_ph.T + self.b_p  # (B, C)


class DigitRNN(nn.Module):
    """A torch recurrent stack (rnn, gru or lstm) and a linear classifier on every step's output."""

    def __init__(self, kind: str, input_dim: int, num_classes: int, cfg: AdditionModelConfig):
        super().__init__()
        layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
        # The input is one one-hot block of num_classes per operand; an embedding looks each digit up instead.
        self.embed = nn.Embedding(num_classes, cfg.embed) if cfg.embed else None
        rnn_input = input_dim // num_classes * cfg.embed if cfg.embed else input_dim
        self.rnn = layer(rnn_input, cfg.hidden, cfg.nlayers, batch_first=True)
        self.decoder = nn.Linear(cfg.hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            digits = x.unflatten(-1, (-1, self.embed.num_embeddings)).argmax(-1)  # (B, T, operands)
            x = self.embed(digits).flatten(2)  # (B, T, operands * E)
        output, _ = self.rnn(x)  # (B, T, H)
        return self.decoder(output)  # (B, T, C)


@MODELS.register("rnn", group="palindrome", config=PalindromeModelConfig)
def _palindrome_rnn(spec: VectorSpec, cfg: PalindromeModelConfig) -> VanillaRNN:
    """Vanilla tanh RNN, explicit W_hx, W_hh, b_h, W_ph, b_p, unrolled by hand."""
    return VanillaRNN(spec.input_dim, cfg.hidden, spec.num_classes)


@MODELS.register("lstm", group="palindrome", config=PalindromeModelConfig)
def _palindrome_lstm(spec: VectorSpec, cfg: PalindromeModelConfig) -> HandLSTM:
    """LSTM with explicit gate parameters, unrolled by hand."""
    return HandLSTM(spec.input_dim, cfg.hidden, spec.num_classes)


@MODELS.register("rnn", group="addition", config=AdditionModelConfig)
def addition_rnn(spec: VectorSpec, cfg: AdditionModelConfig) -> DigitRNN:
    """Elman RNN with tanh (torch.nn.RNN)"""
    return DigitRNN("rnn", spec.input_dim, spec.num_classes, cfg)


@MODELS.register("gru", group="addition", config=AdditionModelConfig)
def addition_gru(spec: VectorSpec, cfg: AdditionModelConfig) -> DigitRNN:
    """GRU (Cho et al., 2014; torch.nn.GRU)"""
    return DigitRNN("gru", spec.input_dim, spec.num_classes, cfg)


@MODELS.register("lstm", group="addition", config=AdditionModelConfig)
def addition_lstm(spec: VectorSpec, cfg: AdditionModelConfig) -> DigitRNN:
    """LSTM (Hochreiter & Schmidhuber, 1997; torch.nn.LSTM)"""
    return DigitRNN("lstm", spec.input_dim, spec.num_classes, cfg)
