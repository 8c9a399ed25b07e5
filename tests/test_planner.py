"""The `--budget` planner: durations, the cost model, the choice of reductions, estimates against real runs."""
from __future__ import annotations

import math
import time

import pytest
import torch
from tests.sweep_helpers import invoke, write_experiment

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.errors import UserError
from sweeplab.store import open_store
from sweeplab.sweep import planner
from sweeplab.sweep.expand import expand, load_experiment
from sweeplab.sweep.planner import Calibration, CellPlan, Plan, makespan, parse_budget, unit_of


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("1.5h", 5400), ("1h30m", 5400),
                                           ("2m30s", 150), (" 45S ", 45)])
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "m", "-5m", "0s", "20 minutes", "", "1h2h"])
def test_a_bad_budget_is_one_line(text, tmp_path, tiny_corpus, store_url):
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)
    result = invoke("sweep", write_experiment(tmp_path, tiny_corpus), "--budget", text, "--store", store_url)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "--budget" in result.stderr


def test_makespan_packs_longest_first():
    # 3,3 | 2,2 | 2 on two workers: 3+2+2 and 3+2 -> 7
    assert makespan([2, 3, 2, 3, 2], 2) == pytest.approx(7 + planner.WORKER_START_S)
    assert makespan([5, 1], 4) == pytest.approx(5 + planner.WORKER_START_S)
    assert makespan([], 2) == 0


def test_the_cost_model_counts_steps_checkpoints_and_evaluations():
    cal = Calibration(setup_s=1, step_s=0.1, eval_s=2, checkpoint_s=0.5, final_s=3, batches_per_epoch=10,
                      eval_interval=3)
    # 7 epochs of 10 steps: 70 steps, 7 checkpoints, evaluations after epochs 3, 6 and 7
    assert cal.cost(70) == pytest.approx(1 + 7 + 7 * 0.5 + 3 * 2 + 3)
    assert cal.cost(5) == pytest.approx(1 + 0.5 + 0.5 + 2 + 3)  # part of one epoch: one checkpoint, one evaluation
    logged = Calibration(1, 0.1, 2, 0.5, 3, 10, 3, log_s=0.01, eval_logs=2, final_logs=1, log_every=20)
    # and 17 store writes: 7 epoch records, 3 evaluations x 2 splits, 1 final, 70 // 20 = 3 interval records
    assert logged.cost(70) == pytest.approx(cal.cost(70) + 17 * 0.01)


def _plan_of(fulls: list[int], step_s: list[float], workers: int, budget_s: float | None) -> Plan:
    cals = [Calibration(0.5, s, 0.2, 0.0, 0.3, 10, 1) for s in step_s]
    cps = [CellPlan(f"c{i}@1", f"c{i}", 1, "key", "epochs", full) for i, full in enumerate(fulls)]
    plan = Plan("x", budget_s, workers, None, {}, cps)
    planner._choose(plan, list(zip(cps, cals, strict=True)), budget_s)
    return plan


def test_a_generous_budget_changes_nothing():
    plan = _plan_of([40, 20], [0.01, 0.02], workers=2, budget_s=10_000)
    assert [c.chosen for c in plan.cells] == [40, 20] and not any(c.reduced for c in plan.cells) and plan.fits


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_tight_budget_gives_every_cell_the_same_largest_fraction(workers):
    fulls, step_s = [40, 40, 20, 10], [0.05, 0.02, 0.05, 0.1]
    budget = 30.0
    plan = _plan_of(fulls, step_s, workers, budget)
    chosen = [c.chosen for c in plan.cells]
    assert plan.fits and plan.makespan_s <= budget and all(1 <= c < f for c, f in zip(chosen, fulls, strict=True))
    fractions = [c / f for c, f in zip(chosen, fulls, strict=True)]
    assert max(fractions) - min(fractions) < max(1 / f for f in fulls) + 1e-9  # one fraction, up to rounding
    more = _plan_of(fulls, step_s, workers, None)  # the same cells with one more unit each no longer fit
    for cp, c, f in zip(more.cells, chosen, fulls, strict=True):
        cp.chosen = min(f, c + math.ceil(0.05 * f))
    cals = [Calibration(0.5, s, 0.2, 0.0, 0.3, 10, 1) for s in step_s]
    longer = [cal.cost(cp.chosen * 10) for cal, cp in zip(cals, more.cells, strict=True)]
    assert makespan(longer, workers) > budget
    assert plan.cells[0].est_s == pytest.approx(cals[0].cost(chosen[0] * 10))


def test_a_budget_too_small_for_one_epoch_says_so():
    plan = _plan_of([40, 40], [1.0, 1.0], workers=1, budget_s=5)
    assert [c.chosen for c in plan.cells] == [1, 1] and not plan.fits


