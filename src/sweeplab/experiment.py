"""Experiment files (experiments/*.yaml): a task, base overrides, named rows and/or a grid, seeds,
the table's columns, the figures and the scales (quick, full).

`load_experiment(path)` validates the file and then resolves every cell of every scale with
`sweeplab.config.resolve`, so a bad file fails before anything runs: one line naming the file and
the key (exit 2). The contract with the report is /tmp/experiment_contract.md (kept in the repo as
the docstrings below).
"""
from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sweeplab.config import MAX_SEED
from sweeplab.config import _Loader as _ConfigLoader
from sweeplab.errors import UserError, brief
from sweeplab.limits import CELLS, EXPERIMENT_BYTES, SEEDS, YAML_VALUES
from sweeplab.tasks import plugins

Aggregate = Literal["final", "best", "min", "max", "mean", "at-epoch"]
FIRST_SEED = 1111  # `seeds: n` -> 1111, 1112, ...: seed 1111 is every run's default, so `seeds: 1` is the plain run
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_METRIC = re.compile(r"^[A-Za-z0-9_@.-]+(/[A-Za-z0-9_@.-]+)?$")


def _scalar(value: Any) -> Any:
    """Override values are single values, as on the command line (`KEY=VALUE`)."""
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"expected a single value (number, string, true/false), got {brief(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")  # no setting takes one; JSON stores none
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metric(value: str) -> str:
    if not _METRIC.match(value):
        raise ValueError(f"{brief(value)} is not a metric: split/name (e.g. valid/ppl) or a summary key (e.g. params)")
    return value


