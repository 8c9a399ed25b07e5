"""toy2d: the data, the hand-written NumPy MLP against PyTorch autograd, and end-to-end runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import sweeplab.tasks  # noqa: F401  (fills the registries)
from sweeplab.cli import app
from sweeplab.data.toy2d import Toy2DDataConfig, make_toy2d
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.errors import UserError
from sweeplab.models.mlp_numpy import NumpySGD, Toy2DMLPConfig, clip_global_norm, softmax_cross_entropy
from sweeplab.models.spec import VectorSpec
from sweeplab.registry import DATASETS, MODELS
from sweeplab.store import Metric, checkpoint, open_store
from sweeplab.tasks import resolve
from sweeplab.tasks.toy2d import convergence_epoch

runner = CliRunner()


def create(name: str, cfg: Toy2DMLPConfig, classes: int = 2) -> torch.nn.Module:
    return MODELS.get(name, group="toy2d").obj(VectorSpec(2, classes), cfg)


def run(store_url: str, **overrides) -> tuple[str, dict]:
    cfg = resolve("toy2d", {"data.n_samples": 200, "train.epochs": 1, **overrides})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished"
    return result.run_id, result.metrics


# ------------------------------------------------------------------------------------------ data
@pytest.mark.parametrize("name", DATASETS.names("toy2d"))
def test_data_is_an_80_20_split_reproducible_from_the_seed(name):
    cfg = Toy2DDataConfig(n_samples=500)
    a, b, c = make_toy2d(name, cfg, 1), make_toy2d(name, cfg, 1), make_toy2d(name, cfg, 2)
    assert (len(a.x_train), len(a.x_valid), len(a.x_test)) == (360, 40, 100) and a.x_train.shape[1] == 2
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.num_classes == 2 and set(a.y_train.tolist()) == {0, 1}
    # every generated point lands in exactly one split
    assert len(torch.cat([a.x_train, a.x_valid, a.x_test]).unique(dim=0)) == 500


def test_data_seed_fixes_the_points_whatever_the_run_seed():
    cfg = Toy2DDataConfig(seed=7)
    assert torch.equal(make_toy2d("moons", cfg, 1).x_train, make_toy2d("moons", cfg, 99).x_train)


def test_generated_data_has_no_folder():
    with pytest.raises(UserError, match="data.path"):
        make_toy2d("moons", Toy2DDataConfig(path="/tmp"), 1)


# -------------------------------------------------------------------------------- NumPy vs torch
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_same_seed_gives_the_same_initial_weights(activation):
    cfg = Toy2DMLPConfig(hidden=16, layers=3, activation=activation)
    torch.manual_seed(5)
    reference = create("mlp", cfg).state_dict()
    torch.manual_seed(5)
    numpy_model = create("mlp_numpy", cfg).state_dict()
    assert reference.keys() == numpy_model.keys()
    assert all(torch.equal(reference[k], numpy_model[k]) for k in reference)


def _max_rel_error(ours: np.ndarray, reference: torch.Tensor) -> float:
    return float(np.abs(ours - reference.numpy()).max() / reference.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("classes", [2, 3])
def test_numpy_gradients_equal_autograd(activation, classes):
    """The hand-written backward pass against autograd, on the same float64 weights and batch."""
    cfg = Toy2DMLPConfig(hidden=24, layers=2, activation=activation)
    torch.manual_seed(0)
    ours = create("mlp_numpy", cfg, classes).double()
    reference = create("mlp", cfg, classes).double()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(32, 2, dtype=torch.float64) * 2
    y = torch.randint(0, classes, (32,))

    logits, cache = ours.forward_cache(x.numpy())
    loss, dlogits = softmax_cross_entropy(logits, y.numpy())
    grads = ours.backward(cache, dlogits)

    ref_loss = F.cross_entropy(reference(x), y)
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    ref_grads = [p.grad for p in reference.parameters()]
    assert [g.shape for g in grads] == [tuple(g.shape) for g in ref_grads]
    for g, ref in zip(grads, ref_grads, strict=True):
        assert g.dtype == np.float64
        assert _max_rel_error(g, ref) < 1e-8


def test_numpy_sgd_with_momentum_and_decay_equals_torch_sgd():
    cfg = Toy2DMLPConfig(hidden=8, layers=1, activation="tanh")
    torch.manual_seed(1)
    ours = create("mlp_numpy", cfg).double()
    reference = create("mlp", cfg).double()
    reference.load_state_dict(ours.state_dict())
    mine = NumpySGD(ours, lr=0.1, momentum=0.9, weight_decay=1e-2)
    theirs = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(5):
        x, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 2, (16,))
        logits, cache = ours.forward_cache(x.numpy())
        ours.grads = ours.backward(cache, softmax_cross_entropy(logits, y.numpy())[1])
        mine.step()
        theirs.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        theirs.step()
    for name, value in reference.state_dict().items():
        assert torch.allclose(ours.state_dict()[name], value, rtol=1e-10, atol=1e-12), name


def test_numpy_sgd_state_survives_a_checkpoint(tmp_path):
    model = create("mlp_numpy", Toy2DMLPConfig(hidden=4, layers=1))
    opt = NumpySGD(model, lr=0.1, momentum=0.9)
    model.grads = [np.ones_like(a) for a in model.arrays()]
    opt.step()
    checkpoint.save_atomic({"optimizer": opt.state_dict()}, tmp_path / "c.pt")
    restored = NumpySGD(model, lr=0.5)
    restored.load_state_dict(checkpoint.load(tmp_path / "c.pt")["optimizer"])
    assert restored.param_groups[0]["momentum"] == 0.9
    assert all(np.array_equal(a, b) for a, b in zip(restored.buffers, opt.buffers, strict=True))


def test_clip_global_norm_matches_torch():
    grads = [np.random.default_rng(0).normal(size=(3, 4)), np.arange(3.0)]
    tensors = [torch.tensor(g, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, 0.5)
    clip_global_norm(grads, 0.5)
    assert all(np.allclose(g, t.grad.numpy(), rtol=1e-12) for g, t in zip(grads, tensors, strict=True))


# ----------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("optim", [{}, {"optim.momentum": 0.9, "optim.weight_decay": 1e-3, "train.clip": 0.5}])
def test_one_epoch_of_both_models_gives_the_same_weights(store_url, optim):
    """Same init, same batches in the same order, the same update: float32 rounding is all that differs."""
    run_torch, metrics_torch = run(store_url, model="mlp", **optim)
    run_numpy, metrics_numpy = run(store_url, model="mlp_numpy", **optim)
    store = open_store(store_url)
    weights = [checkpoint.load(checkpoint.epoch_path(store.run_dir(r), 1))["model"] for r in (run_torch, run_numpy)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], rtol=0, atol=1e-6), name
    initial = create("mlp", Toy2DMLPConfig()).state_dict()  # the run moved away from some init at all
    assert any(not torch.allclose(weights[0][k], initial[k]) for k in initial)
    assert metrics_torch["test/acc"] == pytest.approx(metrics_numpy["test/acc"], abs=1e-6)
    assert metrics_torch["train/loss"] == pytest.approx(metrics_numpy["train/loss"], rel=1e-5)


def test_a_run_learns_moons_and_draws_its_decision_boundary(store_url):
    run_id, metrics = run(store_url, model="mlp_numpy", **{"train.epochs": 30, "data.n_samples": 400})
    assert metrics["test/acc"] > 0.85 and metrics["params"] == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    assert 1 <= metrics["convergence_epoch"] <= 30
    assert metrics["chance/acc"] == 0.5  # what guessing scores on two moons: the report marks runs no better
    run_dir = open_store(store_url).run_dir(run_id)
    png, svg = run_dir / "decision_boundary.png", run_dir / "decision_boundary.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()[:2000]
    history = [m for m in open_store(store_url).metrics(run_id) if m.split == "valid" and m.name == "acc"]
    assert len(history) == 30  # evaluated every epoch (train.eval_every=1)


def test_convergence_epoch_is_the_first_within_one_point_of_the_best():
    values = [0.5, 0.8, 0.905, 0.9, 0.91, 0.89]
    metrics = [Metric(i, i + 1, "valid", "acc", v) for i, v in enumerate(values)]
    assert convergence_epoch(metrics) == {"convergence_epoch": 3.0, "best_valid_acc": 0.91}
    assert convergence_epoch([]) == {}


@pytest.mark.parametrize("args, key", [(["optim=adam"], "optim=adam"), (["train.precision=bf16"], "train.precision"),
                                       (["data=spirals"], "data"), (["data.noise=-1"], "data.noise")])
def test_bad_input_is_one_line_exit_2_and_no_run(store_url, args, key):
    result = runner.invoke(app, ["run", "toy2d", "model=mlp_numpy", *args, "--store", store_url])
    assert result.exit_code == 2, result.output
    assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert open_store(store_url).list_runs() == []


def test_cli_json_run(store_url):
    result = runner.invoke(app, ["run", "toy2d", "data=circles", "data.n_samples=200", "train.epochs=2", "--json",
                                 "--store", store_url])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["task"] == "toy2d" and out["status"] == "finished" and 0 <= out["metrics"]["test/acc"] <= 1
