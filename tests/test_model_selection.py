"""Model selection never sees the test split: the best epoch is chosen on `valid`, carved from the
training data where a dataset has none, and `test` is read only once, after training."""
from __future__ import annotations

import pytest
import torch
from tests.conftest import real_data

import sweeplab.tasks  # noqa: F401  (fills the registries)
from sweeplab.data.images import ImageDataConfig, load_decoded, load_images
from sweeplab.data.toy2d import Toy2DDataConfig, make_toy2d
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.registry import TASKS
from sweeplab.report.build import build_experiment
from sweeplab.report.spec import load_target
from sweeplab.store import open_store
from sweeplab.tasks import resolve

TOY2D = {"data.n_samples": 200, "train.epochs": 3}
DIGITS = {"data": "digits", "model": "mlp", "model.hidden": 16, "model.layers": 1, "data.train_limit": 128,
          "data.test_limit": 64, "train.epochs": 2, "train.batch_size": 32, "train.keep_checkpoints": "all"}


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, bool]]:
    """Every split a task evaluates, with whether training (`Trainer.fit`) was still under way."""
    calls: list[tuple[str, bool]] = []
    fitting = [False]
    fit, evaluate_final = Trainer.fit, Trainer.evaluate_final

    def instrumented_fit(self):
        fitting[0] = True
        try:
            return fit(self)
        finally:
            fitting[0] = False

    def instrumented_final(self):
        assert not fitting[0]
        return evaluate_final(self)

    owners = {next(c for c in TASKS.get(name).obj.__mro__ if "evaluate_sums" in vars(c)) for name in TASKS.names()}
    for cls in owners:  # the classes that define `evaluate_sums` (StepTask for palindrome and addition)
        monkeypatch.setattr(cls, "evaluate_sums", _recording(cls.evaluate_sums, calls, fitting))
    monkeypatch.setattr(Trainer, "fit", instrumented_fit)
    monkeypatch.setattr(Trainer, "evaluate_final", instrumented_final)
    return calls


def _recording(evaluate, calls, fitting):
    def wrapper(self, model, split, *args, **kwargs):
        calls.append((split, fitting[0]))
        return evaluate(self, model, split, *args, **kwargs)
    return wrapper


def train(store_url: str, task: str, overrides: dict, **opts) -> tuple[str, dict]:
    result = execute(resolve(task, overrides), open_store(store_url), RunOptions(quiet=True, **opts))
    assert result.status == "finished"
    return result.run_id, result.metrics


def assert_test_read_only_at_the_end(store_url: str, run_id: str, reads: list[tuple[str, bool]], epochs: int):
    assert [s for s, during in reads if during] == ["valid"] * epochs  # selection: valid, every epoch
    assert [s for s, during in reads if not during] == ["test"]  # test: once, after training
    rows = open_store(store_url).metrics(run_id)
    assert {m.epoch for m in rows if m.split == "test"} == {epochs}
    best = [m for m in rows if m.split == "best"]
    assert [(m.name, m.epoch) for m in best] == [("valid/loss", best[0].epoch)] and 1 <= best[0].epoch <= epochs
    assert best[0].value == min(m.value for m in rows if m.key == "valid/loss")


@pytest.mark.parametrize("model", ["mlp", "mlp_numpy"])
def test_toy2d_selects_on_valid_and_reads_test_once_after_training(store_url, reads, model, one_thread):
    run_id, metrics = train(store_url, "toy2d", {**TOY2D, "model": model})
    assert_test_read_only_at_the_end(store_url, run_id, reads, epochs=3)
    assert "best/valid/loss" in metrics and "test/acc" in metrics and "best_valid_acc" in metrics


def test_digits_select_on_valid_and_read_test_once_after_training(store_url, reads, one_thread):
    run_id, metrics = train(store_url, "image", DIGITS)
    assert_test_read_only_at_the_end(store_url, run_id, reads, epochs=2)
    assert metrics["best_epoch"] in (1, 2) and "test/acc1" in metrics