Scalar = Annotated[Any, AfterValidator(_scalar)]
Layer = dict[str, Scalar]  # dotted keys, as `sweeplab run` takes them
MetricName = Annotated[str, AfterValidator(_metric)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # the spec is stored as JSON


class Column(Spec):
    title: str = Field(description="column header")
    metric: MetricName = Field(description="split/name of a metric series, or a summary key such as params")
    aggregate: Aggregate = Field("final", description="how a run's series becomes one number; best: the best by "
                                                      "the metric's declared direction")
    epoch: int | None = Field(None, ge=1, description="the epoch an at-epoch column reads")
    better: Literal["higher", "lower"] | None = Field(None, description="which way the metric is better, for a metric "
                                                     "its task does not declare (a training function's); without "
                                                     "either it is shown, never ranked")

    @model_validator(mode="after")
    def _epoch_with_at_epoch(self) -> Column:
        if self.aggregate == "at-epoch" and self.epoch is None:
            raise ValueError("aggregate at-epoch needs `epoch: N`")
        if self.aggregate != "at-epoch" and self.epoch is not None:
            raise ValueError(f"`epoch` is read only by aggregate at-epoch (this column's is {self.aggregate})")
        return self


FIGURE_FIELDS = {"curves": {"metrics"}, "versus": {"x", "metric"}, "text": set(), "attention": set(), "boundary": set()}


class Figure(Spec):
    kind: Literal["curves", "versus", "text", "attention", "boundary"] = Field(description="what the report draws")
    title: str | None = Field(None, description="caption")
    metrics: list[MetricName] = Field([], description="curves: one panel per metric, one line per run")
    x: str | None = Field(None, description="versus: the config key on the x axis, e.g. data.length")
    metric: MetricName | None = Field(None, description="versus: the metric on the y axis")
    aggregate: Aggregate = Field("final", description="versus: how a run's series becomes one point")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Figure:
        needed = FIGURE_FIELDS[self.kind]
        given = {f for f in ("metrics", "x", "metric") if getattr(self, f)}
        if needed - given:
            raise ValueError(f"a {self.kind} figure needs " + " and ".join(f"`{f}`" for f in sorted(needed - given)))
        if given - needed:
            raise ValueError(f"a {self.kind} figure takes no " + ", ".join(f"`{f}`" for f in sorted(given - needed)))
        return self


class AxisLabel(Spec):
    """How an axis is called where people read it: `{title: digits, value: "{} digits"}` heads its column
    "digits" and shows 9 as "9 digits"; `value` may instead map each value to its words."""

    title: str = Field("", description="the axis's name in tables, figures and sentences (default: the key's last part)")
    value: str | dict[str, str] = Field("", description="a format with {} for the value, or value -> words")

    @field_validator("value")
    @classmethod
    def _one_slot(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(value, str) and value and value.count("{}") != 1:
            raise ValueError(f"{brief(value)} needs exactly one {{}} where the value goes, e.g. '{{}} digits'")
        return value


class Scale(Spec):
    note: str = Field("", description="what this scale changes, shown with every run (e.g. '1 epoch, 20k tokens')")
    overrides: Layer = Field({}, description="dotted keys applied on top of base, variants and axes")
    measures: list[str] | None = Field(None, description="the metrics this scale measures (e.g. [params] for a "
                                       "shape check): no question on another is answered, no reference subtracted "
                                       "from it; default: every metric")


class Reference(Spec):
    """A number a named source reports for one cell of the table: ours is shown beside it."""

    row: str = Field(description="a row label (cell_labels()) or a variant name, which names all its grid points")
    column: str = Field(description="a column title or a column's metric key")
    value: float | None = Field(description="the source's number; null where the source leaves the cell empty")
    source: str = Field(min_length=1, description="where the number comes from, in words")
    note: str = Field("", description="what the reader should know about this number")
    settings: str = Field("", description="where the source measured at other settings than the cell's (e.g. 'an "
                                          "Nvidia 1080', 'lr 1e-2'): said with the number, never subtracted from ours")


class Analysis(Spec):
    convergence_threshold: float | None = Field(None, description="accuracy at which a run counts as converged")


class Question(Spec):
    """What the experiment asks, answered by the report from finished runs (exactly one of compare, pair, series,
    versus)."""

    ask: str = Field(description="the question, as the course report asks it")
    compare: list[str] = Field([], description="rows (variant names or cell labels) ranked on `metric`")
    pair: list[str] = Field([], description="two rows: the first against the second, matched by seed and grid point")
    series: list[str] = Field([], description="three or more rows in the order that makes them a series (1, 2, 3, "
                                              "4 layers; lr 1e-4 ... 1e-1): the answer gives its shape")
    versus: str | None = Field(None, description="an axis key: how `metric` changes along it")
    metric: MetricName | None = Field(None, description="the metric; default: the table's first column")
    aggregate: Aggregate | None = Field(None, description="default: the aggregate of the column with this metric")
    at: Layer = Field({}, description="only the grid points with these axis values, e.g. {data.max_digits: 20}")
    reach: float | None = Field(None, description="versus: the level that counts as solved (e.g. accuracy 0.99)")

    @model_validator(mode="after")
    def _one_kind(self) -> Question:
        kinds = [k for k in ("compare", "pair", "series", "versus") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a question takes exactly one of `compare: [rows]`, `pair: [a, b]`, `series: [rows]` "
                             "or `versus: KEY`")
        if self.series and len(self.series) < 3:
            raise ValueError("`series` names three or more rows, in order (two are a `pair`)")
        if self.pair and len(self.pair) != 2:
            raise ValueError(f"`pair` names two rows, got {len(self.pair)}")
        if self.compare and len(self.compare) < 2:
            raise ValueError("`compare` names two or more rows")
        if self.reach is not None and not self.versus:
            raise ValueError("`reach` is read only by a `versus` question")
        return self

    def rows(self) -> list[str]:
        return list(self.compare or self.pair or self.series)


class Experiment(Spec):
    name: str = Field(description="sweep name: runs are stored with runs.sweep = name")
    title: str = Field("", description="table caption")
    task: str = Field(description="the task every run trains: a built-in, or your own training function, "
                                   "FILE.py:FUNCTION (relative to this file) or module:function")
    base: Layer = Field({}, description="overrides for every run")
    variants: dict[str, Layer] = Field({}, description="named rows, in table order")
    axes: dict[str, list[Scalar]] = Field({}, description="a grid: the cross product of these values")
    seeds: Any = Field(1, description="n (seeds 1111, 1112, ...) or an explicit list")
    columns: list[Column] = Field(min_length=1, description="the table; the row label column is implicit")
    figures: list[Figure] = Field([], description="what the report draws")
    scales: dict[str, Scale] = Field({}, description="quick (minutes on a 2-core CPU) and full (the real thing)")
    analysis: Analysis = Field(Analysis(), description="settings of the report's computed analysis")
    questions: list[Question] = Field([], description="what the experiment asks; the first is its main question")
    references: list[Reference] = Field([], description="numbers a named source reports for a row and column")
    plugins: list[str] = Field([], description="your own files or modules that register components, "
                                               "paths relative to this file")
    labels: dict[str, Any] = Field({}, description="words people read: a variant's name -> its label "
                                                  "(e.g. 'RNN, 3 layers'), an axis key -> {title, value} (AxisLabel)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{brief(value)} may hold only letters, digits, '_', '.' and '-'")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: Any, info: ValidationInfo) -> Any:
        count = _is_int(value) and value >= 1
        listed = (isinstance(value, list) and value and all(_is_int(s) for s in value)
                  and len(set(value)) == len(value))
        if not count and not listed:
            raise ValueError(f"expected a count n >= 1 or a list of distinct integers, got {brief(value)}")
        SEEDS.check(value if count else len(value), (info.context or {}).get("max_seeds"))
        for seed in [FIRST_SEED + value - 1] if count else value:
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(f"{seed} is out of range; accepted: integers from 0 to {MAX_SEED:,}")
        return value

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Layer]) -> dict[str, Layer]:
        for name in value:
            if not name or "," in name or "=" in name:
                raise ValueError(f"variant name {name!r} may not be empty or hold ',' or '=' (they separate labels)")
        return value

    @field_validator("axes")
    @classmethod
    def _axis_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
            if len({format_value(v) for v in values}) != len(values):
                raise ValueError(f"axis {key!r} repeats a value: {brief(values)}")
        return value

    @model_validator(mode="after")
    def _cells_within_cap(self, info: ValidationInfo) -> Experiment:
        """Counted from the lengths of the axes, before any cell is listed: a grid of 10^12 cells is refused,
        never built (the validators below list the cells)."""
        CELLS.check(self.cell_count(), (info.context or {}).get("max_cells"), " (rows x grid points x seeds)")
        return self

    @model_validator(mode="after")
    def _rows_and_seed(self) -> Experiment:
        if not self.variants and not self.axes:
            raise ValueError("needs `variants:` (named rows) or `axes:` (a grid), or both")
        layers = [("base", self.base), *((f"variants.{n}", v) for n, v in self.variants.items()),
                  ("axes", self.axes), *((f"scales.{n}.overrides", s.overrides) for n, s in self.scales.items())]
        for where, layer in layers:
            if "seed" in layer:
                raise ValueError(f"{where}: `seed` is set by `seeds:` (n or a list)")
        return self

    @model_validator(mode="after")
    def _question_rows(self) -> Experiment:
        """A question names rows and axes that exist: a typo would leave it unanswerable forever."""
        labels = set(self.cell_labels()) | set(self.variants)
        for i, question in enumerate(self.questions):
            unknown = [row for row in question.rows() if row not in labels]
            unknown += [key for key in [*question.at, *([question.versus] if question.versus else [])]
                        if key not in self.axes]
            if unknown:
                accepted = ", ".join([*self.variants, *self.axes] or self.cell_labels())
                raise ValueError(f"questions[{i}]: {', '.join(map(repr, unknown))} is not a row or axis of this "
                                 f"experiment; accepted: {accepted}")
        return self

    @model_validator(mode="after")
    def _labels_name_rows_and_axes(self) -> Experiment:
        for key, label in self.labels.items():
            is_axis = key in self.axes
            if key not in self.variants and not is_axis:
                accepted = ", ".join([*self.variants, *self.axes]) or "(no variants or axes)"
                raise ValueError(f"labels: {key!r} is not a variant or an axis; accepted: {accepted}")
            if is_axis != isinstance(label, dict) or (not is_axis and not isinstance(label, str)):
                want = "{title: ..., value: '{} ...'}" if is_axis else "a string"
                raise ValueError(f"labels.{key}: {'an axis' if is_axis else 'a variant'} takes {want}")
            if is_axis:
                try:
                    AxisLabel.model_validate(label)
                except ValidationError as exc:
                    raise ValueError(f"labels.{key}: {explain(exc)}") from None
        return self

    def axis_labels(self) -> dict[str, AxisLabel]:
        return {key: AxisLabel.model_validate(label) for key, label in self.labels.items() if key in self.axes}

    @model_validator(mode="after")
    def _references_name_cells(self) -> Experiment:
        rows = [*self.variants, *(label for label in self.cell_labels() if label not in self.variants)]
        columns = list(dict.fromkeys([*(c.title for c in self.columns), *(c.metric for c in self.columns)]))
        seen = set()
        for i, ref in enumerate(self.references):
            if ref.row not in rows:
                raise ValueError(f"references[{i}].row: {ref.row!r} is not a row; accepted: {', '.join(rows)}")
            if ref.column not in columns:
                raise ValueError(f"references[{i}].column: {ref.column!r} is not a column; accepted: "
                                 + ", ".join(columns))
            if (ref.row, self.column_of(ref).title, ref.source) in seen:
                raise ValueError(f"references[{i}]: a second number for row {ref.row!r}, column {ref.column!r} "
                                 f"from the same source")
            seen.add((ref.row, self.column_of(ref).title, ref.source))
        return self

    # -- what the report reads ------------------------------------------------------------------
    def column_of(self, ref: Reference) -> Column:
        """The column a reference names, by title first, else by metric."""
        return next((c for c in self.columns if c.title == ref.column), None) or next(
            c for c in self.columns if c.metric == ref.column)

    def references_for(self, label: str, column: Column) -> list[Reference]:
        """The references of one table cell: those naming its label, or its variant, and this column."""
        variant = label.split(",", 1)[0] if self.variants else None
        return [r for r in self.references
                if r.row in (label, variant) and self.column_of(r) == column]

    # -- what a sweep needs ---------------------------------------------------------------------
    def cell_count(self) -> int:
        """len(rows()) x seeds, computed without listing them."""
        seeds = len(self.seeds) if isinstance(self.seeds, list) else self.seeds
        return max(len(self.variants), 1) * math.prod(len(values) for values in self.axes.values()) * seeds

    def seed_list(self) -> list[int]:
        return list(self.seeds) if isinstance(self.seeds, list) else [FIRST_SEED + i for i in range(self.seeds)]

    def cell_labels(self) -> list[str]:
        """Row labels in table order (the report reads them through this method)."""
        return [label for label, _ in self.rows()]

    def rows(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(label, layers) per cell: the variant's overrides, then the grid point's.

        Label: the variant name; `key=value,key=value` for a grid point; `NAME,key=value` for both."""
        points = grid_points(self.axes)
        if not self.variants:
            return [(point_label(p), [p]) for p in points]
        if not points:
            return [(name, [layer]) for name, layer in self.variants.items()]
        return [(f"{name},{point_label(p)}", [layer, p]) for name, layer in self.variants.items() for p in points]


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}] if axes else []
    for key, values in axes.items():
        points = [{**p, key: v} for p in points for v in values]
    return points


def point_label(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in point.items())


def format_value(value: Any) -> str:
    """Values in labels as a user types them: true/false, null, numbers as Python prints them."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


# ------------------------------------------------------------------------------------- loading
def read_experiment(path: Path, max_cells: int | None = None, max_seeds: int | None = None) -> Experiment:
    """Read and validate an experiment file, its plugins loaded (sweeplab.sweep.expand.load_experiment also
    resolves every cell). Any problem: UserError naming file and key. `max_cells`, `max_seeds`: caps above the
    defaults (sweeplab.limits), from `sweeplab sweep`'s flags."""
    return with_plugins(parse_experiment(_read_mapping(path), path, max_cells, max_seeds), path.parent)


def with_plugins(experiment: Experiment, base: Path | None) -> Experiment:
    """Load the experiment's plugins (paths relative to its file) before any name is looked up, and keep them
    as absolute paths: a stored sweep, a worker and a report elsewhere in the tree find the same files."""
    import sweeplab.tasks  # noqa: F401 - the built-ins register first; what a plugin registers is then its own

    loaded = plugins.use(experiment.plugins, base)
    task, function = plugins.use_task(experiment.task, base)  # `train.py:main`: the function's task, by its name
    if not loaded and function is None:
        return experiment
    refs = [p.ref for p in loaded] + ([function.ref] if function else [])
    return experiment.model_copy(update={"plugins": refs, "task": task})


def experiment_from_spec(spec: dict[str, Any], where: str = "stored sweep") -> Experiment:
    """The experiment back from a stored sweep spec (which adds scale, plan and cells to its fields)."""
    fields = {k: v for k, v in spec.items() if k in Experiment.model_fields}
    return with_plugins(parse_experiment(fields, Path(where)), None)  # stored with absolute paths


def parse_experiment(data: dict[str, Any], path: Path, max_cells: int | None = None,
                     max_seeds: int | None = None) -> Experiment:
    data = {"name": path.stem, **data}
    try:
        return Experiment.model_validate(data, context={"max_cells": max_cells, "max_seeds": max_seeds})
    except ValidationError as exc:
        raise UserError(f"{path}: {explain(exc)}") from None


class _TooManyValues(Exception):
    pass


class _Loader(_ConfigLoader):
    """The config loader (1e-4 is a float), refusing a key written twice (YAML would keep the last silently) and
    a document whose aliases expand past the cap."""

    def construct_document(self, node: yaml.Node) -> Any:
        """Counted on the composed graph, where an aliased node is one shared node: an "alias bomb" (`&a [x, x]`,
        then `&b [*a, *a]`, ... nine levels deep) is refused before anything would copy, validate or print it."""
        limit = YAML_VALUES.value()
        if _expanded_count(node, limit) > limit:
            raise _TooManyValues(limit)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_count(root: yaml.Node, stop: int) -> int:
    """Values (scalars, lists, mappings) of the document with every alias expanded, counted up to stop + 1; an
    alias inside its own anchor expands forever. One visit per distinct node, however often it is aliased."""
    size: dict[int, int] = {}
    started: set[int] = set()  # visited, children not yet summed: the ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            size[id(node)] = min(stop + 1, 1 + sum(size[id(c)] for c in children))
            continue
        if id(node) in size:
            continue
        if id(node) in started:
            return stop + 1
        started.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)
    return size[id(root)]


