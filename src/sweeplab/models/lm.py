"""Word-level language models, built as pytorch/examples' word_language_model builds them.

`RNNModel`: embedding -> dropout -> RNN/LSTM/GRU stack -> dropout -> linear decoder.
`TransformerModel`: embedding * sqrt(d) + sinusoidal positions -> causal encoder layers -> decoder.
The parameter counts equal the textbook models exactly (tests check them against torch's own layers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from sweeplab.config import MAX_LAYERS, SIZE, ModelConfig
from sweeplab.models.spec import VocabSpec
from sweeplab.registry import MODELS


class LMConfig(ModelConfig):
    emsize: int = Field(200, ge=1, description="size of word embeddings", json_schema_extra=SIZE)
    nhid: int = Field(200, ge=1, description="hidden units per layer (feed-forward size for transformer)",
                      json_schema_extra=SIZE)
    nlayers: int = Field(2, ge=1, le=MAX_LAYERS, description="number of layers", json_schema_extra=SIZE)
    nhead: int = Field(2, ge=1, description="attention heads (transformer only)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout applied to every layer")
    tied: bool = Field(False, description="tie the decoder to the embedding (Press & Wolf 2016; Inan et al. 2016)")


class RNNConfig(LMConfig):
    @model_validator(mode="after")
    def _tied_sizes(self) -> RNNConfig:
        if self.tied and self.nhid != self.emsize:
            raise ValueError(f"model.tied=true needs model.emsize == model.nhid (got {self.emsize} and {self.nhid})")
        return self


class TransformerConfig(LMConfig):
    final_norm: bool = Field(False, description="a LayerNorm after the last layer, as today's word_language_model "
                                                "(an nn.Transformer) builds it; false is the 2021 model the course "
                                                "tables count (its post-norm layers already end in a LayerNorm)")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.emsize % self.nhead:
            raise ValueError(f"model.nhead={self.nhead} must divide model.emsize={self.emsize}")
        return self


class RNNModel(nn.Module):
    def __init__(self, kind: str, ntoken: int, cfg: LMConfig):
        super().__init__()
        self.kind, self.nhid, self.nlayers = kind, cfg.nhid, cfg.nlayers
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.Embedding(ntoken, cfg.emsize)
        dropout = cfg.dropout if cfg.nlayers > 1 else 0.0  # between layers; torch warns on 1 layer
        if kind in ("lstm", "gru"):
            self.rnn = getattr(nn, kind.upper())(cfg.emsize, cfg.nhid, cfg.nlayers, dropout=dropout)
        else:
            self.rnn = nn.RNN(cfg.emsize, cfg.nhid, cfg.nlayers, nonlinearity=kind[4:], dropout=dropout)
        self.decoder = nn.Linear(cfg.nhid, ntoken)
        if cfg.tied:
            self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | tuple) -> tuple[torch.Tensor, torch.Tensor | tuple]:
        emb = self.drop(self.encoder(x))  # (T, B, E)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN's bf16 LSTM/GRU kernels run ~3x slower than fp32 on CPU (160 vs 50 ms for a
            # 300-unit LSTM step at batch 20, bptt 35), so the recurrence stays fp32 and autocast
            # speeds up the decoder, where most of the FLOPs are.
            with torch.autocast("cpu", enabled=False):
                output, hidden = self.rnn(emb.float(), hidden)  # (T, B, H)
        else:
            output, hidden = self.rnn(emb, hidden)  # (T, B, H)
        logits = self.decoder(self.drop(output))  # (T, B, V)
        return logits.view(-1, logits.size(-1)), hidden

    def init_hidden(self, batch_size: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        weight = next(self.parameters())
        h = weight.new_zeros(self.nlayers, batch_size, self.nhid)
        return (h, weight.new_zeros(self.nlayers, batch_size, self.nhid)) if self.kind == "lstm" else h


class PositionalEncoding(nn.Module):
    """Sinusoidal positions (Vaswani et al., 2017), a buffer: no parameters."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[: x.size(0)])  # (T, B, E)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask; the weights can be kept for heat maps."""

    def __init__(self, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.nhead, self.dropout = nhead, dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)  # same parameters as nn.MultiheadAttention
        self.out_proj = nn.Linear(d_model, d_model)
        self.keep_weights = False
        self.weights: torch.Tensor | None = None  # (B, heads, T, T) when keep_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, E = x.shape
        q, k, v = self.in_proj(x).view(T, B, 3, self.nhead, E // self.nhead).permute(2, 1, 3, 0, 4)  # (B, h, T, d)
        if self.keep_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            self.weights = scores.masked_fill(mask, float("-inf")).softmax(-1).detach()
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.permute(2, 0, 1, 3).reshape(T, B, E))  # (T, B, E)


