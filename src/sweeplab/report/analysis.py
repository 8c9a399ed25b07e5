"""The analysis section: every sentence is computed from the stored runs of this experiment.

Nothing here is prose about what usually happens; each function reads numbers and says what they
show. The experiment's questions are answered first (questions.py); these are the per-run facts that
remain, each said once: the best configuration (when no question asks), convergence, over-fitting
onset, divergence, and what has not finished or not run, with the reason the store gives. Rankings
read finished runs only: a running or diverged run's last number is not a result.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from sweeplab.report.collect import CellData, Point, RunData, origin
from sweeplab.report.facts import Convergence, convergence
from sweeplab.report.questions import and_list, finished, gap_text, level_with_first, name_list, spread_text
from sweeplab.report.spec import Column, ReportSpec, measured
from sweeplab.report.values import (
    CONVERGENCE_KEYS,
    CellValue,
    cell_value,
    direction,
    fmt,
    fmt_count,
    fmt_mean,
    fmt_value,
    integral,
    plural,
    short,
    shown,
)

QUALITY = ("loss", "ppl", "perplexity", "acc", "err", "exact")


@dataclass(frozen=True)
class Sentence:
    topic: str  # Best, Trend, Convergence, Over-fitting, Divergence, Status
    text: str


def analyse(spec: ReportSpec, cells: list[CellData], columns: list[Column], common_note: str | None) -> list[Sentence]:
    sentences = [] if spec.questions else best_sentences(spec, cells, columns)
    sentences += convergence_sentences(spec, cells, columns)
    sentences += overfitting_sentences(spec, cells)
    sentences += divergence_sentences(cells)
    sentences += status_sentences(spec, cells, common_note)
    return sentences


def who(cell: CellData, run: RunData) -> str:
    return cell.label + (f" (seed {run.seed})" if len(cell.runs) > 1 else "")


# ---------------------------------------------------------------------------------------- best
def primary_column(columns: list[Column]) -> Column | None:
    """The headline metric: a test, else valid, else any quality column (loss, ppl, accuracy)."""
    quality = [c for c in columns if direction(c.metric) and any(w in c.metric.split("/")[-1] for w in QUALITY)]
    for split in ("test/", "valid/"):
        for column in quality:
            if column.metric.startswith(split):
                return column
    return quality[0] if quality else next((c for c in columns if direction(c.metric)), None)


def best_sentences(spec: ReportSpec, cells: list[CellData], columns: list[Column]) -> list[Sentence]:
    primary = primary_column([c for c in columns if measured(spec, c.metric)])  # what this scale measures
    if primary is None:
        return []
    values = [(cell.label, cell_value(finished(cell), primary.metric, primary.aggregate, primary.epoch, spec.seeds))
              for cell in cells]
    sign = direction(primary.metric)
    ranked = sorted([(label, v) for label, v in values if v.has_value and not v.unlearned],
                    key=lambda lv: -sign * lv[1].mean)  # finished values that learned: a guess is no result
    unlearned = [label for label, v in values if v.unlearned]
    text = _best_text(primary, ranked)
    if unlearned:
        text += f" Not ranked, no better than guessing: {and_list(unlearned)}."
    return [Sentence("Best", text)]


def _best_text(column: Column, ranked: list[tuple[str, CellValue]]) -> str:
    sign = direction(column.metric)
    better = "higher" if sign > 0 else "lower"
    what = f"{column.title} ({column.metric}, {column.aggregate}; {better} is better)"
    if not ranked:
        return f"No configuration has a finished {what} value yet."
    (best, b), rest = ranked[0], ranked[1:]
    if not rest:
        return f"Only {best} has a finished {what} value: {_value_text(b, column.metric)}."
    runner, r = rest[0]
    if len(tied := level_with_first(ranked)) > 1:
        return f"By {what}, {and_list(tied)} tie at {_value_text(b, column.metric)}."
    text = (f"Best configuration by {what}: {best} with {_value_text(b, column.metric)}, "
            f"{gap_text(b, r)} {better} than the runner-up {runner} ({_value_text(r, column.metric)})")
    if len(rest) > 1:
        worst, w = rest[-1]
        text += f", and {gap_text(b, w)} {better} than the worst, {worst} ({_value_text(w, column.metric)})"
    return text + "." + spread_text(b, r)


def _value_text(v: CellValue, metric: str) -> str:
    return fmt_mean(v, integral(metric, [v])) + (f" over {v.n} seeds" if v.n > 1 else "")


# -------------------------------------------------------------------------------- convergence
def convergence_sentences(spec: ReportSpec, cells: list[CellData], columns: list[Column]) -> list[Sentence]:
    """Where the table has no convergence column, one compact sentence of who converged when; then the
    fastest and slowest among finished runs that reached the threshold (never a run that only settled). Only ended
    runs: a run still going may yet fall below the threshold."""
    found = [(cell, run, c) for cell in cells for run in cell.runs
             if run.done and (c := convergence(run, spec.convergence_threshold)) is not None and not c.relative]
    if not found:
        return []
    out = []
    if not any(c.metric in CONVERGENCE_KEYS for c in columns):
        reached = [f"{who(cell, run)} at {c.unit} {fmt_count(c.at)}" for cell, run, c in found if c.at is not None]
        failed = [f"{who(cell, run)} ({c.detail})" for cell, run, c in found if c.at is None]
        how = next((c.detail for _, _, c in found if c.at is not None and c.detail), "")
        parts = [f"Converged{f' ({how})' if how else ''}: {', '.join(reached)}" if reached else "",
                 f"not converged: {', '.join(failed)}" if failed else ""]
        out.append(Sentence("Convergence", "; ".join(filter(None, parts)) + "."))
    means = _converged_means(found)
    if len(means) > 1:
        out.append(Sentence("Convergence", _fastest_text(means)))
    return out


def _converged_means(found: list[tuple[CellData, RunData, Convergence]]) -> list[tuple[float, str, str]]:
    """(mean step, label, unit) of the cells whose finished runs all converged."""
    by_cell: dict[str, list[Convergence]] = {}
    for cell, run, c in found:
        by_cell.setdefault(cell.label, []).append(c if run.done else Convergence(None, c.unit))
    return [(statistics.fmean(c.at for c in cs), label, cs[0].unit) for label, cs in by_cell.items()
            if all(c.at is not None for c in cs)]


def _fastest_text(reached: list[tuple[float, str, str]]) -> str:
    unit = reached[0][2]
    fast, slow = min(r[0] for r in reached), max(r[0] for r in reached)
    if fast == slow:
        return f"Every configuration that converges does so at the same {unit} ({fmt_count(fast)})."
    fastest = and_list([label for at, label, _ in reached if at == fast])
    slowest = and_list([label for at, label, _ in reached if at == slow])
    return (f"Fastest to converge: {fastest} ({unit} {fmt_count(fast)}); slowest: {slowest} "
            f"({unit} {fmt_count(slow)}), among the {len(reached)} configurations whose finished runs converged.")


# ------------------------------------------------------------------------------- over-fitting
MANY = 3  # more runs than this that over-fit are named in one sentence, their numbers left to the figures


def overfitting_sentences(spec: ReportSpec, cells: list[CellData]) -> list[Sentence]:
    if not measured(spec, "valid/loss"):  # a loss after a few steps says nothing about over-fitting
        return [Sentence("Over-fitting", f"Not judged at scale {spec.scale}, which does not measure the held-out "
                                         "loss.")]
    out, onsets, judged = [], [], 0
    for cell in cells:
        for run in cell.runs:
            if not run.done:  # "for good" is a claim about the end
                continue
            train, held_out = _by_eval(run, "train/loss"), _held_out_loss(run)
            if len(train) < 3 or held_out is None:
                continue
            judged += 1
            found = overfitting_onset(train, held_out[1])
            if found is not None:
                unit = "step" if run.step_based else "epoch"
                onsets.append(f"{who(cell, run)} from {unit} {found:,}")
                out.append(Sentence("Over-fitting", _onset_text(who(cell, run), unit, held_out[0], train,
                                                                held_out[1], found)))
    if len(out) > MANY:
        return [Sentence("Over-fitting", f"{len(out)} of the {judged} ended runs over-fit (the held-out loss rises "
                                         f"for good while the training loss falls): {name_list(onsets)}.")]
    if not out:
        text = (f"No run over-fits: in none of the {judged} ended runs with three or more evaluations does the "
                f"held-out loss rise for good while the training loss falls." if judged else
                "Over-fitting cannot be judged yet: no ended run has three or more evaluations.")
        out.append(Sentence("Over-fitting", text))
    return out


def overfitting_onset(train: dict[int, float], held_out: dict[int, float]) -> int | None:
    """The first evaluation e where the held-out loss rises while the training loss falls, and stays so:
    at e and every later evaluation (at least one more, to see it stay) the held-out loss is above its
    value just before e and the training loss below its own, as the report shows them."""
    points = sorted(set(train) & set(held_out))
    for i in range(1, len(points) - 1):
        before = points[i - 1]
        if all(shown(held_out[e]) > shown(held_out[before]) and shown(train[e]) < shown(train[before])
               for e in points[i:]):
            return points[i]
    return None


def _onset_text(name: str, unit: str, metric: str, train: dict[int, float], held: dict[int, float],
                onset: int) -> str:
    points = sorted(set(train) & set(held))
    before, last = points[points.index(onset) - 1], points[-1]
    return (f"{name} over-fits from {unit} {onset:,}: {metric} rises from {fmt_value(held[before])} ({unit} "
            f"{before:,}) to {fmt_value(held[last])} ({unit} {last:,}) while train/loss falls from "
            f"{fmt_value(train[before])} to {fmt_value(train[last])}.")


def _held_out_loss(run: RunData) -> tuple[str, dict[int, float]] | None:
    for metric in ("valid/loss", "test/loss"):
        series = _by_eval(run, metric)
        if len(series) >= 3:
            return metric, series
    return None


def _by_eval(run: RunData, metric: str) -> dict[int, float]:
    """The last finite value at each evaluation: by step for step-based tasks, else by epoch."""
    return {(p.step if run.step_based else p.epoch): p.value
            for p in run.series.get(metric, []) if math.isfinite(p.value)}


# --------------------------------------------------------------------------------- divergence
def divergence_sentences(cells: list[CellData]) -> list[Sentence]:
    runs = [(cell, run) for cell in cells for run in cell.runs]
    out = []
    for cell, run in runs:
        where = run.divergence()
        if run.row.status != "diverged" and where is None:
            continue
        out.append(Sentence("Divergence", f"{who(cell, run)} diverged{_where(run, where)}."))
    ended = [run for _, run in runs if run.done]
    if not out and ended:  # a run still going can yet diverge: only ended runs count
        rest = len(runs) - len(ended)
        more = f"; {rest} more {'has' if rest == 1 else 'have'} not ended" if rest else ""
        every = "the ended run" if len(ended) == 1 else f"all {len(ended)} ended runs"
        out.append(Sentence("Divergence", f"No run diverged: {every} kept a finite training loss{more}."))
    return out


def _where(run: RunData, point: Point | None) -> str:
    """` at epoch 3, step 1,200: ERROR`; without a non-finite value stored, where the error says it went."""
    error = short(run.row.error, 120) if run.row.error else ""
    if point is None:
        return f": {error}" if error else f" in epoch {run.row.epoch + 1}"
    return f" at epoch {point.epoch}, step {fmt(point.step)}" + (f": {error}" if error else "")


# -------------------------------------------------------------------------------------- status
def status_sentences(spec: ReportSpec, cells: list[CellData], common_note: str | None) -> list[Sentence]:
    runs = [(cell, run) for cell in cells for run in cell.runs]
    out = [Sentence("Status", unfinished_text(who(cell, run), run))
           for cell, run in runs if run.row.status in ("running", "interrupted", "failed")]
    if common_note:
        out.append(Sentence("Status", f"Every run: {common_note}."))
    else:
        out += [Sentence("Status", f"{who(cell, run)}: {run.row.note}.") for cell, run in runs if run.row.note]
    out += [Sentence("Status", f"{who(cell, run)} is imported, not trained by sweeplab.")
            for cell, run in runs if run.row.status == "imported" and not run.row.note]
    out += [Sentence("Status", f"{who(cell, run)} is shown from an earlier sweep (another scale or budget): "
                               "the last sweep's run of this cell is not stored yet.")
            for cell in cells for run in cell.extra.get("stale", [])]
    out += [Sentence("Status", f"{who(cell, run)} is the same run made by {origin(run.row)} (same config, so not "
                               "trained again).") for cell in cells for run in cell.extra.get("adopted", [])]
    missing = [cell.label for cell in cells if not cell.runs]
    if missing:
        out.append(Sentence("Status", f"Not run: {', '.join(missing)} ({len(missing)} of {plural(len(cells), 'cell')} have no "
                                      f"stored run under sweep {spec.name!r})."))
    short_of = [f"{cell.label} ({len(cell.runs)})" for cell in cells if 0 < len(cell.runs) < spec.seeds]
    if short_of:
        out.append(Sentence("Status", f"Fewer seeds than the {spec.seeds} asked for: {', '.join(short_of)}."))
    extra = [cell.label for cell in cells if not cell.expected]
    if extra:
        out.append(Sentence("Status", "Stored under the sweep but not among the experiment's cells: "
                                      f"{', '.join(extra)}."))
    finished = sum(run.row.status == "finished" for _, run in runs)
    if runs and finished == len(runs) and not missing:
        out.append(Sentence("Status", "The run finished." if len(runs) == 1 else f"All {len(runs)} runs finished."))
    return [Sentence("Status", " ".join(s.text for s in out))] if out else []  # one topic, said once


def unfinished_text(name: str, run: RunData) -> str:
    progress = run.progress()
    if run.row.status == "running":
        return f"{name} is still running: {progress} stored."
    if run.row.status == "interrupted":
        return f"{name} was interrupted after {progress}; `sweeplab sweep` resumes it from its last checkpoint."
    return f"{name} failed at {progress}: {short(run.row.error or 'no error stored', 160)}."
