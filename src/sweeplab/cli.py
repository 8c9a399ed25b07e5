"""The command line: a thin Typer layer over the library. Bad input: one line, exit 2."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from sweeplab.config import MAX_SEED, json_safe
from sweeplab.errors import UserError, no_space_message
from sweeplab.terminal import printable


class _Group(TyperGroup):
    """Every error a user can cause ends as one line on stderr and exit code 2; others keep their traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        try:
            _check_utf8(sys.argv[1:] if args is None else args)
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
            code = rv if isinstance(rv, int) else 0  # non-standalone click returns typer.Exit's code
        except UserError as exc:
            print(f"error: {printable(exc)}", file=sys.stderr)  # one line, whatever the message quotes
            code = 2
        except typer.TyperException as exc:  # the argument parser's usage errors
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"error: {printable(exc.format_message())}{hint}", file=sys.stderr)
            code = 2
        except typer.Abort:
            code = 130
        except Exception as exc:
            from sweeplab.store.db import damaged_store

            if (line := no_space_message(exc) or damaged_store(exc)) is None:
                raise
            print(f"error: {printable(line)}", file=sys.stderr)
            code = 2
        if standalone_mode:
            sys.exit(code)
        return code


def _check_utf8(args: list[str]) -> None:
    """A name or path that is not valid UTF-8 arrives as text with lone surrogates, which no store, file name
    or terminal takes: one line instead of an encoding traceback deep inside."""
    for arg in args:
        try:
            str(arg).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"argument {ascii(arg)} is not valid UTF-8; accepted: UTF-8 text") from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run the classic deep-learning course experiments as reproducible runs, sweeps and reports.")


