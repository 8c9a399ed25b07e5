"""The figures of an experiment, one function per figure kind (a registry, as everywhere in sweeplab).

Figures are drawn with matplotlib's object API (no pyplot, so no global state and no GUI backend) and
kept as SVG text, which the HTML inlines and the Markdown links from figures/. Artifacts that runs wrote
themselves (attention maps, decision boundaries) are carried as files: the HTML embeds them as data-URI
images, which a browser renders without running anything inside them.
"""
from __future__ import annotations

import io
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from sweeplab.report.collect import CellData, Point, RunData
from sweeplab.report.spec import ReportSpec
from sweeplab.report.values import status_reason, versus_points
from sweeplab.sweep.experiment import Figure as FigureSpec

COLORS = matplotlib.colormaps["tab10"].colors + matplotlib.colormaps["Dark2"].colors
TEXT_FILE = "generated.txt"
ATTENTION_FILES = ("attention.svg", "attention.png")
BOUNDARY_FILES = ("boundary.svg", "boundary.png", "decision_boundary.svg", "decision_boundary.png")
MAX_TEXT_CHARS = 2000
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
# Text stays text in the SVG (searchable, small); sizes suit a figure a page wide.
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}


# ------------------------------------------------------------------------------------- blocks
@dataclass
class SvgBlock:
    """A figure drawn by the report."""

    name: str  # file stem under figures/
    caption: str
    svg: str  # <svg ...>...</svg>, without the XML prolog


@dataclass
class ImageBlock:
    """A figure a run wrote (attention map, decision boundary), copied as it is."""

    name: str
    caption: str
    data: bytes
    suffix: str  # .svg or .png


@dataclass
class TextBlock:
    caption: str
    samples: list[tuple[str, str]]  # (whose, text)


@dataclass
class NoteBlock:
    """Where a figure cannot be drawn: the reason, never an empty space."""

    caption: str
    note: str


Block = SvgBlock | ImageBlock | TextBlock | NoteBlock


@dataclass
class Context:
    spec: ReportSpec
    cells: list[CellData]
    names: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        """A unique file stem for the next figure of this experiment."""
        stem = f"{slug(self.spec.name)}-{len(self.names) + 1:02d}-{slug(what)}"
        self.names.append(stem)
        return stem


FIGURES: dict[str, Callable[[FigureSpec, Context], list[Block]]] = {}


def figure_kind(kind: str) -> Callable:
    def register(fn: Callable[[FigureSpec, Context], list[Block]]) -> Callable:
        if kind in FIGURES:
            raise ValueError(f"duplicate figure kind {kind!r}")
        FIGURES[kind] = fn
        return fn

    return register


def create_blocks(spec: ReportSpec, cells: list[CellData]) -> list[Block]:
    ctx = Context(spec, cells)
    default = default_curve_metrics(cells)  # an experiment that names no figures still gets its curves
    figures = spec.figures or ([FigureSpec(kind="curves", metrics=default)] if default else [])
    with matplotlib.rc_context(STYLE):
        return [block for fs in figures for block in FIGURES[fs.kind](fs, ctx)]


def default_curve_metrics(cells: list[CellData]) -> list[str]:
    keys = {k for cell in cells for run in cell.runs for k in run.series}
    return [k for k in ("train/loss", "valid/loss", "test/loss") if k in keys]


