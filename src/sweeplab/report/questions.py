"""The experiment's questions (`questions:` in its file), answered from finished runs only.

Each answer is one to three sentences: the answer, its effect size, and with several seeds whether it
exceeds the seed-to-seed spread (mean ± std, n; differences paired by seed and grid point where both rows
have them). Rows without a finished value are named with the reason, never ranked: a running, interrupted,
failed or diverged run has no final number to compare.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sweeplab.experiment import Question, format_value
from sweeplab.report.collect import CellData
from sweeplab.report.spec import Column, ReportSpec, cell_key, measured
from sweeplab.report.values import (
    CellValue,
    cell_value,
    direction,
    fmt,
    fmt_count,
    fmt_value,
    is_count,
    label_value,
    label_without,
    readable,
    shown,
    status_reason,
)


@dataclass(frozen=True)
class Answer:
    ask: str
    text: str  # one to three sentences
    answered: bool  # False: no finished runs to answer from (text says which and why)

    @property
    def headline(self) -> str:
        """The first sentence, the answer itself, for the summary at the top; a caveat that the gap is within the
        seeds' spread travels with it (the answer without it would claim more than the runs show)."""
        first = self.text.split(". ")[0].rstrip(".") + "."
        caveat = " The gap is not larger than the seed-to-seed spread."
        return first + caveat if "is not larger than the seed-to-seed spread" in self.text else first


@dataclass(frozen=True)
class Measure:
    """What a question reads: the metric, how a run's series becomes one number, and its column title."""

    metric: str
    aggregate: str
    title: str
    threshold: float | None

    @property
    def sign(self) -> int:
        return direction(self.metric)

    def value(self, cell: CellData) -> CellValue:
        return cell_value(finished(cell), self.metric, self.aggregate, None, 1, self.threshold)


def finished(cell: CellData) -> CellData:
    return CellData(cell.label, [run for run in cell.runs if run.done], cell.expected, cell.extra)


def answer_questions(spec: ReportSpec, cells: list[CellData], columns: list[Column]) -> list[Answer]:
    return [answer(q, spec, cells, measure_for(q, columns, spec)) for q in spec.questions]


def measure_for(question: Question, columns: list[Column], spec: ReportSpec) -> Measure:
    column = next((c for c in columns if c.metric == question.metric), None) if question.metric else \
        next((c for c in columns if direction(c.metric)), columns[0] if columns else None)
    metric = question.metric or (column.metric if column else "valid/loss")
    aggregate = question.aggregate or (column.aggregate if column else "final")
    return Measure(metric, aggregate, column.title if column else readable(metric), spec.convergence_threshold)


def answer(question: Question, spec: ReportSpec, cells: list[CellData], measure: Measure) -> Answer:
    if not measured(spec, measure.metric):
        titles = {c.metric: c.title for c in spec.columns}  # what it measures, as the tables title it
        what = ", ".join(titles.get(m, readable(m)) for m in spec.scales_measures[spec.scale or ""]) or "nothing"
        return Answer(question.ask, f"Not answered at scale {spec.scale}, which measures {what}, not "
                                    f"{measure.title}: the answer waits for a scale that does.", False)
    if not measure.sign and not question.versus:  # ranking a metric with no declared direction would be a guess
        return Answer(question.ask, f"Not ranked: which way {measure.title} ({measure.metric}) is better is not "
                                    "declared (by the task, or by `better: higher` or `lower` in its column).", False)
    if question.versus:
        return _versus(question, cells, measure)
    rows = {row: row_cells(row, cells, question) for row in question.rows()}
    if question.series:
        return _series(question, rows, measure)
    return _pair(question, rows, measure) if question.pair else _compare(question, rows, measure)


