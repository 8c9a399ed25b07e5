"""`make demo`: every experiment file at the quick scale (at full scale where that fits), then the report
in reports/quick/.

Each experiment is checked first with a dry run of its first cell (data present, model builds); one
whose data is missing is skipped with the line that says what to put where, and the report shows its
cells as not run.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sweeplab.engine.runner import RunOptions, execute
from sweeplab.errors import UserError
from sweeplab.store import open_store
from sweeplab.sweep.expand import expand, load_experiment

EXPERIMENTS = Path("experiments")
OUT = Path("reports/quick")
# Experiments whose full scale fits the demo's 15 minutes on 2 cores, so their tables are the real numbers:
# addition's 27 cells of 500 steps cost about 5 CPU-minutes (7 minutes of wall time on 2 cores shared with
# a load average of 7; benchmarks/FIDELITY.md). The others keep their quick scale; the report says what it
# reduces.
FULL_SCALE = {"addition"}


def ready(path: Path) -> str | None:
    """None when the experiment can run here, else why not (one line)."""
    try:
        cell = expand(load_experiment(path), "quick", where=str(path))[0]
        execute(cell.cfg, open_store("sqlite:///:memory:"), RunOptions(dry_run=True, quiet=True))
    except UserError as exc:
        return str(exc)
    return None


def sweeplab(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "sweeplab", *args])


def print_table(report: Path, sweep: str) -> None:
    """The language-model table of the course report, as the report wrote it."""
    escaped = sweep.replace("_", r"\_")  # as Markdown writes it
    for section in report.read_text(encoding="utf8").split("\n## ")[1:]:
        if f"sweep {escaped} " in section:
            print("\n## " + section.split("\n", 1)[0])
            print("\n".join(line for line in section.split("### Figures")[0].splitlines() if line.startswith("|")))


def main() -> None:
    start = time.time()
    files = sorted(EXPERIMENTS.glob("*.yaml"))
    skipped = {}
    for path in files:
        scale = "full" if path.stem in FULL_SCALE else "quick"
        print(f"\n=== {path.stem}: {scale} scale", flush=True)
        reason = ready(path)
        if reason:
            skipped[path.stem] = reason
            print(f"skipped: {reason}", flush=True)
            continue
        sweeplab("sweep", str(path), "--scale", scale, "--workers", "2")
    sweeplab("report", *map(str, files), "--out", str(OUT))
    print_table(OUT / "report.md", "lm_wikitext2")
    print(f"\nreport: {OUT / 'index.html'} and {OUT / 'report.md'} ({time.time() - start:.0f} s in all)")
    for name, reason in skipped.items():
        print(f"not run: {name}: {reason}")


if __name__ == "__main__":
    main()