# ------------------------------------------------------------------------------------- curves
@figure_kind("curves")
def curves(fs: FigureSpec, ctx: Context) -> list[Block]:
    """One panel per metric, one line per cell; several seeds: their mean with a ±std band."""
    metrics = list(fs.metrics) or default_curve_metrics(ctx.cells)
    caption = fs.title or f"Curves of {', '.join(metrics) or 'the losses'} per configuration"
    drawn = [m for m in metrics if any(run.series.get(m) for cell in ctx.cells for run in cell.runs)]
    if not drawn:
        return [NoteBlock(caption, f"no run has recorded {', '.join(metrics) or 'any loss'} yet")]
    fig = Figure(figsize=(3.9 * len(drawn) + 2.6, 3.3), layout="constrained")
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    shown: dict[int, None] = {}
    diverged = False
    for ax, metric in zip(axes, drawn, strict=True):
        for i, cell in enumerate(ctx.cells):
            if _curve(ax, metric, cell, COLORS[i % len(COLORS)]):
                shown[i] = None
            diverged |= _mark_divergence(ax, metric, cell, COLORS[i % len(COLORS)])
        _finish_axes(ax, metric, _x_name(metric, ctx.cells))
    handles = [Line2D([], [], color=COLORS[i % len(COLORS)], label=mathtext_safe(ctx.cells[i].label)) for i in shown]
    if diverged:
        handles.append(Line2D([], [], color="black", marker="x", ls="none", label="diverged"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    missing = [m for m in metrics if m not in drawn]
    if missing:
        caption += f" (not recorded by any run: {', '.join(missing)})"
    return [SvgBlock(ctx.name("curves"), caption, svg_text(fig, ctx.names[-1]))]


def _curve(ax: Axes, metric: str, cell: CellData, color: tuple) -> bool:
    runs = [run for run in cell.runs if run.series.get(metric)]
    if not runs:
        return False
    by_step = _use_step(metric, runs)
    if len(runs) == 1:
        xs, ys = _xy(runs[0].series[metric], by_step)
        ax.plot(xs, ys, color=color, lw=1.4, marker="o" if len(xs) <= 25 else None, ms=3)
        return True
    xs, means, stds = _seed_band([run.series[metric] for run in runs], by_step)
    ax.plot(xs, means, color=color, lw=1.4, marker="o" if len(xs) <= 25 else None, ms=3)
    ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)], color=color, alpha=0.2, lw=0)
    return True


def _seed_band(series: list[list[Point]], by_step: bool) -> tuple[list[float], list[float], list[float]]:
    """Mean and std across seeds at every x where a seed has a finite value (std 0 where only one has)."""
    at: dict[float, list[float]] = {}
    for points in series:
        for x, y in zip(*_xy(points, by_step), strict=True):
            if math.isfinite(y):
                at.setdefault(x, []).append(y)
    xs = sorted(at)
    means = [statistics.fmean(at[x]) for x in xs]
    stds = [statistics.stdev(at[x]) if len(at[x]) > 1 else 0.0 for x in xs]
    return xs, means, stds


def _mark_divergence(ax: Axes, metric: str, cell: CellData, color: tuple) -> bool:
    """An × at the last finite point of a diverged run's training curve."""
    marked = False
    for run in cell.runs:
        points = run.series.get(metric)
        if run.divergence() is None or not points or metric.split("/")[0] not in ("train", "step"):
            continue
        finite = [p for p in points if math.isfinite(p.value)]
        if finite:
            x = finite[-1].step if _use_step(metric, [run]) else finite[-1].epoch
            ax.plot([x], [finite[-1].value], marker="x", color=color, ms=9, mew=2, ls="none")
            marked = True
    return marked


def _use_step(metric: str, runs: list[RunData]) -> bool:
    """Over steps for interval logs and for runs that evaluate several times per epoch; else over epochs."""
    if metric.startswith("step/") or any(run.step_based for run in runs):
        return True
    return any(len({p.epoch for p in run.series[metric]}) < len(run.series[metric]) for run in runs)


def _x_name(metric: str, cells: list[CellData]) -> str:
    runs = [run for cell in cells for run in cell.runs if run.series.get(metric)]
    return "step" if _use_step(metric, runs) else "epoch"


def _xy(points: list[Point], by_step: bool) -> tuple[list[float], list[float]]:
    return [p.step if by_step else p.epoch for p in points], [p.value for p in points]


def _finish_axes(ax: Axes, metric: str, xlabel: str) -> None:
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
    ax.grid(alpha=0.3)
    ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:  # perplexities that start in the thousands
        ax.set_yscale("log")


# ------------------------------------------------------------------------------------- versus
@figure_kind("versus")
def versus(fs: FigureSpec, ctx: Context) -> list[Block]:
    """The metric against a config key (length, digits, lr): a line per value of the other axes."""
    caption = fs.title or f"{fs.metric} ({fs.aggregate}) versus {fs.x}"
    groups = versus_points(ctx.cells, fs.x, fs.metric, fs.aggregate)
    if not groups:
        return [NoteBlock(caption, f"no run has a value of {fs.metric} yet")]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    xs_all = [x for points in groups.values() for x in points]
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs_all)
    order = sorted(set(xs_all), key=lambda x: (not numeric, x if numeric else str(x)))
    for i, (group, points) in enumerate(groups.items()):
        xs = [x for x in order if x in points]
        pos = xs if numeric else [order.index(x) for x in xs]
        means = [statistics.fmean(points[x]) for x in xs]
        errs = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(pos, means, yerr=errs if any(errs) else None, marker="o", capsize=3,
                    color=COLORS[i % len(COLORS)], label=mathtext_safe(group or fs.metric))
    if numeric and min(order) > 0 and max(order) / min(order) >= 100:  # learning rates span decades
        ax.set_xscale("log")
    if numeric and all(isinstance(x, int) for x in order):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths, digits, layers
    if not numeric:
        ax.set_xticks(range(len(order)), [mathtext_safe(str(x)) for x in order], rotation=30)
    ax.set_xlabel(fs.x)
    ax.set_ylabel(f"{fs.metric} ({fs.aggregate})")
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return [SvgBlock(ctx.name(f"versus-{fs.x}"), caption, svg_text(fig, ctx.names[-1]))]


