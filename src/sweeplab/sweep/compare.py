"""`sweeplab compare RUN_A[@EPOCH] RUN_B[@EPOCH]`: where two checkpoints predict differently.

Both checkpoints are evaluated on the same split (rebuilt from each run's stored config, through
the data cache); the comparison reports the agreement rate, both accuracies, every sample they
predict differently (with both predictions and the truth), who is right where they disagree, and
the per-class accuracy deltas. `compare_predictions` is the pure part; the rest loads and prints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from sweeplab.config import flatten
from sweeplab.errors import UserError
from sweeplab.models.device import get_device
from sweeplab.registry import TASKS
from sweeplab.store import RunRow, Store, checkpoint
from sweeplab.tasks import capable, resolve, tasks_with


@dataclass
class Side:
    """One of the two checkpoints."""

    run_id: str
    name: str
    epoch: int
    model: str
    accuracy: float


@dataclass
class Comparison:
    a: Side
    b: Side
    split: str
    n: int
    agreement: float  # share of samples with the same top-1 prediction
    right_where_disagree: dict[str, int]  # a_only, b_only, neither: who is right on the differing samples
    per_class: list[dict[str, Any]]  # class, n, acc_a, acc_b, delta (b - a)
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # sample, truth, pred_a, pred_b, right

    def to_json(self) -> dict[str, Any]:
        """As a dict for json.dumps: NaN (a class absent from the split) becomes None."""
        return _nan_to_none(asdict(self))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def parse_ref(text: str) -> tuple[str, int | None]:
    """`RUN` or `RUN@EPOCH` -> (run reference, epoch or None)."""
    run, sep, epoch = text.rpartition("@")
    if not sep:
        return text, None
    if not run or not epoch.isdigit() or int(epoch) < 1:
        raise UserError(f"{text!r}: expected RUN or RUN@EPOCH with EPOCH a positive integer (e.g. {run or 'abc123'}@3)")
    return run, int(epoch)


def pick_epoch(store: Store, run: RunRow, run_dir: Path, epoch: int | None) -> int:
    """The asked epoch if its checkpoint is kept; by default the best kept epoch, else the last."""
    kept = checkpoint.list_epochs(run_dir)
    if not kept:
        raise UserError(f"run {run.id} ({run.name}) has no checkpoints under {run_dir} "
                        f"(status {run.status})")
    if epoch is None:
        best = int(store.summary(run.id).get("best_epoch", 0))
        return best if best in kept else kept[-1]
    if epoch not in kept:
        raise UserError(f"run {run.id} ({run.name}) has no checkpoint for epoch {epoch}; kept: "
                        f"{', '.join(map(str, kept))} (train.keep_checkpoints=all keeps one per epoch)")
    return epoch


def load_checkpoint(store: Store, ref: str, device: str) -> tuple[Any, nn.Module, Side]:
    """The run's task (data rebuilt from its stored config) and its model at the chosen epoch."""
    run_ref, epoch = parse_ref(ref)
    run = store.get_run(run_ref)
    if not capable(run.task, "predict"):
        raise UserError(f"run {run.id} is a {run.task!r} run; compare works on {', '.join(tasks_with('predict'))} runs")
    run_dir = store.run_dir(run.id)  # an object store's files are pulled once, here
    epoch = pick_epoch(store, run, run_dir, epoch)
    cfg = resolve(run.task, {**flatten(run.config), "device": device})
    task = TASKS.get(run.task, key="task").obj(cfg, get_device(device))
    model = task.build()
    model.load_state_dict(checkpoint.load_from_run(run_dir, epoch)["model"])  # a link out of the folder: refused
    model.eval()
    return task, model, Side(run.id, run.name, epoch, cfg.model_name, float("nan"))


