"""The figures of an experiment, one function per figure kind (a registry, as everywhere in sweeplab).

Figures are drawn with matplotlib's object API (no pyplot, so no global state and no GUI backend) and
kept as SVG text, which the HTML inlines and the Markdown links from figures/. Artifacts that runs wrote
themselves (attention maps, decision boundaries) are carried as files: the HTML embeds them as data-URI
images, which a browser renders without running anything inside them, and an SVG is cleaned of active
content first, since figures/ holds the file itself. A run folder is untrusted: its files are read through
store.runfiles (no link followed, regular files of a capped size only).
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

from sweeplab.experiment import Figure as FigureSpec
from sweeplab.report.collect import CellData, Point, RunData
from sweeplab.report.spec import ReportSpec
from sweeplab.report.svg_clean import UnsafeSvg, clean_svg
from sweeplab.report.values import label_without, learned, readable, status_reason, versus_points
from sweeplab.store.runfiles import RefusedFile, read_run_file

COLORS = matplotlib.colormaps["tab10"].colors + matplotlib.colormaps["Dark2"].colors
TEXT_FILE = "generated.txt"
ATTENTION_FILES = ("attention.svg", "attention.png")
BOUNDARY_FILES = ("boundary.svg", "boundary.png", "decision_boundary.svg", "decision_boundary.png")
MAX_TEXT_CHARS = 2000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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
    figure: Figure | None = None  # the drawing itself: the LaTeX report asks it for a PDF

    def pdf(self) -> bytes:
        """The figure as PDF (no creation date: the same runs, the same bytes), drawn only when asked for."""
        return self._saved("pdf", metadata={"CreationDate": None})

    def png(self) -> bytes:
        """The figure as PNG at 150 dpi, for slides and word processors (no date: the same runs, the same bytes)."""
        return self._saved("png", dpi=150, metadata={"Software": None})

    def _saved(self, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        with matplotlib.rc_context(STYLE):
            self.figure.savefig(buffer, format=fmt, **options)
        return buffer.getvalue()


@dataclass
class ImageBlock:
    """A figure a run wrote (attention map, decision boundary): a PNG as it is, an SVG cleaned (svg_clean)."""

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
    colours: dict[str, tuple] = field(default_factory=dict)

    def name(self, what: str) -> str:
        """A unique file stem for the next figure of this experiment, in the words its caption uses:
        `addition-03-test-exact-match-vs-digits`."""
        words = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")[:60].rstrip("-") or "figure"
        stem = f"{slug(self.spec.name)}-{len(self.names) + 1:02d}-{words}"
        self.names.append(stem)
        return stem

    def split(self, label: str, without: str | None = None) -> tuple[str, str]:
        """(line, panel) of a cell label; a label outside the experiment's grid is a line of its own."""
        if not self.spec.axes or label_without(label, without or "") not in self.grid_labels(without):
            return label_without(label, without or ""), ""
        return line_and_panel(label, without)

    def grid_labels(self, without: str | None) -> set[str]:
        return {label_without(label, without or "") for label in self.spec.cells}

    def colour(self, line: str) -> tuple:
        """One colour per line (a variant, else the first axis's value) in every figure of the experiment."""
        if not self.colours:
            for cell in self.cells:
                self.colours.setdefault(self.split(cell.label)[0], COLORS[len(self.colours) % len(COLORS)])
        return self.colours.setdefault(line, COLORS[len(self.colours) % len(COLORS)])

    def title(self, metric: str, aggregate: str = "final") -> str:
        """An axis title from the experiment's column titles (the column with this metric and aggregate: a
        curve is no "Best valid acc"), else the key."""
        column = next((c for c in self.spec.columns if c.metric == metric and c.aggregate == aggregate), None)
        return column.title if column else readable(metric)


