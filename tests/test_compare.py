"""`sweeplab compare`: two checkpoints of tiny runs, checked against predictions computed here."""
from __future__ import annotations

import json

import pytest
import torch
from tests.test_image_data import write_tiny
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.data.images import ImageDataConfig, load_images
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.errors import UserError
from sweeplab.models.vision import ImageSpec, MLPConfig, create_image_model
from sweeplab.store import checkpoint, open_store
from sweeplab.sweep.compare import Comparison, Side, compare_predictions, parse_ref
from sweeplab.tasks import resolve

runner = CliRunner()
DIGITS = {"data": "digits", "model": "mlp", "model.hidden": 32, "model.layers": 1, "train.epochs": 2,
          "train.batch_size": 32, "data.train_limit": 256, "optim.lr": 0.02}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(store_url: str, name: str, **overrides) -> str:
    cfg = resolve("image", {**DIGITS, **overrides})
    result = execute(cfg, open_store(store_url), RunOptions(name=name, quiet=True))
    assert result.status == "finished"
    return result.run_id


def compare(store_url: str, *args: str) -> dict:
    result = runner.invoke(app, ["compare", *args, "--json", "--store", store_url])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def predictions_by_hand(store_url: str, run_id: str, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle: the checkpoint's weights on the digits test images, normalised here by hand."""
    data = load_images("digits", ImageDataConfig(train_limit=256))
    model = create_image_model("mlp", ImageSpec(1, 8, 8, 10), MLPConfig(hidden=32, layers=1))
    path = checkpoint.epoch_path(open_store(store_url).run_dir(run_id), epoch)
    model.load_state_dict(checkpoint.load(path)["model"])
    x = (data.held_out["test"].x.float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    with torch.no_grad():
        return model.eval()(x).argmax(1), data.held_out["test"].y


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> tuple[str, str]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'runs.sqlite'}"
    return store_url, train(store_url, "tiny-digits")


def test_two_epochs_of_one_run_against_predictions_made_here(two_epochs):
    store_url, run_id = two_epochs
    out = compare(store_url, "tiny-digits@1", f"{run_id}@2")
    pred_a, truth = predictions_by_hand(store_url, run_id, 1)
    pred_b, _ = predictions_by_hand(store_url, run_id, 2)
    assert (out["a"]["epoch"], out["b"]["epoch"], out["split"], out["n"]) == (1, 2, "test", len(truth))
    assert out["agreement"] == pytest.approx(float((pred_a == pred_b).float().mean()))
    assert out["a"]["accuracy"] == pytest.approx(float((pred_a == truth).float().mean()))
    assert out["b"]["accuracy"] == pytest.approx(float((pred_b == truth).float().mean()))
    differ = (pred_a != pred_b).nonzero().flatten().tolist()
    assert [d["sample"] for d in out["disagreements"]] == differ
    for d in out["disagreements"]:
        i = d["sample"]
        assert (d["pred_a"], d["pred_b"], d["truth"]) == (str(int(pred_a[i])), str(int(pred_b[i])), str(int(truth[i])))
    assert sum(out["right_where_disagree"].values()) == len(differ)
    assert out["right_where_disagree"]["b"] == int(((pred_b == truth) & (pred_a != truth)).sum())
    for row in out["per_class"]:
        mask = truth == int(row["class"])
        assert row["n"] == int(mask.sum())
        assert row["delta"] == pytest.approx(float((pred_b[mask] == truth[mask]).float().mean()
                                                   - (pred_a[mask] == truth[mask]).float().mean()), abs=1e-6)


def test_a_checkpoint_against_itself_agrees_everywhere(two_epochs):
    store_url, run_id = two_epochs
    out = compare(store_url, f"{run_id}@2", f"{run_id}@2")
    assert out["agreement"] == 1.0 and out["disagreements"] == [] and out["a"]["accuracy"] == out["b"]["accuracy"]
    assert all(row["delta"] == 0 for row in out["per_class"])


def test_without_an_epoch_the_best_checkpoint_is_used(two_epochs):
    store_url, run_id = two_epochs
    best = int(open_store(store_url).summary(run_id)["best_epoch"])
    assert compare(store_url, run_id, run_id)["a"]["epoch"] == best


def test_the_table_names_both_runs_and_the_classes(two_epochs):
    store_url, run_id = two_epochs
    result = runner.invoke(app, ["compare", f"{run_id}@1", f"{run_id}@2", "--store", store_url])
    assert result.exit_code == 0 and "agreement" in result.stdout and "per-class accuracy" in result.stdout


@pytest.mark.parametrize("args, needle", [(["tiny-digits@9", "tiny-digits"], "no checkpoint for epoch 9; kept: 1, 2"),
                                          (["nope", "tiny-digits"], "run 'nope' not found"),
                                          (["tiny-digits@x", "tiny-digits"], "RUN@EPOCH"),
                                          (["tiny-digits", "tiny-digits", "--split", "nope"], "accepted: valid, test")])
def test_bad_references_are_one_line_exit_2(two_epochs, args, needle):
    store_url, _ = two_epochs
    result = runner.invoke(app, ["compare", *args, "--store", store_url])
    assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_runs_on_different_samples_are_refused(two_epochs):
    store_url, run_id = two_epochs
    other = train(store_url, "fewer-test-images", **{"data.test_limit": 100, "train.epochs": 1})
    result = runner.invoke(app, ["compare", run_id, other, "--store", store_url])
    assert result.exit_code == 2 and "different 'test' splits" in result.stderr


def test_tinyimagenet_samples_are_named_by_file(tmp_path, store_url):
    folder = write_tiny(tmp_path / "tiny", per_class=4, val_per_class=4)
    run_a = train(store_url, "tiny-a", data="tinyimagenet", **{"data.path": str(folder), "data.train_limit": 0,
                                                               "train.batch_size": 4, "train.epochs": 2})
    run_b = train(store_url, "tiny-b", data="tinyimagenet", seed=7, **{"data.path": str(folder), "data.train_limit": 0,
                                                                       "train.batch_size": 4, "train.epochs": 2})
    out = compare(store_url, run_a, run_b)
    names = [line.split("\t")[0] for line in (folder / "val" / "val_annotations.txt").read_text().splitlines()]
    assert out["n"] == len(names) == 12
    assert out["disagreements"] and all(d["sample"] in names for d in out["disagreements"])
    assert len(out["disagreements"]) == round((1 - out["agreement"]) * out["n"])
    assert {d["truth"] for d in out["disagreements"]} <= {"Egyptian cat", "reel", "volleyball"}


def test_compare_predictions_by_hand():
    truth = torch.tensor([0, 0, 1, 1, 2])
    a = torch.tensor([0, 1, 1, 0, 2])
    b = torch.tensor([0, 0, 1, 2, 1])
    out = compare_predictions(a, b, truth, ["f0", "f1", "f2", "f3", "f4"], ["cat", "dog", "eel", "fox"])
    assert out["agreement"] == pytest.approx(2 / 5) and out["acc_a"] == pytest.approx(3 / 5)
    assert [(d["sample"], d["right"]) for d in out["disagreements"]] == [("f1", "b"), ("f3", "neither"), ("f4", "a")]
    assert out["right_where_disagree"] == {"a": 1, "b": 1, "neither": 1}
    deltas = {row["class"]: row["delta"] for row in out["per_class"]}
    assert deltas["cat"] == pytest.approx(0.5) and deltas["eel"] == pytest.approx(-1.0)
    assert deltas["fox"] != deltas["fox"]  # no sample of that class: NaN, written as null in JSON
    side = Side("r", "n", 1, "mlp", 0.5)
    comparison = Comparison(side, side, "test", 5, out["agreement"], out["right_where_disagree"], out["per_class"])
    assert json.loads(json.dumps(comparison.to_json(), allow_nan=False))["per_class"][3]["delta"] is None


def test_parse_ref():
    assert parse_ref("abc") == ("abc", None) and parse_ref("my@run@3") == ("my@run", 3)
    with pytest.raises(UserError):
        parse_ref("abc@0")


def test_toy2d_numpy_and_pytorch_runs_predict_alike(store_url):
    runs = []
    for model in ("mlp", "mlp_numpy"):
        cfg = resolve("toy2d", {"model": model, "data.n_samples": 300, "train.epochs": 5})
        runs.append(execute(cfg, open_store(store_url), RunOptions(quiet=True)).run_id)
    out = compare(store_url, *runs)
    assert out["n"] == 60 and out["agreement"] == 1.0 and out["a"]["accuracy"] == out["b"]["accuracy"]
    assert (out["a"]["model"], out["b"]["model"]) == ("mlp", "mlp_numpy")