# --------------------------------------------------------------------------------------- series
def _series(question: Question, rows: dict[str, dict[str, CellData]], measure: Measure) -> Answer:
    """The rows in their order at each grid point: the shape (rises, falls, peaks, dips), the best and the worst.
    One grid point: its numbers. Several: the shape most points share in one sentence, the others named."""
    points = list(dict.fromkeys(p for cells in rows.values() for p in cells)) or [""]
    missing, series = [], {}
    for point in points:
        values = [(row, measure.value(cells[point]) if point in cells else None) for row, cells in rows.items()]
        absent = [row for row, cv in values if cv is None or not cv.has_value]
        if absent:
            missing += [f"{_name(row, point)} ({why_missing(rows[row].get(point), measure)})" for row in absent]
        else:
            series[point] = values
    if not series:
        return Answer(question.ask, f"Not answered yet: no grid point has a finished {measure.title} for every row "
                                    f"of the series.{_missing_text(missing)}", False)
    shapes = {point: series_shape(values, measure.sign) for point, values in series.items()}
    if len(series) == 1:
        (point, values), = series.items()
        return Answer(question.ask, _series_text(values, shapes[point], measure, point) + _missing_text(missing), True)
    first, last = question.series[0], question.series[-1]
    text = f"{measure.title} from {first} to {last}: " + _shared_text(shapes, "grid points", "at")
    return Answer(question.ask, text + " The numbers are in the table." + _missing_text(missing), True)


def series_shape(values: list[tuple[str, CellValue]], sign: int) -> str:
    """How a series of three or more goes, at the digits the report shows and beyond the seeds' spread: rises,
    falls, peaks at ROW, dips at ROW, goes up and down, or stays level. A step within the shown digits or the two
    stds is level."""
    steps = [_step(a, b) for (_, a), (_, b) in zip(values, values[1:], strict=False)]
    moves = [s for s in steps if s]
    if not moves:
        return "stays level (no step beyond the shown digits or the seeds' spread)"
    if len(moves) == 1 < len(steps):  # level but for one step: said where
        at = values[steps.index(moves[0]) + 1][0]
        return f"{'rises' if moves[0] > 0 else 'falls'} only at {at}, level elsewhere"
    if all(s > 0 for s in moves):
        return "rises"
    if all(s < 0 for s in moves):
        return "falls"
    turns = [i for i in range(1, len(moves)) if moves[i] != moves[i - 1]]
    if len(turns) == 1:
        turn = _turn_index(steps)
        top = [values[turn][0]]
        while turn < len(steps) and steps[turn] == 0:  # a plateau: every row of it
            turn += 1
            top.append(values[turn][0])
        return f"{'peaks' if moves[0] > 0 else 'dips'} at {and_list(top)}"
    return "goes up and down"


def _step(a: CellValue, b: CellValue) -> int:
    """+1 up, -1 down, 0 level: equal as shown, or a difference within the two seeds' stds."""
    if shown(a.mean) == shown(b.mean) or abs(b.mean - a.mean) <= (a.std or 0.0) + (b.std or 0.0):
        return 0
    return 1 if b.mean > a.mean else -1


def _turn_index(steps: list[int]) -> int:
    """The row where the direction changes: after the last step of the first direction."""
    first = next(s for s in steps if s)
    last_of_first = max(i for i, s in enumerate(steps) if s == first and all(t in (0, first) for t in steps[:i]))
    return last_of_first + 1


def _series_text(values: list[tuple[str, CellValue]], shape: str, measure: Measure, point: str) -> str:
    where = f" at {point}" if point else ""
    numbers = ", ".join(f"{row} {_v(cv)}" for row, cv in values)
    ranked = sorted(values, key=lambda rv: -measure.sign * rv[1].mean)
    (best, b), (worst, w) = ranked[0], ranked[-1]
    most, _ = _better(measure)
    text = f"{measure.title}{where} {shape}: {numbers}."
    # no winner within the noise, nor one that did not learn
    if level_with_first(ranked) == [best] and not shape.startswith("stays level") and not b.unlearned:
        text += f" The {most} is {best} ({_v(b)}), the {'lowest' if most == 'highest' else 'highest'} {worst} ({_v(w)})."
    return text


