"""report.pdf: the HTML report printed by headless Chromium (its print-to-PDF), as a browser prints it.

The page's print style (report/html.py) starts each experiment on a new page, keeps a table, a figure and a
row whole where they fit, and lets a table wider than the page shrink to its width rather than be cut.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sweeplab.errors import UserError

PRINT_TIMEOUT_S = 180
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        raise UserError("--format pdf prints the HTML report with headless Chromium, which is not installed; "
                        "accepted: install it (Debian: apt-get install chromium), or --format html or latex")
    return found


def print_pdf(html: Path) -> bytes:
    """The PDF of `html` (a file), printed without headers and footers; UserError in one line if it fails."""
    command = browser()
    with tempfile.TemporaryDirectory(prefix="sweeplab-pdf-") as tmp:
        out = Path(tmp) / "report.pdf"
        args = [command, "--headless", "--disable-gpu", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer", f"--print-to-pdf={out}", html.resolve().as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=PRINT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"--format pdf: {command} did not print {html} within {PRINT_TIMEOUT_S} s") from None
        if not out.is_file() or out.stat().st_size == 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
            raise UserError(f"--format pdf: {command} did not print {html} (exit {done.returncode}: {last})")
        return out.read_bytes()
