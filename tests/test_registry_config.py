"""Registry and configuration: names, overrides, validation, run keys."""
from __future__ import annotations

import pytest

from sweeplab.config import flatten, key_fields, parse_overrides, parse_value, run_key
from sweeplab.errors import UserError
from sweeplab.registry import Registry
from sweeplab.tasks import resolve


def test_registry_rejects_duplicates_and_lists_accepted_names():
    reg: Registry = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(UserError, match="widget name 'a' is registered twice: by sweeplab and by sweeplab"):
        reg.register("a")(object)
    with pytest.raises(UserError, match="unknown widget 'b'; accepted: a"):
        reg.get("b")


@pytest.mark.parametrize("text, value", [("2", 2), ("0.25", 0.25), ("1e-4", 1e-4), ("true", True),
                                         ("lstm", "lstm"), ("[1, 2]", "[1, 2]")])
def test_parse_value_types(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_overrides_resolve_on_top_of_task_defaults():
    cfg = resolve("lm", parse_overrides(["model=gru", "model.nlayers=1", "train.clip=0", "optim.lr=1e-3"]))
    assert (cfg.model_name, cfg.model.nlayers, cfg.train.clip, cfg.optim.lr) == ("gru", 1, 0.0, 1e-3)
    assert cfg.train.bptt == 35 and cfg.seed == 1111  # untouched defaults
    assert resolve("lm", flatten(cfg.to_dict())) == cfg  # a stored config resolves back to itself


@pytest.mark.parametrize("overrides, message", [
    (["model.foo=1"], "unknown key 'model.foo'; accepted: model.emsize"),
    (["bogus=1"], "unknown key 'bogus'"),
    (["train.epochs=two"], "train.epochs: expected an integer, got 'two'"),
    (["train.epochs=2.5"], "train.epochs: expected an integer"),
    (["train.schedule=exp"], "train.schedule: 'exp' is not accepted; accepted: 'constant', 'step'"),
    (["optim=adamw"], "unknown optimizer 'adamw'; accepted: adagrad, adam, rmsprop, sgd"),
    (["model=lstmm"], "unknown model 'lstmm' for 'lm'; accepted: gru, lstm"),
    (["model=transformer", "model.emsize=300", "model.nhead=7"], "model.nhead=7 must divide model.emsize=300"),
    (["model.tied=true", "model.emsize=100", "model.nhid=200"], "needs model.emsize == model.nhid"),
    (["train.batch_size=0"], "train.batch_size"),
    (["device=tpu"], "device: 'tpu' is not accepted"),
    (["nokey"], "is not KEY=VALUE"),
])
def test_bad_configs_fail_with_one_line(overrides, message):
    with pytest.raises(UserError) as info:
        resolve("lm", parse_overrides(overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_run_key_depends_on_every_setting_including_seed():
    base = resolve("lm", {})
    assert run_key(base) == run_key(resolve("lm", {}))
    assert run_key(base) != run_key(resolve("lm", {"seed": 1}))
    assert run_key(base) != run_key(resolve("lm", {"train.bptt": 50}))


def test_tasks_declare_their_capabilities_in_the_registry():
    from sweeplab.tasks import capable, tasks_with

    assert tasks_with("steps") == ["addition", "palindrome"]
    assert tasks_with("predict") == ["image", "toy2d"]
    assert capable("lm", "text") and capable("lm", "attention") and not capable("lm", "predict")
    assert not capable("no-such-task", "text")


def test_rmsprop_alpha_reaches_the_optimizer_and_keeps_stored_keys():
    import torch

    from sweeplab.models.optim import create_optimizer
    from sweeplab.tasks import resolve

    cfg = resolve("palindrome", {"optim": "rmsprop", "optim.alpha": 0.9})
    opt = create_optimizer(cfg.optim_name, cfg.optim, [torch.nn.Parameter(torch.zeros(1))])
    assert opt.param_groups[0]["alpha"] == 0.9
    assert "optim.alpha" not in key_fields(resolve("palindrome", {"optim": "rmsprop"}))  # added later: neutral