# ------------------------------------------------------------------------------------ row cells
def row_cells(row: str, cells: list[CellData], question: Question) -> dict[str, CellData]:
    """{grid point: cell} of a row: the cell labelled `row`, or the variant `row` at every grid point
    (only those matching `at`)."""
    wanted = {f"{k}={format_value(v)}" for k, v in question.at.items()}
    out = {}
    for cell in cells:
        name, _, point = cell.label.partition(",")
        if cell.label != row and name != row:
            continue
        point = point if name == row else ""
        if set(cell_key(",".join(wanted))) <= set(cell_key(cell.label)) or not wanted:
            out[point] = cell
    return out


def why_missing(cell: CellData | None, measure: Measure) -> str:
    if cell is None or not cell.runs:
        return "not run" if cell is None else cell.extra.get("not_run", "not run")
    if not any(run.done for run in cell.runs):
        return "; ".join(dict.fromkeys(status_reason(run) for run in cell.runs))
    return "; ".join(measure.value(cell).reasons) or "no value"


def _name(row: str, point: str) -> str:
    return f"{row} at {point}" if point else row


def _missing_text(missing: list[str]) -> str:
    return f" Left out (no finished value): {'; '.join(missing)}." if missing else ""


# -------------------------------------------------------------------------------------- compare
def _compare(question: Question, rows: dict[str, dict[str, CellData]], measure: Measure) -> Answer:
    points = list(dict.fromkeys(p for cells in rows.values() for p in cells)) or [""]
    missing, unlearned, ranked_at = [], [], {}
    for point in points:
        ranked, valued = [], 0
        for row, cells in rows.items():
            cv = measure.value(cells[point]) if point in cells else None
            if cv is None or not cv.has_value:
                missing.append(f"{_name(row, point)} ({why_missing(cells.get(point), measure)})")
                continue
            valued += 1
            if cv.unlearned:  # no better than guessing: named, never ranked
                unlearned.append(f"{_name(row, point)} ({fmt_value(cv.mean)})")
            else:
                ranked.append((row, cv))
        if valued > 1 and ranked:
            ranked_at[point] = sorted(ranked, key=lambda rv: -measure.sign * rv[1].mean)
    if not ranked_at:
        return Answer(question.ask, f"Not answered yet: fewer than two of the rows have a finished "
                                    f"{measure.title}, or none learned.{_unlearned_text(unlearned)}"
                                    f"{_missing_text(missing)}", False)
    if len(ranked_at) == 1:
        (point, ranked), = ranked_at.items()
        text = _ranking_text(ranked, measure, point)
    else:
        text = _ranking_over_points(ranked_at, measure)
    return Answer(question.ask, text + _unlearned_text(unlearned) + _missing_text(missing), True)


def _unlearned_text(unlearned: list[str]) -> str:
    return f" Did not learn (no better than guessing): {'; '.join(unlearned)}." if unlearned else ""


def _better(measure: Measure) -> tuple[str, str]:
    return ("highest", "higher") if measure.sign >= 0 else ("lowest", "lower")


def _ranking_text(ranked: list[tuple[str, CellValue]], measure: Measure, point: str) -> str:
    most, more = _better(measure)
    where = f" at {point}" if point else ""
    if len(ranked) == 1:
        return f"Only {ranked[0][0]} learned{where}: {measure.title} {_v(ranked[0][1])}."
    (best, b), (runner, r) = ranked[0], ranked[1]
    top = level_with_first(ranked)
    if len(top) > 1:
        return f"{and_list(top)} tie for the {most} {measure.title}{where}: {_v(b)}."
    text = (f"{best} has the {most} {measure.title}{where}: {_v(b)}, {gap_text(b, r)} {more} than the runner-up "
            f"{runner} ({_v(r)})")
    if len(ranked) > 2:
        worst, w = ranked[-1]
        text += f"; {worst} is last ({_v(w)})"
    return text + "." + spread_text(b, r)