def compare_predictions(pred_a: torch.Tensor, pred_b: torch.Tensor, truth: torch.Tensor, ids: list,
                        classes: list[str]) -> dict[str, Any]:
    """Agreement, accuracies, disagreements and per-class deltas of two prediction vectors."""
    right_a, right_b = pred_a == truth, pred_b == truth
    differ = (pred_a != pred_b).nonzero().flatten().tolist()
    disagreements = [{"sample": ids[i], "truth": classes[int(truth[i])], "pred_a": classes[int(pred_a[i])],
                      "pred_b": classes[int(pred_b[i])],
                      "right": "a" if right_a[i] else "b" if right_b[i] else "neither"} for i in differ]
    per_class = []
    for c, name in enumerate(classes):
        mask = truth == c
        count = int(mask.sum())
        acc_a = float(right_a[mask].float().mean()) if count else float("nan")
        acc_b = float(right_b[mask].float().mean()) if count else float("nan")
        per_class.append({"class": name, "n": count, "acc_a": acc_a, "acc_b": acc_b, "delta": acc_b - acc_a})
    return {"n": len(truth), "agreement": float((pred_a == pred_b).float().mean()),
            "acc_a": float(right_a.float().mean()), "acc_b": float(right_b.float().mean()),
            "right_where_disagree": {k: sum(d["right"] == k for d in disagreements) for k in ("a", "b", "neither")},
            "per_class": per_class, "disagreements": disagreements}


def compare_runs(store: Store, ref_a: str, ref_b: str, split: str = "test", device: str = "cpu") -> Comparison:
    task_a, model_a, side_a = load_checkpoint(store, ref_a, device)
    task_b, model_b, side_b = load_checkpoint(store, ref_b, device)
    pred_a, truth_a, ids_a = task_a.predict(model_a, split)
    pred_b, truth_b, ids_b = task_b.predict(model_b, split)
    if not torch.equal(truth_a, truth_b) or list(ids_a) != list(ids_b) or task_a.class_names() != task_b.class_names():
        raise UserError(f"runs {side_a.run_id} and {side_b.run_id} have different {split!r} splits (different data "
                        "or data settings); compare needs both evaluated on the same samples")
    result = compare_predictions(pred_a, pred_b, truth_a, list(ids_a), task_a.class_names())
    side_a.accuracy, side_b.accuracy = result.pop("acc_a"), result.pop("acc_b")
    return Comparison(a=side_a, b=side_b, split=split, **result)


# ------------------------------------------------------------------------------------- printing
def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}%"


def print_comparison(c: Comparison, console: Console, limit: int = 20) -> None:
    runs = Table("", "run", "name", "model", "epoch", f"{c.split} acc", title=f"compare on {c.split} ({c.n:,} samples)")
    for label, side in (("A", c.a), ("B", c.b)):
        runs.add_row(label, side.run_id, escape(side.name), side.model, str(side.epoch), _pct(side.accuracy))
    console.print(runs)
    w = c.right_where_disagree
    if c.disagreements:
        console.print(f"agreement {_pct(c.agreement)}: {len(c.disagreements):,} samples predicted differently; "
                      f"there A is right on {w['a']:,}, B on {w['b']:,}, neither on {w['neither']:,}")
    else:
        console.print(f"agreement {_pct(c.agreement)}: both predict every sample alike")
    classes = Table("class", "n", "acc A", "acc B", "delta (B - A)", title="per-class accuracy")
    for row in c.per_class:
        delta = "-" if row["delta"] != row["delta"] else f"{100 * row['delta']:+.1f}"
        classes.add_row(escape(row["class"]), str(row["n"]), _pct(row["acc_a"]), _pct(row["acc_b"]), delta)
    console.print(classes)
    if c.disagreements:
        shown = c.disagreements[:limit]
        rows = Table("sample", "truth", "A says", "B says", "right",
                     title=f"samples predicted differently ({len(shown)} of {len(c.disagreements)}; --json for all)")
        for d in shown:
            rows.add_row(*(escape(str(d[k])) for k in ("sample", "truth", "pred_a", "pred_b")), d["right"].upper()
                         if d["right"] != "neither" else "neither")
        console.print(rows)