class EncoderLayer(nn.Module):
    """Post-norm layer as nn.TransformerEncoderLayer (ReLU), with dropout after attention and in the FFN."""

    def __init__(self, d_model: int, nhead: int, dim_ff: int, dropout: float):
        super().__init__()
        self.self_attn = CausalSelfAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_ff)
        self.linear2 = nn.Linear(dim_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x)))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


class TransformerModel(nn.Module):
    """As the 2021 word_language_model's TransformerModel: nn.TransformerEncoder(layers, nlayers),
    no final LayerNorm, `dropout` in every layer. The course's LM table counts this model (20,543,078
    parameters for 1 layer, 1 head at emsize = nhid = 300 on WikiText-2). `model.final_norm=true` adds
    the LayerNorm today's version has (it subclasses nn.Transformer, whose encoder ends in one: 600
    more parameters at emsize 300); its unused decoder is not built either way."""

    def __init__(self, ntoken: int, cfg: LMConfig):
        super().__init__()
        self.emsize = cfg.emsize
        self.encoder = nn.Embedding(ntoken, cfg.emsize)
        self.pos_encoder = PositionalEncoding(cfg.emsize, cfg.dropout)
        self.layers = nn.ModuleList(EncoderLayer(cfg.emsize, cfg.nhead, cfg.nhid, cfg.dropout)
                                    for _ in range(cfg.nlayers))
        self.norm = nn.LayerNorm(cfg.emsize) if cfg.final_norm else nn.Identity()
        self.decoder = nn.Linear(cfg.emsize, ntoken)
        if cfg.tied:
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, hidden: None = None) -> tuple[torch.Tensor, None]:
        h = self.pos_encoder(self.encoder(x) * math.sqrt(self.emsize))  # (T, B, E)
        for layer in self.layers:
            h = layer(h)
        logits = self.decoder(self.norm(h))  # (T, B, V)
        return logits.view(-1, logits.size(-1)), None

    def init_hidden(self, batch_size: int) -> None:
        return None

    def keep_attention(self, keep: bool) -> None:
        for layer in self.layers:
            layer.self_attn.keep_weights = keep

    def attention_maps(self) -> list[torch.Tensor]:
        """Per layer (B, heads, T, T), from the last forward with keep_attention(True)."""
        return [layer.self_attn.weights for layer in self.layers]


@MODELS.register("lstm", group="lm", config=RNNConfig)
def lstm(spec: VocabSpec, cfg: LMConfig) -> RNNModel:
    """LSTM (Hochreiter & Schmidhuber, 1997)"""
    return RNNModel("lstm", spec.ntoken, cfg)


@MODELS.register("gru", group="lm", config=RNNConfig)
def gru(spec: VocabSpec, cfg: LMConfig) -> RNNModel:
    """GRU (Cho et al., 2014)"""
    return RNNModel("gru", spec.ntoken, cfg)


@MODELS.register("rnn_tanh", group="lm", config=RNNConfig)
def rnn_tanh(spec: VocabSpec, cfg: LMConfig) -> RNNModel:
    """Elman RNN with tanh"""
    return RNNModel("rnn_tanh", spec.ntoken, cfg)


@MODELS.register("rnn_relu", group="lm", config=RNNConfig)
def rnn_relu(spec: VocabSpec, cfg: LMConfig) -> RNNModel:
    """Elman RNN with ReLU"""
    return RNNModel("rnn_relu", spec.ntoken, cfg)


@MODELS.register("transformer", group="lm", config=TransformerConfig)
def _transformer(spec: VocabSpec, cfg: LMConfig) -> TransformerModel:
    """Transformer encoder with a causal mask (Vaswani et al., 2017)."""
    return TransformerModel(spec.ntoken, cfg)
