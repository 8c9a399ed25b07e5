"""LM models: registry-parametrised checks, exact parameter counts, and oracles against torch's own layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sweeplab.tasks  # noqa: F401  (fills the registries)
from sweeplab.errors import UserError
from sweeplab.models.lm import TransformerModel
from sweeplab.models.spec import VocabSpec
from sweeplab.registry import MODELS
from sweeplab.tasks import resolve

WT2_VOCAB = 33_278


def build(name: str, ntoken: int = 50, **overrides):
    cfg = resolve("lm", {"model": name, **{f"model.{k}": v for k, v in overrides.items()}})
    return MODELS.get(name, group="lm").obj(VocabSpec(ntoken), cfg.model)


@pytest.mark.parametrize("name", MODELS.names("lm"))
def test_every_lm_model_shapes_finite_and_backward(name):
    torch.manual_seed(0)
    model = build(name, emsize=16, nhid=16, nlayers=2, nhead=2)
    x = torch.randint(50, (7, 3))  # (T, B)
    logits, hidden = model(x, model.init_hidden(3))
    assert logits.shape == (7 * 3, 50) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_spec_lstm_300x1_parameter_count_on_wikitext2():
    assert _count(build("lstm", WT2_VOCAB, emsize=300, nhid=300, nlayers=1)) == 20_722_478


@pytest.mark.parametrize("name, rnn", [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn_tanh", nn.RNN), ("rnn_relu", nn.RNN)])
@pytest.mark.parametrize("nlayers", [1, 2, 4, 8])
def test_rnn_counts_equal_embedding_plus_torch_rnn_plus_decoder(name, rnn, nlayers):
    textbook = _count(nn.Embedding(WT2_VOCAB, 300)) + _count(rnn(300, 300, nlayers)) + _count(nn.Linear(300, WT2_VOCAB))
    assert _count(build(name, WT2_VOCAB, emsize=300, nhid=300, nlayers=nlayers)) == textbook


def test_tied_weights_count_the_shared_matrix_once():
    untied = _count(build("lstm", WT2_VOCAB, emsize=300, nhid=300, nlayers=1))
    assert _count(build("lstm", WT2_VOCAB, emsize=300, nhid=300, nlayers=1, tied=True)) == untied - 300 * WT2_VOCAB


# The course LM table's Transformer rows (course report 000, Task B): (nlayers, nhead) -> trainable params.
COURSE_TRANSFORMERS = [(1, 1, 20_543_078), (2, 2, 21_086_078), (4, 2, 22_172_078), (2, 4, 21_086_078)]


@pytest.mark.parametrize("nlayers, nhead, course", COURSE_TRANSFORMERS)
def test_transformer_counts_equal_the_2021_word_language_model(nlayers, nhead, course):
    """The 2021 TransformerModel: embedding, nn.TransformerEncoder(layers, nlayers) with no final norm, decoder."""
    layer = nn.TransformerEncoderLayer(300, nhead, 300)
    encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
    textbook = _count(nn.Embedding(WT2_VOCAB, 300)) + _count(encoder) + _count(nn.Linear(300, WT2_VOCAB))
    ours = _count(build("transformer", WT2_VOCAB, emsize=300, nhid=300, nlayers=nlayers, nhead=nhead))
    assert ours == textbook == course


@pytest.mark.parametrize("nlayers, nhead, course", COURSE_TRANSFORMERS)
def test_final_norm_is_todays_word_language_model(nlayers, nhead, course):
    """Today's TransformerModel subclasses nn.Transformer, whose encoder ends in a LayerNorm: 2 x 300 more."""
    model = build("transformer", WT2_VOCAB, emsize=300, nhid=300, nlayers=nlayers, nhead=nhead, final_norm=True)
    assert _count(model) == course + 600


def test_final_norm_is_a_transformer_setting_only():
    with pytest.raises(UserError, match="final_norm"):
        build("lstm", final_norm=True)


@pytest.mark.parametrize("name, rnn", [("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_rnn_forward_equals_a_hand_built_stack_of_torch_layers(name, rnn):
    """Oracle: embedding -> one torch layer per layer -> decoder, with our weights copied in."""
    torch.manual_seed(0)
    model = build(name, 40, emsize=12, nhid=12, nlayers=3).eval()
    layers = [rnn(12, 12, 1) for _ in range(3)]
    for i, layer in enumerate(layers):
        for suffix in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{suffix}_l0").data.copy_(getattr(model.rnn, f"{suffix}_l{i}"))
    x = torch.randint(40, (9, 4))
    h = model.encoder(x)
    for layer in layers:
        h, _ = layer(h)
    expected = model.decoder(h).view(-1, 40)
    logits, _ = model(x, model.init_hidden(4))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("final_norm", [False, True])
def test_transformer_forward_equals_torch_encoder_with_causal_mask(final_norm):
    """Oracle: nn.TransformerEncoder (post-norm, ReLU) with a causal mask and our weights copied in."""
    torch.manual_seed(0)
    model: TransformerModel = build("transformer", 40, emsize=16, nhid=24, nlayers=2, nhead=4,
                                    final_norm=final_norm).eval()
    layer = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0)
    norm = nn.LayerNorm(16) if final_norm else None
    encoder = nn.TransformerEncoder(layer, 2, norm=norm, enable_nested_tensor=False).eval()
    for ours, theirs in zip(model.layers, encoder.layers, strict=True):
        theirs.self_attn.in_proj_weight.data.copy_(ours.self_attn.in_proj.weight)
        theirs.self_attn.in_proj_bias.data.copy_(ours.self_attn.in_proj.bias)
        theirs.self_attn.out_proj.load_state_dict(ours.self_attn.out_proj.state_dict())
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(theirs, name).load_state_dict(getattr(ours, name).state_dict())
    if final_norm:
        encoder.norm.load_state_dict(model.norm.state_dict())
    x = torch.randint(40, (11, 3))
    h = model.pos_encoder(model.encoder(x) * 4.0)  # sqrt(16)
    mask = nn.Transformer.generate_square_subsequent_mask(11)
    expected = model.decoder(encoder(h, mask=mask, is_causal=True)).view(-1, 40)
    logits, _ = model(x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


def test_transformer_attention_maps_are_causal_distributions():
    model: TransformerModel = build("transformer", 40, emsize=16, nhid=16, nlayers=2, nhead=2).eval()
    model.keep_attention(True)
    model(torch.randint(40, (6, 1)))
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (1, 2, 6, 6)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(1, 2, 6))
    assert (maps[0].triu(1) == 0).all()  # no position attends to a later one


def test_transformer_dropout_reaches_every_layer():
    model = build("transformer", 40, emsize=16, nhid=16, nlayers=3, nhead=2, dropout=0.3)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)} | {layer.self_attn.dropout for layer in model.layers}
    assert rates == {0.3}
    assert all(isinstance(layer.drop, nn.Dropout) for layer in model.layers)