def _command_group(help_text: str) -> typer.Typer:
    """A group of subcommands that, called alone (`sweeplab runs`), prints its help and exits 0."""
    group = typer.Typer(help=help_text, invoke_without_command=True)

    @group.callback()
    def alone(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            out.print(ctx.get_help())

    return group


runs_app = _command_group("List, show and export stored runs.")
data_app = _command_group("Datasets: list, check, fetch.")
bench_app = _command_group("Time the same run on different hardware.")
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
out = Console()

EXIT_CODES = {"diverged": 3, "interrupted": 130, "failed": 1}  # SPEC §1; 130 as for Ctrl-C
STORE = typer.Option(None, "--store", help="store URL (default $SWEEPLAB_STORE or sqlite:///runs/sweeplab.sqlite)")
ARTIFACTS = typer.Option(None, "--artifacts", metavar="URI",
                         help="where runs keep checkpoints, events, figures: a folder (shared for clusters) or "
                              "s3://bucket/prefix (default $SWEEPLAB_ARTIFACTS, else the SQLite file's folder or ./runs); "
                              "a stored run is found where its row says")


PLUGINS = typer.Option(None, "--plugin", metavar="FILE|MODULE",
                       help="a file or module of your own that registers models, datasets, tasks or optimizers "
                            "(repeatable; also $SWEEPLAB_PLUGINS)")


def use_plugins(refs: list[str] | None) -> None:
    """Load the user's plugins before anything looks a name up; the processes this one starts load them too."""
    if refs:
        import sweeplab.tasks  # noqa: F401 - the built-ins register first; what a plugin registers is then its own
        from sweeplab.tasks import plugins

        plugins.use(refs, Path.cwd())


def use_artifacts(uri: str | None, *, write: bool = False) -> str | None:
    """--artifacts holds for this process and every process it starts (sweep workers, DDP ranks); checked
    first, in one line: for a command that trains (`write`), that runs can keep their files there."""
    if uri:
        from sweeplab.store.artifacts import Artifacts

        Artifacts(uri).check(write=write)
        os.environ["SWEEPLAB_ARTIFACTS"] = uri
    return uri


# ---------------------------------------------------------------------------------------------- run
@app.command(context_settings={"allow_extra_args": False}, add_help_option=False)
def run(ctx: typer.Context,
        task: str | None = typer.Argument(None, help="task: lm, image, toy2d, palindrome, addition, or your own "
                                          "training function, FILE.py:FUNCTION or module:function"),
        overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides, e.g. model.nlayers=2"),
        as_json: bool = typer.Option(False, "--json", help="last line of stdout: the run as one JSON object"),
        dry_run: bool = typer.Option(False, "--dry-run", help="build data and model, train nothing"),
        dump_config: bool = typer.Option(False, "--dump-config", help="print the resolved config and exit"),
        store: str | None = STORE,
        device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
        name: str | None = typer.Option(None, "--name", help="run name (default TASK-MODEL-KEY)"),
        wait: bool = typer.Option(False, "--wait", help="if another process trains this run, wait for it to end"),
        artifacts: str | None = ARTIFACTS,
        show_help: bool = typer.Option(False, "--help", help="this help; with TASK, its models and keys"),
        plugin: list[str] | None = PLUGINS) -> None:
    """Train one run of TASK (resumes an interrupted run of the same config)."""
    use_plugins(plugin)
    from sweeplab.config import parse_overrides, run_key
    from sweeplab.engine import distributed
    from sweeplab.engine.launch import execute
    from sweeplab.engine.runner import RunOptions
    from sweeplab.store import open_store
    from sweeplab.tasks import resolve

    if task:
        from sweeplab.tasks import plugins

        task = plugins.use_task(task, Path.cwd())[0]
    if show_help or task is None:
        if task:
            print_task_help(task)
        else:
            out.print(ctx.get_help())
        return
    layer = parse_overrides(overrides or [])
    if device:
        layer["device"] = device
    cfg = resolve(task, layer)
    if dump_config:
        out.print_json(data={**cfg.to_dict(), "key": run_key(cfg)})
        return
    db = open_store(store, use_artifacts(artifacts, write=not dry_run))
    speaks = distributed.current().is_main  # under torchrun every rank runs this command; rank 0 speaks for them
    result = execute(cfg, db, RunOptions(name=name, dry_run=dry_run, quiet=not speaks, wait=wait))
    if speaks and as_json:
        print(json.dumps(result.to_json(), allow_nan=False))
    elif speaks:
        print_result(result)
    if result.status in EXIT_CODES:
        raise typer.Exit(EXIT_CODES[result.status])


def print_result(result) -> None:
    table = Table(title=escape(f"run {result.run_id or '(dry run)'} · {result.task} · {result.status}"), show_header=False)
    table.add_row("params", f"{result.params:,}")
    table.add_row("device", result.device)
    for key in sorted(result.metrics):
        if "/" in key and key.split("/")[0] in ("train", "valid", "test"):
            table.add_row(key, f"{result.metrics[key]:.4g}")
    out.print(table)


def print_task_help(task_name: str) -> None:
    import sweeplab.tasks  # noqa: F401
    from sweeplab.config import OptimConfig, describe
    from sweeplab.registry import DATASETS, MODELS, OPTIMIZERS, TASKS
    from sweeplab.tasks.function import FunctionTask

    task = TASKS.get(task_name, key="task").obj
    out.print(f"[bold]sweeplab run {escape(task_name)}[/] [KEY=VALUE ...] — {escape(task.__doc__.strip().splitlines()[0])}")
    if issubclass(task, FunctionTask):
        table = Table("key", "default", "meaning", title=f"keys of {escape(task_name)}")
        table.add_row("seed", "1111", "random seed (run.seed)")
        table.add_row("device", "'auto'", "auto, cpu, cuda (run.device)")
        fields = task.params_model.model_fields if task.params_model else {}
        for key, info in fields.items():
            if key not in ("seed", "device"):
                table.add_row(key, "(required)" if info.is_required() else repr(info.default), info.description or "")
        if not fields:
            out.print("its config is a dict: any KEY=VALUE is passed on as given")
        out.print(table)
        return
    for kind, registry, group in (("models", MODELS, task_name), ("datasets", DATASETS, task_name),
                                  ("optimizers", OPTIMIZERS, "")):
        out.print(f"{kind}: " + ", ".join(registry.names(group)))
    table = Table("key", "default", "meaning", title=f"keys of {task_name} (task defaults in the second column)")
    defaults = task.defaults
    model = MODELS.get(defaults.get("model", ""), group=task_name) if "model" in defaults else None
    sections = [(task.train_config, "train"), (OptimConfig, "optim")]
    if model and model.config:
        sections.insert(0, (model.config, "model"))
    data = DATASETS.get(defaults["data"], group=task_name) if "data" in defaults else None
    if data and data.config:
        sections.insert(0, (data.config, "data"))
    table.add_row("seed", "1111", "random seed")
    for cls, group in sections:
        for key, default, meaning in describe(cls, group):
            table.add_row(key, repr(defaults[key]) if key in defaults else default, meaning)
    out.print(table)


# -------------------------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list(store: str | None = STORE, task: str | None = typer.Option(None, help="only this task"),
              sweep: str | None = typer.Option(None, help="only this sweep")) -> None:
    """One line per run: id, name, task, status, epochs and its headline metrics."""
    from sweeplab.store import open_store
    from sweeplab.tasks import capable

    db = open_store(store)
    lines = []
    for row in db.list_runs(task=task, sweep=sweep):
        summary = db.summary(row.id)
        shown = {k: v for k, v in summary.items() if k.startswith(("valid/", "test/")) and
                 k.endswith(("ppl", "acc1", "acc", "loss"))}
        length = f"step {row.step}" if capable(row.task, "steps") else f"epoch {row.epoch}"
        metrics = "  ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())[:4])
        lines.append([printable(v) for v in (row.id, row.name, row.task, row.status, length, metrics)])
    if not out.is_terminal:  # a pipe or a file: one line a run, whole names, for grep and awk
        for line in lines:
            print("\t".join(line))
        return
    table = Table("id", "name", "task", "status", "length", "metrics")
    for line in lines:
        table.add_row(*map(escape, line))
    out.print(table)