def test_units_epochs_steps_and_one_epoch_runs(tmp_path, tiny_corpus):
    cal = Calibration(1, 0.01, 0.1, 0.01, 0.1, batches_per_epoch=30, eval_interval=1)
    path = write_experiment(tmp_path, tiny_corpus, variants={"E": {"train.epochs": 8},
                                                             "S": {"train.epochs": 8, "train.max_steps": 100},
                                                             "One": {"train.epochs": 1}}, scales={})
    cells = expand(load_experiment(path), None)
    assert [unit_of(c, cal) for c in cells] == [("epochs", 8), ("steps", 100), ("steps", 30)]


def test_a_step_based_task_is_shortened_in_steps(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("task: palindrome\nvariants: {RNN: {model: rnn, train.max_steps: 3000}}\n"
                    "columns: [{title: Acc, metric: valid/acc}]\n")
    try:
        cells = expand(load_experiment(path), None)
    except UserError as exc:
        pytest.skip(str(exc))
    assert unit_of(cells[0], Calibration(1, 0.01, 0.1, 0.01, 0.1, 100, 1)) == ("steps", 3000)


def test_the_estimate_is_close_to_the_measured_run(tmp_path, tiny_corpus):
    """Calibrate a tiny LM cell, then train it for real: the estimate is within a factor of 3 of the wall time
    (the machine is shared, so the bound is loose; a wrong cost model is off by far more)."""
    path = write_experiment(tmp_path, tiny_corpus, variants={"LSTM": {"model.emsize": 32, "model.nhid": 32}},
                            scales={"full": {"overrides": {"train.epochs": 15}}})
    cell = expand(load_experiment(path), "full")[0]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calibration = planner.calibrate(cell)
        estimate = calibration.cost(15 * calibration.batches_per_epoch)
        start = time.perf_counter()
        result = execute(cell.cfg, open_store(f"sqlite:///{tmp_path}/s.sqlite"), RunOptions(quiet=True))
        measured = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    assert result.status == "finished"
    assert calibration.setup_s < estimate and calibration.step_s > 0
    assert 1 / 3 < measured / estimate < 3, (measured, estimate, calibration)


def test_plan_then_budgeted_sweep_uses_the_same_plan(tmp_path, tiny_corpus, store_url):
    """`--plan` calibrates, stores and prints the plan, and trains nothing; the run after it reuses that plan,
    so its reductions (and run keys) are the ones shown. A 1-second budget leaves 1 epoch per cell."""
    path = write_experiment(tmp_path, tiny_corpus, scales={"full": {"overrides": {"train.epochs": 500}}})
    shown = invoke("sweep", path, "--scale", "full", "--budget", "1s", "--plan", "--store", store_url)
    assert shown.exit_code == 0, shown.output
    assert "1 of 500 epochs" in shown.stdout and "budget is too small" in shown.stdout
    store = open_store(store_url)
    assert store.list_runs() == [] and store.get_sweep("tiny")["spec"]["plan"]["budget"] == "1s"
    result = invoke("sweep", path, "--scale", "full", "--budget", "1s", "--store", store_url)
    assert result.exit_code == 0 and "the stored plan" in result.stdout
    runs = store.list_runs(sweep="tiny")
    assert len(runs) == 2 and all(r.config["train"]["epochs"] == 1 and r.epoch == 1 for r in runs)
    assert {r.note for r in runs} == {"1 of 500 epochs (budget 1s)"}
    spec = store.get_sweep("tiny")["spec"]
    assert {c["key"] for c in spec["cells"]} == {r.key for r in runs}
    assert [c["chosen"] for c in spec["plan"]["cells"]] == [1, 1]


def test_full_key_matches_an_unreduced_run(tmp_path, tiny_corpus):
    """The plan remembers each cell's unreduced key, so a changed file or scale never reuses an old plan."""
    path = write_experiment(tmp_path, tiny_corpus)
    cells = expand(load_experiment(path), "quick")
    plan = Plan("1m", 60.0, 1, "quick", {}, [CellPlan(c.ident, c.label, c.seed, c.key) for c in cells])
    assert plan.matches(cells, 60.0, 1, "quick", {})
    assert not plan.matches(cells, 60.0, 2, "quick", {}) and not plan.matches(cells, 30.0, 1, "quick", {})
    assert not plan.matches(expand(load_experiment(path), "full"), 60.0, 1, "quick", {})


# ------------------------------------------------------------------------------- a cheap calibration
def _counting(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[tuple]:
    """Record the calls of cls.name (arguments after self) and let them through."""
    calls: list[tuple] = []
    original = getattr(cls, name)

    def spy(self, *args, **kwargs):
        calls.append((*args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, spy)
    return calls


def test_a_long_evaluation_is_timed_on_a_few_batches_and_scaled(tmp_path, tiny_corpus, monkeypatch, one_thread):
    """bptt 2 on the tiny corpus: 32 validation and 32 test windows. The calibration evaluates one warm-up window
    and CALIBRATION_EVAL_BATCHES timed ones of the first split (never a whole split), and scales that rate by
    each split's count: the test split, whose batches are the same size, is not run at all."""
    from sweeplab.tasks.lm import LanguageModelTask

    path = write_experiment(tmp_path, tiny_corpus, variants={"LSTM": {"train.bptt": 2}})
    cell = expand(load_experiment(path), "quick")[0]
    evaluations = _counting(monkeypatch, LanguageModelTask, "evaluate")
    cal = planner.calibrate(cell)
    k = planner.CALIBRATION_EVAL_BATCHES
    assert [(split, kw.get("limit_batches")) for _, split, kw in evaluations] == [("valid", 1), ("valid", k)]
    assert cal.eval_s > 0 and cal.final_s > cal.eval_s  # test: as many windows, at the same rate, and finish()


def test_a_short_evaluation_is_timed_whole_after_a_warm_up(tmp_path, tiny_corpus, monkeypatch, one_thread):
    from sweeplab.tasks.lm import LanguageModelTask

    cell = expand(load_experiment(write_experiment(tmp_path, tiny_corpus)), "quick")[0]  # 7 windows a split
    evaluations = _counting(monkeypatch, LanguageModelTask, "evaluate")
    planner.calibrate(cell)
    assert sorted((split, kw.get("limit_batches")) for _, split, kw in evaluations) == \
        [("test", None), ("test", None), ("valid", None), ("valid", None)]


def test_cells_of_one_shape_share_a_calibration_and_a_dataset_is_warmed_up_once(tmp_path, tiny_corpus,
                                                                                 monkeypatch, one_thread):
    """Four cells, two shapes (the clip and the seed cost nothing): two calibrations, three set-ups (one warm-up
    for the corpus, then one timed per shape), and a progress line before and after each calibration."""
    path = write_experiment(tmp_path, tiny_corpus, seeds=2,
                            variants={"A": {"train.clip": 0.25}, "B": {"train.clip": 0.0},
                                      "Wide": {"model.nhid": 24}})
    cells = expand(load_experiment(path), "quick")
    setups = _counting_function(monkeypatch, planner, "_setup")
    said: list[str] = []
    plan = planner.make_plan(cells, set(), budget=None, workers=1, threads=1, scale="quick", overrides={},
                             say=said.append)
    assert len(cells) == 6 and len(setups) == 3
    starts = [line for line in said if line.startswith("calibrating")]
    assert starts == ["calibrating A (shape 1 of 2) ...", "calibrating Wide (shape 2 of 2) ..."]
    assert len(said) == 4 and all("/step x " in line and "(took " in line for line in said[1::2])
    estimates = {cp.label: cp.est_full_s for cp in plan.cells}
    assert estimates["A"] == estimates["B"] > 0 and estimates["Wide"] > 0


def _counting_function(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list[tuple]:
    calls: list[tuple] = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_the_scaled_evaluation_is_close_to_a_whole_one(tmp_path, tiny_corpus, one_thread):
    """The estimate of a 32-window evaluation from 8 windows, against the whole evaluation timed here
    (best of three of each, on a shared machine; a wrong scale is off by 4x)."""
    from sweeplab.models.device import get_device
    from sweeplab.registry import TASKS

    path = write_experiment(tmp_path, tiny_corpus, variants={"LSTM": {"train.bptt": 2, "model.nhid": 64,
                                                                      "model.emsize": 64}})
    cfg = expand(load_experiment(path), "quick")[0].cfg
    task = TASKS.get("lm").obj(cfg, get_device("cpu"))
    model = task.build()
    assert task.eval_batch_count("valid") == 32
    estimate = min(planner._time_evaluation(task, model, ("valid",), []) for _ in range(3))
    whole = min(planner._timed(lambda: task.evaluate(model, "valid")) for _ in range(3))
    assert 0.5 < estimate / whole < 2, (estimate, whole)


class _FakeClock:
    now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_fast_steps_are_timed_for_half_a_second_not_a_dozen(monkeypatch):
    """1 ms steps, then 5 ms ones from the 50th on (a busy machine): the mean over half a second of steps
    sees both, where a dozen steps saw only the first (and slow ones stop at the minimum count)."""
    clock = _FakeClock()
    monkeypatch.setattr(planner, "time", clock)

    class Trainer:
        steps = 0
        task = type("Task", (), {"train_batches": lambda self, epoch: iter(range(40))})()

        def set_lr(self, epoch):
            pass

        def train_step(self, batch):
            self.steps += 1
            clock.now += 0.001 if self.steps <= 50 else 0.005

    trainer = Trainer()
    mean = planner._time_steps(trainer, lambda: None)
    timed = trainer.steps - 1
    assert 0.5 <= timed * mean < 0.51 and timed == 49 + 91  # 49 x 1 ms + 91 x 5 ms: the first past 0.5 s
    assert mean == pytest.approx((49 * 0.001 + 91 * 0.005) / 140)

    slow = Trainer()
    slow.steps = 10**6  # 5 ms steps from the start ...
    monkeypatch.setattr(planner, "CALIBRATION_STEP_TIME_S", 0.001)  # ... against a tiny threshold
    planner._time_steps(slow, lambda: None)
    assert slow.steps - 10**6 == 1 + planner.CALIBRATION_MIN_STEPS