def test_tinyimagenet_selects_on_a_carved_valid_split(store_url, reads, one_thread):
    folder = real_data("tiny-imagenet-10")
    run_id, _ = train(store_url, "image", {**DIGITS, "data": "tinyimagenet", "data.path": str(folder),
                                           "data.train_limit": 32, "data.test_limit": 20, "train.batch_size": 16,
                                           "train.eval_batch_size": 100})
    assert_test_read_only_at_the_end(store_url, run_id, reads, epochs=2)
    data = load_images("tinyimagenet", ImageDataConfig(path=str(folder)), 1111)
    assert len(data.held_out["valid"]) == 500  # data.valid_fraction = 0.1 of 5,000 training images


@pytest.mark.parametrize("task", ["palindrome", "addition"])
def test_step_tasks_select_on_fresh_valid_batches_and_read_test_once(store_url, reads, task, one_thread):
    run_id, _ = train(store_url, task, {"train.max_steps": 20, "train.eval_every": 10, "train.batch_size": 16,
                                        "train.eval_batch_size": 50, "data.test_size": 100})
    assert_test_read_only_at_the_end(store_url, run_id, reads, epochs=2)


def test_every_task_monitors_a_split_it_evaluates_during_training_and_never_test():
    for name in TASKS.names():
        task = TASKS.get(name).obj
        split = task.monitor.split("/")[0]
        assert split in task.eval_splits and "test" not in task.eval_splits and split != "test", name


def test_the_report_says_which_split_chose_the_checkpoints(store_url, one_thread):
    train(store_url, "toy2d", {**TOY2D, "train.epochs": 2}, sweep="selection", cell="moons")
    store = open_store(store_url)
    caption = build_experiment(load_target("selection", store), store).table.caption
    assert caption.endswith(" — checkpoints chosen by valid/loss (test scored once, with them)")


# ------------------------------------------------------------------------------- the carved splits
@pytest.mark.parametrize("name", ["moons", "circles", "classification"])
def test_toy2d_valid_is_disjoint_from_train_and_test_and_reproducible(name):
    cfg = Toy2DDataConfig(n_samples=300, valid_fraction=0.2)
    a, b, other = make_toy2d(name, cfg, 5), make_toy2d(name, cfg, 5), make_toy2d(name, cfg, 6)
    assert (len(a.x_train), len(a.x_valid), len(a.x_test)) == (192, 48, 60)
    train, valid, test = ({tuple(p) for p in x.tolist()} for x in (a.x_train, a.x_valid, a.x_test))
    assert not train & valid and not valid & test and not train & test
    assert torch.equal(a.x_valid, b.x_valid) and torch.equal(a.y_valid, b.y_valid)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_valid, other.x_valid)
    # the test points do not depend on how much of the training data is held out
    assert torch.equal(make_toy2d(name, Toy2DDataConfig(n_samples=300, valid_fraction=0.5), 5).x_test, a.x_test)


def test_toy2d_without_training_points_left_is_a_user_error():
    from sweeplab.errors import UserError

    with pytest.raises(UserError, match="leaves no training points"):
        make_toy2d("moons", Toy2DDataConfig(n_samples=10, test_fraction=0.8, valid_fraction=0.9), 1)


def test_image_valid_is_disjoint_from_train_and_seeded_by_the_run():
    cfg = ImageDataConfig(train_limit=300)
    a, b, other = (load_images("digits", cfg, seed) for seed in (3, 3, 4))
    blob = load_decoded("digits")
    valid, train = a.held_out["valid"].index, a.train.index
    assert len(valid) == round(0.1 * len(blob["train_y"])) and len(train) == 300
    assert not set(valid.tolist()) & set(train.tolist())
    assert torch.equal(a.held_out["valid"].x, blob["train_x"][valid])
    assert torch.equal(valid, b.held_out["valid"].index) and torch.equal(train, b.train.index)
    assert not torch.equal(valid, other.held_out["valid"].index)
    assert torch.equal(a.held_out["test"].y, other.held_out["test"].y)  # the test set is the dataset's own
    fixed = ImageDataConfig(valid_seed=7)
    assert torch.equal(load_images("digits", fixed, 3).held_out["valid"].index,
                       load_images("digits", fixed, 4).held_out["valid"].index)