@runs_app.command("show")
def runs_show(run_ref: str = typer.Argument(..., metavar="RUN", help="run id, id prefix or name"),
              store: str | None = STORE, artifacts_root: str | None = ARTIFACTS,
              plugin: list[str] | None = PLUGINS) -> None:
    """Everything stored about one run: config, environment, summary, artifacts."""
    use_plugins(plugin)
    from sweeplab.store import open_store
    from sweeplab.store.artifacts import shown
    from sweeplab.store.runfiles import RefusedFile

    db = open_store(store, use_artifacts(artifacts_root))
    row = db.get_run(run_ref)
    try:
        artifacts = db.artifact_files(row.id)
    except RefusedFile as exc:  # the row is still worth showing; the folder's listing is not to be trusted
        print(f"warning: {exc}", file=sys.stderr)
        artifacts = []
    shown_row = {"id": row.id, "name": row.name, "key": row.key, "task": row.task, "status": row.status,
                 "epoch": row.epoch, "step": row.step, "error": row.error, "note": row.note,
                 "held_by": db.holder(row), "sweep": row.sweep, "cell": row.cell, "config": row.config,
                 "env": row.env, "summary": db.summary(row.id),
                 "metric_rows": len(db.metrics(row.id)), "artifacts_at": shown(row.artifacts or ""),
                 "artifacts": artifacts}
    out.print_json(data=json_safe(shown_row))  # rich would write a diverged run's NaN and Infinity: not JSON