# ---------------------------------------------------------------------------- run artifacts
@figure_kind("text")
def generated_text(fs: FigureSpec, ctx: Context) -> list[Block]:
    caption = fs.title or "Generated text (first seed of each configuration, best checkpoint)"
    samples, missing = [], []
    for cell in ctx.cells:
        run, path = _first_file(cell, (TEXT_FILE,))
        if path:
            text = path.read_text(encoding="utf8", errors="replace").strip()
            samples.append((_whose(cell, run), text[:MAX_TEXT_CHARS] + ("…" if len(text) > MAX_TEXT_CHARS else "")))
        elif cell.runs:
            missing.append(f"{cell.label}: {_why_absent(cell.runs[0], TEXT_FILE)}")
    blocks: list[Block] = [TextBlock(caption, samples)] if samples else []
    if missing or not samples:
        blocks.append(NoteBlock(caption, "no generated text: " + ("; ".join(missing) or "no run stored")))
    return blocks


@figure_kind("attention")
def attention(fs: FigureSpec, ctx: Context) -> list[Block]:
    caption = fs.title or "Attention heat maps (a row per layer, a column per head)"
    return _images(ctx, ATTENTION_FILES, caption, "attention", _is_transformer)


def _is_transformer(run: RunData) -> bool:
    return run.flat_config.get("model") == "transformer"


@figure_kind("boundary")
def boundary(fs: FigureSpec, ctx: Context) -> list[Block]:
    caption = fs.title or "Decision boundary"
    return _images(ctx, BOUNDARY_FILES, caption, "boundary", lambda run: True)


def _images(ctx: Context, files: tuple[str, ...], caption: str, what: str,
            applies: Callable[[RunData], bool]) -> list[Block]:
    blocks: list[Block] = []
    missing = []
    for cell in ctx.cells:
        runs = [run for run in cell.runs if applies(run)]
        run, path = _first_file(CellData(cell.label, runs), files)
        if path:
            blocks.append(ImageBlock(ctx.name(f"{what}-{cell.label}"), f"{caption}: {_whose(cell, run)}",
                                     path.read_bytes(), path.suffix))
        elif runs:
            missing.append(f"{cell.label}: {_why_absent(runs[0], files[0])}")
    if missing or not blocks:
        reason = "; ".join(missing) or f"no run of this experiment writes {files[0]}"
        blocks.append(NoteBlock(caption, f"missing {what} figures: {reason}"))
    return blocks


def _first_file(cell: CellData, names: tuple[str, ...]) -> tuple[RunData | None, Path | None]:
    for run in cell.runs:
        for name in names:
            if (run.run_dir / name).is_file():
                return run, run.run_dir / name
    return None, None


def _whose(cell: CellData, run: RunData | None) -> str:
    return cell.label + (f" (seed {run.seed})" if run is not None and len(cell.runs) > 1 else "")


def _why_absent(run: RunData, name: str) -> str:
    return status_reason(run) if not run.done else f"{name} not in the run folder"


# ------------------------------------------------------------------------------------ helpers
def svg_text(fig: Figure, salt: str) -> str:
    """The figure as SVG markup for inlining: text kept as text, ids unique per figure, no date."""
    buffer = io.BytesIO()
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return strip_prolog(buffer.getvalue().decode("utf8"))


def strip_prolog(svg: str) -> str:
    """Drop the XML declaration, DOCTYPE and RDF metadata: inside HTML, the <svg> element stands alone."""
    start = svg.find("<svg")
    return _METADATA.sub("", svg[start:] if start >= 0 else svg, count=1)


def mathtext_safe(text: str) -> str:
    """matplotlib reads $...$ as math: a run named `$x` must be drawn as typed."""
    return text.replace("$", r"\$")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-.")[:60] or "x"
