"""`sweeplab import LOG --task lm|image --name NAME`: a run made elsewhere becomes a stored run.

Reads the logs of pytorch/examples' scripts, so numbers obtained on another machine (or from a
course handout) fill table cells with their provenance (status `imported`, note "imported from FILE"):

  word_language_model   | epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.67 | loss  6.98 | ppl  1078.32
                        | end of epoch   1 | time: 95.42s | valid loss  5.54 | valid ppl   254.86
                        | End of training | test loss  4.97 | test ppl   144.54
  imagenet              Epoch: [0][ 10/5005]  Time  0.321 ( 0.456)  ...  Loss 6.9e+00 (6.9e+00)  Acc@1 0.00 (0.10) ...
                         * Acc@1 75.432 Acc@5 92.118          (once per epoch, after validation)

The log's own numbers are stored as the tasks store theirs (lm: loss/ppl; image: accuracies as
fractions); what a log does not print (the model, its size) can be told as KEY=VALUE overrides.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeplab.errors import UserError
from sweeplab.registry import TASKS as TASKS_REGISTRY
from sweeplab.store import Metric, RunRow, Store
from sweeplab.tasks import resolve

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_FIELD = re.compile(rf"^\s*([A-Za-z][A-Za-z/ ]*?)\s*:?\s+({_NUMBER})s?\s*$")


@dataclass
class Parsed:
    metrics: list[Metric] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0

    def add(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        self.metrics += [Metric(step, epoch, split, name, value) for name, value in values.items()]


# ------------------------------------------------------------------------------ word_language_model
_LM_INTERVAL = re.compile(r"^\|\s*epoch\s+(\d+)\s*\|\s*(\d+)\s*/\s*(\d+)\s+batches\s*\|(.*)$")
_LM_EPOCH_END = re.compile(r"^\|\s*end of epoch\s+(\d+)\s*\|(.*)$")
_LM_TEST = re.compile(r"^\|\s*end of training\s*\|(.*)$", re.IGNORECASE)


def _fields(text: str) -> dict[str, float]:
    """`| lr 20.00 | ms/batch 45.67 | loss  6.98` -> {"lr": 20.0, "ms/batch": 45.67, "loss": 6.98}."""
    out = {}
    for part in text.split("|"):
        match = _FIELD.match(part)
        if match:
            out[match.group(1).strip().lower()] = float(match.group(2))
    return out


def parse_lm(lines: list[str]) -> Parsed:
    parsed, intervals, totals = Parsed(), {}, {}
    for line in lines:
        if match := _LM_INTERVAL.match(line.strip()):
            epoch, batch, total = (int(match.group(i)) for i in (1, 2, 3))
            totals[epoch] = total
            values = _fields(match.group(4))
            step = (epoch - 1) * total + batch
            parsed.add(step, epoch, "step", _renamed(values, {"lr": "lr", "ms/batch": "ms_per_batch", "loss": "loss",
                                                              "ppl": "ppl"}))
            intervals.setdefault(epoch, []).append((step, values))
            parsed.steps = max(parsed.steps, step)
        elif match := _LM_EPOCH_END.match(line.strip()):
            epoch = int(match.group(1))
            values = _fields(match.group(2))
            step = epoch * totals[epoch] if epoch in totals else parsed.steps  # the whole epoch ran
            parsed.steps = max(parsed.steps, step)
            parsed.add(step, epoch, "train", _lm_train_epoch(intervals.get(epoch, []), values))
            parsed.add(step, epoch, "valid", _renamed(values, {"valid loss": "loss", "valid ppl": "ppl"}))
            parsed.epochs = max(parsed.epochs, epoch)
        elif match := _LM_TEST.match(line.strip()):
            values = _fields(match.group(1))
            parsed.add(parsed.steps, parsed.epochs, "test", _renamed(values, {"test loss": "loss", "test ppl": "ppl"}))
    return parsed


def _lm_train_epoch(intervals: list[tuple[int, dict[str, float]]], end: dict[str, float]) -> dict[str, float]:
    """An epoch's training metrics from its logged intervals: the mean loss over the logged batches
    (each interval covers the same number of batches), the mean ms/batch, the last lr."""
    values: dict[str, float] = {}
    losses = [v["loss"] for _, v in intervals if "loss" in v]
    if losses:
        values["loss"] = sum(losses) / len(losses)
        values["ppl"] = math.exp(values["loss"]) if values["loss"] < 700 else math.inf
    speeds = [v["ms/batch"] for _, v in intervals if "ms/batch" in v]
    if speeds:
        values["ms_per_batch"] = sum(speeds) / len(speeds)
    if intervals and "lr" in intervals[-1][1]:
        values["lr"] = intervals[-1][1]["lr"]
    if "time" in end:
        values["epoch_time_s"] = end["time"]  # word_language_model's epoch time includes its validation
    return values


def _renamed(values: dict[str, float], names: dict[str, str]) -> dict[str, float]:
    return {new: values[old] for old, new in names.items() if old in values}


# -------------------------------------------------------------------------------------------- imagenet
_IMAGE_TRAIN = re.compile(r"^Epoch:\s*\[(\d+)\]\s*\[\s*(\d+)\s*/\s*(\d+)\s*\](.*)$")
_IMAGE_SUMMARY = re.compile(rf"^\*\s+Acc@1\s+({_NUMBER})\s+Acc@5\s+({_NUMBER})")
_METER = re.compile(rf"(Time|Loss|Acc@1|Acc@5)\s+({_NUMBER})\s*\(\s*({_NUMBER})\s*\)")


def parse_image(lines: list[str]) -> Parsed:
    """Per epoch: the last training line's running averages (loss, Acc@1, Acc@5, batch time) and the
    summary of the evaluation that follows. The script evaluates the official validation images, which
    the image task holds out as its `test` split; accuracies become fractions, as the image task stores them."""
    parsed, last_train = Parsed(), {}
    for line in lines:
        text = line.strip()
        if match := _IMAGE_TRAIN.match(text):
            epoch, batch, total = int(match.group(1)) + 1, int(match.group(2)), int(match.group(3))
            meters = {m.group(1): float(m.group(3)) for m in _METER.finditer(match.group(4))}  # running averages
            last_train[epoch] = ((epoch - 1) * total + batch + 1, meters)
        elif match := _IMAGE_SUMMARY.match(text):
            epoch = parsed.epochs + 1
            step, meters = last_train.get(epoch, (parsed.steps, {}))
            parsed.add(step, epoch, "train", _image_train(meters))
            parsed.add(step, epoch, "test", {"acc1": float(match.group(1)) / 100, "acc5": float(match.group(2)) / 100})
            parsed.epochs, parsed.steps = epoch, max(parsed.steps, step)
    return parsed


def _image_train(meters: dict[str, float]) -> dict[str, float]:
    values = {name: meters[key] / 100 for key, name in (("Acc@1", "acc1"), ("Acc@5", "acc5")) if key in meters}
    if "Loss" in meters:
        values["loss"] = meters["Loss"]
    if "Time" in meters:
        values["ms_per_batch"] = meters["Time"] * 1000
    return values


# ---------------------------------------------------------------------------------------------- import
PARSERS = {"lm": parse_lm, "image": parse_image}
EXPECTED = {"lm": "word_language_model lines ('| epoch ... | ppl ...', '| end of epoch ... | valid ppl ...')",
            "image": "imagenet summary lines (' * Acc@1 75.432 Acc@5 92.118')"}


def import_log(path: Path, *, task: str, name: str, store: Store, overrides: dict[str, Any] | None = None,
               sweep: str | None = None, cell: str | None = None) -> tuple[RunRow, bool]:
    """Parse `path` and store it as a run with status `imported`: (the run, whether it is new).
    The same log imported twice is the same run."""
    if task not in PARSERS:
        raise UserError(f"--task: {task!r} is not accepted; accepted: {', '.join(PARSERS)}")
    lines = _read_lines(path)
    parsed = PARSERS[task](lines)
    if not parsed.metrics or not parsed.epochs:
        raise UserError(f"{path}: no {EXPECTED[task]} found; is it a pytorch/examples {task} log?")
    config = _config(task, overrides or {})
    key = hashlib.sha256(("import\0" + task + "\0" + "\n".join(lines)).encode()).hexdigest()
    existing = store.find_by_key(key)
    if existing:
        return existing, False
    run_id = store.create_run(key=key, name=name, task=task, config=config, env={"source": str(path)},
                              status="imported", sweep=sweep, cell=cell, note=f"imported from {path.name}")
    store.log_metrics(run_id, parsed.metrics)
    store.set_summary(run_id, _summary(parsed))
    store.update_run(run_id, epoch=parsed.epochs, step=parsed.steps, ended_at=None)
    return store.get_run(run_id), True


def _config(task: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings the log was made with, as far as the user tells them (KEY=VALUE), resolved like a run's."""
    import sweeplab.tasks  # noqa: F401 - fills the task registry

    if task not in TASKS_REGISTRY:  # the task is not installed here: keep what was told, unresolved
        return {"task": task, **overrides}
    return resolve(task, overrides).to_dict()


def _summary(parsed: Parsed) -> dict[str, float]:
    """Last value of each metric, epochs and steps, and the best epoch by the validation metric."""
    last = {m.key: m.value for m in parsed.metrics}
    summary = {**last, "epochs": float(parsed.epochs), "steps": float(parsed.steps)}
    valid = [(m.epoch, m.value) for m in parsed.metrics if m.key in ("valid/loss", "test/acc1") and
             math.isfinite(m.value)]
    if valid:
        lower_is_better = any(m.key == "valid/loss" for m in parsed.metrics)
        best = min(valid, key=lambda p: p[1]) if lower_is_better else max(valid, key=lambda p: p[1])
        summary["best_epoch"] = float(best[0])
    return summary


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such log file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the log ({exc.strerror or exc.__class__.__name__})") from None
    if b"\0" in data[:4096]:
        raise UserError(f"{path}: not a text log (binary data)")
    try:
        return data.decode("utf8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text log") from None