def _ranking_over_points(ranked_at: dict[str, list[tuple[str, CellValue]]], measure: Measure) -> str:
    most, more = _better(measure)
    wins: dict[str, list[str]] = {}
    details = []
    for point, ranked in ranked_at.items():
        if len(ranked) == 1:
            wins.setdefault(ranked[0][0], []).append(point)
            details.append(f"{point}: only {ranked[0][0]} learned ({_v(ranked[0][1])})")
            continue
        top = level_with_first(ranked)
        if len(top) > 1:  # a tie wins for nobody
            details.append(f"{point}: {and_list(top)} tie at {_v(ranked[0][1])}")
            continue
        wins.setdefault(top[0], []).append(point)
        (best, b), (runner, r) = ranked[0], ranked[1]
        details.append(f"{point}: {best} {_v(b)} against {runner} {_v(r)} ({gap_text(b, r)} {more})")
    if not wins:
        head = f"No row has the {most} {measure.title} alone at any of the {len(ranked_at)} grid points"
    else:
        leader, won = max(wins.items(), key=lambda kv: len(kv[1]))
        head = f"{leader} alone has the {most} {measure.title} at {len(won)} of {len(ranked_at)} grid points"
        others = [f"{row} at {', '.join(points)}" for row, points in wins.items() if row != leader]
        head += f" ({'; '.join(others)})" if others else ""
    return head + ". " + "; ".join(details) + "."


def level_with_first(ranked: list[tuple[str, CellValue]]) -> list[str]:
    """The rows level with the first: equal as the report shows them."""
    first = shown(ranked[0][1].mean)
    return [row for row, cv in ranked if shown(cv.mean) == first]