def legend_columns(handles: list[Line2D], panels: int) -> int:
    """As many legend columns as fit under the panels: about 28 characters per panel's width."""
    longest = max((len(h.get_label()) for h in handles), default=1) + 6
    return max(1, min(len(handles), (28 * max(panels, 2)) // longest))


def line_and_panel(label: str, without: str | None = None) -> tuple[str, str]:
    """A cell's line (its first label part: the variant, else the first axis's value) and its panel (the
    rest of its grid point), leaving out the axis `without` (a versus plot's x)."""
    parts = [p for p in label.split(",") if p.partition("=")[0].strip() != without]
    return (parts[0] if parts else ""), ",".join(parts[1:])


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
    """Small multiples. Cells on one grid point (or no grid): a panel per metric, a line per cell. A grid: a
    figure per metric, a panel per grid point (shared axes), a line per variant. Several seeds: mean ± std."""
    metrics = list(fs.metrics) or default_curve_metrics(ctx.cells)
    caption = fs.title or f"{', '.join(ctx.title(m) for m in metrics) or 'Losses'} during training"
    drawn = [m for m in metrics if any(run.series.get(m) for cell in ctx.cells for run in cell.runs)]
    if not drawn:
        return [NoteBlock(caption, f"no run has recorded {', '.join(metrics) or 'any loss'} yet")]
    missing = [m for m in metrics if m not in drawn]
    if missing:
        caption += f" (not recorded by any run: {', '.join(missing)})"
    panels = list(dict.fromkeys(ctx.split(cell.label)[1] for cell in ctx.cells if cell.runs))
    if len(panels) <= 1:
        layout = [(ctx.title(m), m, ctx.cells) for m in drawn]
        return [_curve_figure(ctx, layout, caption, "training curves", None)]
    blocks: list[Block] = []
    for metric in drawn:
        layout = [(ctx.spec.labels.cell(panel), metric, [c for c in ctx.cells if ctx.split(c.label)[1] == panel])
                  for panel in panels]
        blocks.append(_curve_figure(ctx, layout, f"{caption}: {ctx.title(metric)}, a panel per grid point",
                                    f"{ctx.title(metric)} curves", ctx.title(metric)))
    return blocks


def _curve_figure(ctx: Context, layout: list[tuple[str, str, list[CellData]]], caption: str, what: str,
                  ylabel: str | None) -> SvgBlock:
    """Panels (title, metric, cells), four to a row, shared axes when they show one metric."""
    cols = min(len(layout), 4)
    rows = -(-len(layout) // cols)
    shared = ylabel is not None
    fig = Figure(figsize=(2.9 * cols + 1.2, 2.5 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=shared, sharey=shared).ravel()
    shown: dict[str, None] = {}
    diverged = False
    for ax, (title, metric, cells) in zip(axes, layout, strict=False):
        for cell in cells:
            line = ctx.split(cell.label)[0] if shared else cell.label
            colour = ctx.colour(line)
            if _curve(ax, metric, cell, colour):
                shown[line] = None
            diverged |= _mark_divergence(ax, metric, cell, colour)
        calm = [p.value for cell in cells for run in cell.runs if _calm(run, metric)
                for p in run.series.get(metric, []) if math.isfinite(p.value)]
        _finish_axes(ax, title, _x_name(metric, cells), calm)
        if ylabel and ax in axes[::cols]:
            ax.set_ylabel(mathtext_safe(ylabel))
    for ax in axes[len(layout):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=ctx.colour(line), label=mathtext_safe(ctx.spec.labels.cell(line))) for line in shown]
    if diverged:
        handles.append(Line2D([], [], color="black", marker="x", ls="none", label="diverged"))
    fig.legend(handles=handles, loc="outside lower center", ncol=legend_columns(handles, cols), frameon=False)
    name = ctx.name(what)
    return drawn(name, caption, fig)


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


def _calm(run: RunData, metric: str) -> bool:
    """A run whose curve may set the axes' range: it did not diverge, and it ended better than guessing (a
    perplexity in the vocabulary's thousands would flatten every curve that learned)."""
    finite = [p.value for p in run.series.get(metric, []) if math.isfinite(p.value)]
    return run.divergence() is None and not (run.done and finite and not learned(run, metric, finite[-1]))


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


def _finish_axes(ax: Axes, title: str, xlabel: str, calm: list[float]) -> None:
    """Title, labels, grid; the y range is that of the runs that neither diverged nor ended no better than guessing
    (`calm`), when there are any: a diverged run's 1e+204 would flatten every other curve into one line (its line
    leaves the top, its × marks where)."""
    ax.set_title(mathtext_safe(title), fontsize=9)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
    ax.grid(alpha=0.3)
    ys = calm or [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    log = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20  # perplexities that start in the thousands
    if log:
        ax.set_yscale("log")
    if calm:
        low, high = min(calm), max(calm)
        if log:
            ax.set_ylim(low / 1.3, high * 1.3)
        else:
            pad = (high - low) * 0.05 or abs(high) * 0.05 or 0.05
            ax.set_ylim(low - pad, high + pad)


# ------------------------------------------------------------------------------------- versus
@figure_kind("versus")
def versus(fs: FigureSpec, ctx: Context) -> list[Block]:
    """The metric against a config key (length, digits, lr): a line per variant, a panel per value of the
    other axes (shared axes); several seeds: mean with ±std error bars."""
    title = ctx.title(fs.metric, fs.aggregate)
    caption = fs.title or f"{title} versus {ctx.spec.labels.axis(fs.x)}"
    groups = versus_points(ctx.cells, fs.x, fs.metric, fs.aggregate)
    if not groups:
        return [NoteBlock(caption, f"no run has a value of {fs.metric} yet")]
    panels = list(dict.fromkeys(ctx.split(group)[1] for group in groups))
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(max(3.2 * cols, 5.0) + 1.0, 2.8 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    xs_all = [x for points in groups.values() for x in points]
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs_all)
    order = sorted(set(xs_all), key=lambda x: (not numeric, x if numeric else str(x)))
    lines: dict[str, None] = {}
    for ax, panel in zip(axes, panels, strict=False):
        for group, points in groups.items():
            line, at = ctx.split(group)
            if at == panel:
                _versus_line(ax, points, order, numeric, ctx.colour(line))
                lines[line] = None
        _versus_axes(ax, order, numeric, ctx.spec.labels.axis(fs.x))
        if len(panels) > 1:
            ax.set_title(mathtext_safe(ctx.spec.labels.cell(panel)), fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(mathtext_safe(title))
    if len(lines) > 1 or any(lines):
        handles = [Line2D([], [], color=ctx.colour(line), marker="o",
                          label=mathtext_safe(ctx.spec.labels.cell(line) if line else title))
                   for line in lines]
        fig.legend(handles=handles, loc="outside lower center", ncol=legend_columns(handles, cols), frameon=False)
    return [drawn(ctx.name(f"{title} vs {ctx.spec.labels.axis(fs.x)}"), caption, fig)]


def _versus_line(ax: Axes, points: dict, order: list, numeric: bool, colour: tuple) -> None:
    xs = [x for x in order if x in points]
    pos = xs if numeric else [order.index(x) for x in xs]
    means = [statistics.fmean(points[x]) for x in xs]
    errs = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
    ax.errorbar(pos, means, yerr=errs if any(errs) else None, marker="o", capsize=3, color=colour)


def _versus_axes(ax: Axes, order: list, numeric: bool, x_key: str) -> None:
    if numeric and min(order) > 0 and max(order) / min(order) >= 100:  # learning rates span decades
        ax.set_xscale("log")
    if numeric and all(isinstance(x, int) for x in order):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths, digits, layers
    if not numeric:
        ax.set_xticks(range(len(order)), [mathtext_safe(str(x)) for x in order], rotation=30)
    ax.set_xlabel(x_key)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------- run artifacts
@figure_kind("text")
def generated_text(fs: FigureSpec, ctx: Context) -> list[Block]:
    caption = fs.title or "Generated text (first seed of each configuration, best checkpoint)"
    samples, missing = [], []
    for cell in ctx.cells:
        refused: list[str] = []
        run, _, data = _first_file(cell, (TEXT_FILE,), refused)
        if run is not None:
            text = data.decode("utf8", errors="replace").strip()  # escaped where it is written (html, markdown)
            samples.append((_whose(ctx, cell, run), text[:MAX_TEXT_CHARS] + ("…" if len(text) > MAX_TEXT_CHARS else "")))
        elif cell.runs:
            missing.append(f"{cell.label}: {_why_absent(cell.runs[0], TEXT_FILE, refused)}")
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
        runs, refused = [run for run in cell.runs if applies(run)], []
        run, name, data = _first_file(CellData(cell.label, runs), files, refused)
        if run is not None:
            name_words = f"{what} {ctx.spec.labels.cell(cell.label)}"
            blocks.append(ImageBlock(ctx.name(name_words), f"{caption}: {_whose(ctx, cell, run)}", data, Path(name).suffix))
        elif runs:
            missing.append(f"{cell.label}: {_why_absent(runs[0], files[0], refused)}")
    if missing or not blocks:
        reason = "; ".join(missing) or f"no run of this experiment writes {files[0]}"
        blocks.append(NoteBlock(caption, f"missing {what} figures: {reason}"))
    return blocks


def _first_file(cell: CellData, names: tuple[str, ...], refused: list[str]) -> tuple[RunData | None, str, bytes]:
    """The first of `names` a run of the cell holds that passes the checks, as (run, name, contents). A run
    folder is untrusted (store.runfiles): a file refused is skipped, and why is added to `refused`."""
    for run in cell.runs:
        for name in names:
            try:
                data = _read_artifact(run.run_dir, name)
            except RefusedFile as exc:
                refused.append(f"{'the run folder' if exc.folder else name} refused ({exc.reason})")
                if exc.folder:
                    break  # none of its files is read
                continue
            if data is not None:
                return run, name, data
    return None, "", b""


def _read_artifact(run_dir: Path, name: str) -> bytes | None:
    """A run's file as the report may copy it: an SVG rebuilt from its drawing elements only, a PNG that is one."""
    data = read_run_file(run_dir, name)
    if data is None or not name.endswith((".svg", ".png")):
        return data
    if name.endswith(".png"):
        if not data.startswith(PNG_SIGNATURE):
            raise RefusedFile(run_dir / name, "not a PNG file")
        return data
    try:
        return clean_svg(data)
    except UnsafeSvg as exc:
        raise RefusedFile(run_dir / name, str(exc)) from None


def _whose(ctx: Context, cell: CellData, run: RunData | None) -> str:
    return ctx.spec.labels.cell(cell.label) + (f" (seed {run.seed})" if run is not None and len(cell.runs) > 1 else "")


def _why_absent(run: RunData, name: str, refused: list[str]) -> str:
    if refused:
        return "; ".join(refused)
    return status_reason(run) if not run.done else f"{name} not in the run folder"


# ------------------------------------------------------------------------------------ helpers
def drawn(name: str, caption: str, fig: Figure) -> SvgBlock:
    """A figure of the report: SVG for the page; the figure kept for a PDF, should LaTeX ask."""
    return SvgBlock(name, caption, svg_text(fig, name), fig)


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