@runs_app.command("export")
def runs_export(fmt: str = typer.Option("csv", "--format", help="csv or json"),
                metrics: bool = typer.Option(False, "--metrics", help="every metric row instead of one row per run"),
                store: str | None = STORE) -> None:
    """Runs (with summaries) or metric rows, as CSV or JSON on stdout."""
    from sweeplab.config import flatten
    from sweeplab.store import open_store

    if fmt not in ("csv", "json"):
        raise UserError(f"--format: {fmt!r} is not accepted; accepted: csv, json")
    db = open_store(store)
    rows: list[dict] = []
    for run in db.list_runs():
        base = {"run_id": run.id, "name": run.name, "task": run.task, "status": run.status}
        if metrics:
            rows += [{**base, "step": m.step, "epoch": m.epoch, "split": m.split, "name": m.name, "value": m.value}
                     for m in db.metrics(run.id)]
        else:
            rows.append({**base, "key": run.key, **flatten(run.config), **db.summary(run.id)})
    if fmt == "json":
        print(json.dumps(json_safe(rows), indent=1, default=str, allow_nan=False))
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    print(buffer.getvalue(), end="")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading quote (OWASP's CSV injection advice);
    numbers, negative ones included, and text that is just a number stay as they are. Control characters are
    escaped: a cell holds no line break and no terminal escape sequence."""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + printable(value)
    return printable(value)


# ------------------------------------------------------------------------------- language models
@app.command()
def generate(run_ref: str = typer.Argument(..., metavar="RUN"), words: int = typer.Option(100, min=1),
             temperature: float = typer.Option(1.0, help="higher: more diverse"),
             top_k: int = typer.Option(0, "--top-k", min=0, help="sample among the k likeliest words, 0 = all"),
             seed: int = typer.Option(1111, min=0, max=MAX_SEED, help="0 to 2**32 - 1, as a run's seed"),
             prompt: str = typer.Option("", help="text to continue"),
             store: str | None = STORE, artifacts: str | None = ARTIFACTS,
             plugin: list[str] | None = PLUGINS) -> None:
    """Text from a language-model run's best checkpoint."""
    use_plugins(plugin)
    from sweeplab.store import open_store
    from sweeplab.tasks.lm_artifacts import GENERATE_WORDS, check_prompt, check_words, load_lm
    from sweeplab.tasks.lm_artifacts import generate as sample

    check_words("--words", words, GENERATE_WORDS)
    check_prompt(prompt)
    db = open_store(store, use_artifacts(artifacts))
    model, dictionary, _ = load_lm(db, db.get_run(run_ref))
    text = sample(model, dictionary, words=words, temperature=temperature, top_k=top_k, seed=seed, prompt=prompt)
    print("\n".join(printable(line) for line in text.splitlines()))  # words come from the run folder: untrusted


@app.command()
def attention(run_ref: str = typer.Argument(..., metavar="RUN"),
              text: str = typer.Option("", help="text to attend over (default: the run's validation text)"),
              out_file: Path = typer.Option(Path("attention.svg"), "--out", help=".svg or .png"),
              store: str | None = STORE, artifacts: str | None = ARTIFACTS,
              plugin: list[str] | None = PLUGINS) -> None:
    """Attention heat maps (a row per layer, a column per head) of a Transformer LM run."""
    use_plugins(plugin)
    from sweeplab.store import open_store
    from sweeplab.tasks.lm_artifacts import ATTENTION_WORDS, check_words, load_lm, save_attention

    check_words("--text", len(text.split()), ATTENTION_WORDS)
    if out_file.suffix not in (".svg", ".png"):
        raise UserError(f"--out: {out_file} must end in .svg or .png")
    check_output_file(out_file, "--out")
    db = open_store(store, use_artifacts(artifacts))
    run = db.get_run(run_ref)
    model, dictionary, _ = load_lm(db, run)
    tokens = text.split() or _validation_text(run)
    print(save_attention(model, dictionary, tokens, out_file))


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output path that can never be a file; missing folders are made when the
    file is written, as users expect."""
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; expected a file name, e.g. {path / 'attention.svg'}")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{option}: cannot create the folder of {path}: {blocker} is a file, not a folder")


def _validation_text(run) -> list[str]:
    from sweeplab.data.text import load_corpus
    from sweeplab.tasks.lm import ATTENTION_TOKENS

    corpus = load_corpus(run.config["data"]["name"], run.config["data"]["path"])
    return [corpus.dictionary.idx2word[i] for i in corpus.valid[:ATTENTION_TOKENS].tolist()]


# -------------------------------------------------------------------------------------------- data
@data_app.command("list")
def data_list() -> None:
    """Every dataset, its folder under the data root, and whether it is present."""
    from sweeplab.data.catalog import SOURCES, check
    from sweeplab.data.paths import data_root

    table = Table("name", "folder", "present", "about", title=f"data root: {escape(str(data_root()))}")
    for source in SOURCES.values():
        present = "bundled" if source.bundled else ("yes" if not check(source, verify=False) else "no")
        table.add_row(source.name, escape(source.folder or "-"), present, escape(source.note))
    out.print(table)


@data_app.command("check")
def data_check(name: str | None = typer.Argument(None, help="one dataset (default: all present ones)")) -> None:
    """Verify files and checksums; exit 2 if a named dataset is missing or damaged."""
    from sweeplab.data.catalog import SOURCES, check, get_source

    sources = [get_source(name)] if name else list(SOURCES.values())
    bad = False
    for source in sources:
        problems = check(source)
        if problems and not name and len(problems) == len(source.files):
            out.print(f"{source.name}: not present", markup=False)
            continue
        bad |= bool(problems)
        out.print(f"{source.name}: " + ("ok" if not problems else "; ".join(problems)), markup=False)
    if bad:
        raise UserError("some dataset files are missing or damaged (listed above)")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(...)) -> None:
    """Download the official files, check them, and place them under the data root."""
    from sweeplab.data.catalog import fetch, get_source

    print(f"{name}: ready in {fetch(get_source(name))}")


# ------------------------------------------------------------------------------------------ report
@app.command()
def report(targets: list[str] = typer.Argument(..., metavar="EXPERIMENT.yaml|SWEEP_NAME",
                                                help="experiment files or stored sweep names"),
           out_dir: Path | None = typer.Option(None, "--out", help="output folder (default reports/NAME)"),
           fmt: str = typer.Option("html", "--format", help="html: index.html and report.md; pdf: those and "
                                                             "report.pdf (headless Chromium); latex: report.tex, a "
                                                             "booktabs fragment per table, figures as PDF"),
           store: str | None = STORE, artifacts: str | None = ARTIFACTS,
           plugin: list[str] | None = PLUGINS) -> None:
    """index.html (self-contained) and report.md, or report.tex, with figures/, from the run store only."""
    use_plugins(plugin)
    from sweeplab.report.build import default_out_dir, write_report
    from sweeplab.store import open_store

    written = write_report(targets, open_store(store, use_artifacts(artifacts)), out_dir or default_out_dir(targets),
                           fmt)
    print(f"report: {' and '.join(map(str, written.pages))} ({len(written.figures)} figure files)")


# ------------------------------------------------------------------------------------------- sweep
@app.command()
def sweep(experiment: Path = typer.Argument(..., metavar="EXPERIMENT.yaml", help="an experiment file"),
          overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE applied to every cell, last"),
          workers: int = typer.Option(1, "--workers", min=1, help="local worker processes sharing the cores"),
          executor: str = typer.Option("local", "--executor", help="local or ray (ray needs a PostgreSQL store and "
                                                                   "artifacts every node sees)"),
          address: str | None = typer.Option(None, "--address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 "
                                                                     "(default $RAY_ADDRESS, else the one `ray start` "
                                                                     "began on this machine)"),
          scale: str | None = typer.Option(None, "--scale", help="quick or full (default: quick)"),
          budget: str | None = typer.Option(None, "--budget", help="fit the table in this time, e.g. 20m"),
          plan: bool = typer.Option(False, "--plan", help="print the plan and its time estimate; train nothing"),
          retry_failed: bool = typer.Option(False, "--retry-failed", help="run failed cells again"),
          wait: bool = typer.Option(False, "--wait", help="wait for cells other processes are training, so that "
                                                         "the sweep ends with every cell ended"),
          max_cells: int | None = typer.Option(None, "--max-cells", min=1, metavar="N",
                                               help="allow more cells than $SWEEPLAB_MAX_CELLS or 10,000"),
          max_seeds: int | None = typer.Option(None, "--max-seeds", min=1, metavar="N",
                                               help="allow more seeds than $SWEEPLAB_MAX_SEEDS or 100"),
          store: str | None = STORE, artifacts: str | None = ARTIFACTS,
          plugin: list[str] | None = PLUGINS) -> None:
    """Run every cell of an experiment file; finished cells are skipped, interrupted ones resume."""
    use_plugins(plugin)
    from sweeplab.config import parse_overrides
    from sweeplab.sweep.run import SweepOptions, run_sweep

    opts = SweepOptions(scale=scale, workers=workers, executor=executor, budget=budget, plan_only=plan,
                        store_url=store, artifacts=use_artifacts(artifacts, write=not plan), address=address,
                        retry_failed=retry_failed, wait=wait, overrides=parse_overrides(overrides or []),
                        max_cells=max_cells, max_seeds=max_seeds)
    try:
        result = run_sweep(experiment, opts, out)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue (interrupted cells resume)", file=sys.stderr)
        raise typer.Exit(130) from None
    if plan:
        return
    counts = {s: result.statuses.count(s) for s in dict.fromkeys(result.statuses)}
    out.print(f"sweep {result.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), markup=False)
    if result.failed:
        print(f"error: {result.failed} cell(s) failed; `sweeplab runs list --sweep {result.name}` shows why, "
              "`--retry-failed` runs them again", file=sys.stderr)
        raise typer.Exit(2 if result.user_errors == result.failed else 1)
    if result.elsewhere:  # `sweep && report` must not report a table that is still being filled
        print(f"error: {result.elsewhere} cell(s) are still being trained by other processes; `--wait` waits for "
              "them", file=sys.stderr)
        raise typer.Exit(1)


@app.command("import")
def import_log(log: Path = typer.Argument(..., metavar="LOG", help="a pytorch/examples-style training log"),
               overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE: the config the log was made "
                                                                          "with, e.g. model=gru model.nlayers=2"),
               task: str = typer.Option(..., "--task", help="lm (word_language_model) or image (imagenet)"),
               name: str = typer.Option(..., "--name", help="run name"),
               sweep_name: str | None = typer.Option(None, "--sweep", help="file the run under this sweep ..."),
               cell: str | None = typer.Option(None, "--cell", help="... as this cell, to fill a table cell"),
               store: str | None = STORE) -> None:
    """Turn a log of a run made elsewhere into a stored run (status imported), with its provenance."""
    from sweeplab.config import parse_overrides
    from sweeplab.store import open_store
    from sweeplab.sweep.importer import import_log as do_import

    row, new = do_import(log, task=task, name=name, overrides=parse_overrides(overrides or []), sweep=sweep_name,
                         cell=cell, store=open_store(store))
    done = "imported" if new else "already imported: it is"
    print(f"{log.name}: {done} run {row.id} ({row.name}), {row.epoch} epoch(s), status {row.status}")


# ----------------------------------------------------------------------------------------- compare
@app.command()
def compare(run_a: str = typer.Argument(..., metavar="RUN_A[@EPOCH]", help="run id, prefix or name; @EPOCH picks a "
                                                                          "checkpoint (default: best kept)"),
            run_b: str = typer.Argument(..., metavar="RUN_B[@EPOCH]"),
            split: str = typer.Option("test", help="held-out split both are evaluated on: test or valid"),
            as_json: bool = typer.Option(False, "--json", help="the whole comparison as one JSON object"),
            limit: int = typer.Option(20, min=0, help="differing samples listed in the table"),
            device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto"),
            store: str | None = STORE, artifacts: str | None = ARTIFACTS,
            plugin: list[str] | None = PLUGINS) -> None:
    """Where two checkpoints predict differently: agreement, accuracies, per-class deltas, who is right."""
    use_plugins(plugin)
    from sweeplab.store import open_store
    from sweeplab.sweep.compare import compare_runs, print_comparison

    result = compare_runs(open_store(store, use_artifacts(artifacts)), run_a, run_b, split=split, device=device)
    if as_json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        print_comparison(result, out, limit)


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    app()


# -------------------------------------------------------------------------------------------- bench
@bench_app.command("devices")
def bench_devices(task: str = typer.Argument(..., help="task: lm, image, toy2d, palindrome, addition"),
                  overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides of the run"),
                  steps: int = typer.Option(100, "--steps", min=10, help="optimizer steps per setup"),
                  gpus: int | None = typer.Option(None, "--gpus", min=2, help="GPUs of the DDP row (default: all)"),
                  as_json: bool = typer.Option(False, "--json", help="last line of stdout: the rows as JSON"),
                  store: str | None = STORE,
                  plugin: list[str] | None = PLUGINS) -> None:
    """The same run on the CPU, 1 GPU and N GPUs (DDP): time per batch and per epoch, and the speed-up.

    Each setup is a stored run of --steps steps (evaluation still runs at its end); setups this machine
    lacks are listed with the reason.
    """
    use_plugins(plugin)
    from sweeplab.config import parse_overrides
    from sweeplab.store import open_store
    from sweeplab.sweep.bench import bench_devices as run_bench

    rows = run_bench(task, parse_overrides(overrides or []), open_store(store), steps=steps, gpus=gpus, quiet=as_json)
    if as_json:
        print(json.dumps([row.to_json() for row in rows]))
        return
    table = Table("setup", "ms/batch", "epoch", "speed-up", "run", title=f"{task} on each device: {steps} steps",
                  caption="ms/batch: median after warm-up; epoch: ms/batch x batches per epoch")
    for row in rows:
        if row.status == "skipped":
            table.add_row(escape(row.setup), "-", "-", "-", escape(f"skipped: {row.note}"))
            continue
        setup = row.setup if row.device == row.setup else f"{row.setup}: {row.device}"
        table.add_row(escape(setup), _num(row.ms_per_batch, "{:.1f}"), _num(row.epoch_s, "{:.1f} s"),
                      _num(row.speedup, "{:.2f}x"), escape(f"{row.run_id} {row.status}"))
    out.print(table)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