def and_list(names: list[str]) -> str:
    """`A, B and C`; names with commas of their own (`RNN, 3 layers`) are set apart by semicolons."""
    return name_list(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def name_list(names: list[str]) -> str:
    return ("; " if any("," in name for name in names) else ", ").join(names)


def _v(cv: CellValue) -> str:
    """A cell's value in a sentence, at the precision of its kind (a step is `600`, an accuracy `0.9500`): with its
    spread over seeds, and marked when it did not learn."""
    mean = fmt_count(cv.mean) if cv.count else fmt_value(cv.mean)
    text = mean if cv.std is None else f"{mean} ± {fmt(cv.std, like=cv.mean)} (n={cv.n})"
    return text + (" (did not learn)" if cv.unlearned else "")


def gap_text(a: CellValue, b: CellValue) -> str:
    """|a - b| in the digits of the numbers it separates, and relative to b."""
    gap = abs(a.mean - b.mean)
    relative = f" ({gap / abs(b.mean):.1%})" if b.mean else ""
    return f"{fmt(gap, like=b.mean)}{relative}"


def spread_text(a: CellValue, b: CellValue) -> str:
    """With several seeds on both sides: is the gap larger than the two standard deviations together?"""
    if a.std is None or b.std is None:
        return ""
    gap, spread = abs(a.mean - b.mean), a.std + b.std
    size = "larger" if gap > spread else "not larger"
    return (f" The gap is {size} than the seed-to-seed spread (std {fmt(a.std, like=a.mean)} + "
            f"{fmt(b.std, like=b.mean)}).")


# ----------------------------------------------------------------------------------------- pair
def _pair(question: Question, rows: dict[str, dict[str, CellData]], measure: Measure) -> Answer:
    (a, a_cells), (b, b_cells) = rows.items()
    points = list(dict.fromkeys([*a_cells, *b_cells])) or [""]
    missing, matched = [], []  # matched: (point, value of a, value of b) per seed both finished
    for point in points:
        got = {row: cells.get(point) for row, cells in ((a, a_cells), (b, b_cells))}
        values = {row: _seed_values(cell, measure) for row, cell in got.items()}
        for row, cell in got.items():
            if not values[row]:
                missing.append(f"{_name(row, point)} ({why_missing(cell, measure)})")
        matched += [(point, values[a][s], values[b][s]) for s in values[a] if s in values[b]]
    if not matched:
        return Answer(question.ask, f"Not answered yet: no grid point or seed where both {a} and {b} have a "
                                    f"finished {measure.title}.{_missing_text(missing)}", False)
    return Answer(question.ask, _pair_text(a, b, matched, measure) + _missing_text(missing), True)


def _seed_values(cell: CellData | None, measure: Measure) -> dict[str, float]:
    """{seed: value} of a cell's finished runs."""
    if cell is None:
        return {}
    out = {}
    for run in finished(cell).runs:
        cv = cell_value(CellData(cell.label, [run]), measure.metric, measure.aggregate, None, 1, measure.threshold)
        if cv.has_value:
            out[repr(run.seed)] = cv.mean
    return out


def _pair_text(a: str, b: str, matched: list[tuple[str, float, float]], measure: Measure) -> str:
    diffs = [x - y for _, x, y in matched]
    mean_a, mean_b = statistics.fmean(x for _, x, _ in matched), statistics.fmean(y for _, _, y in matched)
    diff = statistics.fmean(diffs)
    lower = "lower" if diff < 0 else "higher"
    number = fmt_count if is_count(measure.metric, [v for _, x, y in matched for v in (x, y)]) else fmt_value
    points = len({p for p, _, _ in matched})
    if all(shown(x) == shown(y) for _, x, y in matched):  # the same everywhere, as shown: said where, not averaged
        if len(matched) == 1:
            return f"{a} and {b} have the same {measure.title}: {number(mean_a)}."
        where = ", ".join(f"{p or 'seed'} {number(x)}" for p, x, _ in matched) if points == len(matched) else ""
        return (f"{a} and {b} have the same {measure.title} at every one of the {len(matched)} matched "
                + ("seeds" if points == 1 else "grid points and seeds") + (f": {where}." if where else "."))
    relative = f" ({abs(diff) / abs(mean_b):.1%})" if mean_b else ""
    if len(matched) == 1:
        return (f"{a} has a {lower} {measure.title} than {b}: {number(mean_a)} against {number(mean_b)}, "
                f"a difference of {number(abs(diff)) if number is fmt_count else fmt(abs(diff), like=mean_b)}"
                f"{relative}.")
    over = f"{len(matched)} matched " + ("seeds" if points == 1 else "grid points and seeds")
    same_side = sum((d < 0) == (diff < 0) and d != 0 for d in diffs)
    std = statistics.stdev(diffs)
    text = (f"{a} has a {lower} {measure.title} than {b} in {same_side} of {len(matched)} {over.split(' ', 1)[1]} "
            f"(on average {number(mean_a)} against {number(mean_b)}, {fmt(abs(diff), like=mean_b)}"
            f"{relative} {lower}).")
    size = "larger" if abs(diff) > std else "not larger"
    return text + (f" The mean paired difference, {fmt(diff, like=mean_b)} ± {fmt(std, like=mean_b)} over {over}, is "
                   f"{size} than its spread.")


# --------------------------------------------------------------------------------------- versus
def _versus(question: Question, cells: list[CellData], measure: Measure) -> Answer:
    """How the metric goes along an axis, a line per value of the other settings: one line, with its numbers;
    several, what most lines do in one sentence and the others named (their numbers are in the table)."""
    key = question.versus
    lines: dict[str, dict[str, CellValue]] = {}
    missing = []
    wanted = set(cell_key(",".join(f"{k}={format_value(v)}" for k, v in question.at.items()))) if question.at \
        else set()
    for cell in cells:
        x = label_value(cell.label, key)
        if x is None or not wanted <= set(cell_key(cell.label)):
            continue
        cv = measure.value(cell)
        if cv.has_value:
            lines.setdefault(label_without(cell.label, key), {})[x] = cv
        else:
            missing.append(f"{cell.label} ({why_missing(cell, measure)})")
    lines = {line: xs for line, xs in lines.items() if len(xs) > 1}
    if not lines:
        return Answer(question.ask, f"Not answered yet: fewer than two values of {key} have a finished "
                                    f"{measure.title}.{_missing_text(missing)}", False)
    verdicts = {line: _line_verdict(xs, key, measure, question.reach) for line, xs in lines.items()}
    if len(lines) == 1:
        (line, xs), = lines.items()
        numbers = ", ".join(f"{_v(xs[x])} at {key}={x}" for x in _sorted_xs(xs))
        text = f"{f'{line}: ' if line else ''}{measure.title} {verdicts[line]} ({numbers})."
    else:
        text = f"{measure.title} along {key}: " + _shared_text(verdicts, "lines") + " The numbers are in the table."
    return Answer(question.ask, text + _missing_text(missing), True)


def _shared_text(verdicts: dict[str, str], what: str, prep: str = "for") -> str:
    """What most share, said once, and the others named: `for 7 of 9 lines (A, B, ...) it falls; for C it ...`."""
    by_verdict: dict[str, list[str]] = {}
    for name, verdict in verdicts.items():
        by_verdict.setdefault(verdict, []).append(name)
    (common, names), *others = sorted(by_verdict.items(), key=lambda kv: -len(kv[1]))
    if not others:
        return f"{prep} every one of the {len(verdicts)} {what} it {common}."
    if len(names) == 1:  # nothing shared: each said
        return "; ".join(f"{prep} {and_list(where)} it {verdict}" for verdict, where in by_verdict.items()) + "."
    head = f"{prep} {len(names)} of {len(verdicts)} {what} ({name_list(names)}) it {common}"
    return head + "".join(f"; {prep} {and_list(where)} it {verdict}" for verdict, where in others) + "."


def _sorted_xs(xs: dict[str, CellValue]) -> list[str]:
    try:
        return sorted(xs, key=float)
    except ValueError:
        return list(xs)


def _line_verdict(xs: dict[str, CellValue], key: str, measure: Measure, reach: float | None) -> str:
    """How one line goes along the axis, without its numbers: a trend needs three points or more (two are
    compared), and a step within the shown digits or the seeds' spread is level."""
    order = _sorted_xs(xs)
    if reach is not None:
        return _reach_verdict(order, [xs[x] for x in order], key, measure, reach)
    values = [(f"{key}={x}", xs[x]) for x in order]
    if len(values) > 2:
        return series_shape(values, measure.sign)
    (a_name, a), (b_name, b) = values
    if _step(a, b) == 0:
        return "is level (no step beyond the shown digits or the seeds' spread)"
    return f"is {'higher' if b.mean > a.mean else 'lower'} at {b_name} than at {a_name}"


def _reach_verdict(order: list[str], values: list[CellValue], key: str, measure: Measure, reach: float) -> str:
    """Where the metric reaches `reach` (at or above for accuracies, at or below for losses), at the shown digits."""
    ok = [(shown(cv.mean) >= reach) if measure.sign >= 0 else (shown(cv.mean) <= reach) for cv in values]
    level = f"{'≥' if measure.sign >= 0 else '≤'} {reach:g}"
    if all(ok):
        return f"is {level} at every {key} up to {order[-1]}"
    if not any(ok):
        return f"is {level} at no {key}"
    first_fail = ok.index(False)
    if all(ok[:first_fail]) and not any(ok[first_fail:]):
        return f"is {level} up to {key}={order[first_fail - 1]}, not from {key}={order[first_fail]} on"
    reached = [x for x, good in zip(order, ok, strict=True) if good]
    return f"is {level} only at {key}={', '.join(reached)}"