def _read_text(path: Path) -> str:
    """The file's text. What is not a regular file is refused before a byte is read (a link to /dev/zero never
    ends, a FIFO waits for a writer), and no more than the cap + 1 bytes are ever read."""
    limit = EXPERIMENT_BYTES.value()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO returns at once
    except FileNotFoundError:
        raise UserError(f"{path}: no such experiment file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path}: not a regular file (a device, FIFO or folder); an experiment file is a "
                            "YAML file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UserError(f"{path}: the file is larger than the limit of {limit:,} bytes for an experiment file; "
                        + EXPERIMENT_BYTES.how_to_raise())
    return data.decode("utf8")


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the experiment file ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _TooManyValues as exc:
        raise UserError(f"{path}: the file holds more than the limit of {exc.args[0]:,} YAML values once its "
                        f"aliases (*name) are expanded; {YAML_VALUES.how_to_raise()}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # a value YAML matched but Python refuses: an int of 4,301 digits, a 13th month
        problem = str(exc).split(";")[0]  # Python's advice after the ";" (set_int_max_str_digits) is not the user's
        raise UserError(f"{path}: not valid YAML: {problem[:120]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: an experiment file is a YAML mapping (name, task, base, variants/axes, ...)")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise UserError(f"{path}: key {bad[0]!r} is not a name")
    return data


def explain(exc: ValidationError) -> str:
    """One line from pydantic's first error: where in the file, what is wrong, what is accepted."""
    err = exc.errors()[0]
    where = _location(err["loc"])
    kind, given = err["type"], brief(err.get("input"))  # never the whole value: aliases can make it huge
    prefix = f"{where}: " if where else ""
    if kind == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        accepted = ", ".join(parent.model_fields) if parent else ""
        return f"unknown key {where!r}" + (f"; accepted: {accepted}" if accepted else "")
    if kind == "missing":
        return f"missing key {where!r}"
    if kind == "literal_error":
        return f"{prefix}{given} is not accepted; accepted: {err['ctx']['expected']}"
    if kind in ("value_error", "assertion_error"):
        return f"{prefix}{err['ctx']['error']}"
    if kind.endswith("_type"):
        return f"{prefix}{err['msg'].lower().replace('input should be', 'expected')}, got {given}"
    if kind == "finite_number":
        return f"{prefix}expected a finite number, got {given}"
    return f"{prefix}{err['msg'].lower()}, got {given}"


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model a location points into (for the list of accepted keys)."""
    model: type[BaseModel] = Experiment
    dict_key = False  # the next part names an entry of a dict field (a scale, a variant), not a field
    for part in loc:
        if isinstance(part, int) or dict_key:
            dict_key = False
            continue
        field = model.model_fields.get(str(part))
        inner = _inner_model(field.annotation) if field else None
        if inner is None:
            return None
        dict_key = getattr(field.annotation, "__origin__", None) is dict
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found:
            return found
    return None
