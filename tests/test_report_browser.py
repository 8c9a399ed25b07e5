"""The HTML report in a real browser: Debian's headless Chromium, driven through the DevTools protocol
over a pipe (--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4, so no websocket library).

It renders without console errors, shows every table and figure (each with a size on the page, every
image decoded), and hostile run names appear as text while no script runs."""
from __future__ import annotations

import base64
import json
import math
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sweeplab.report.build import write_report
from sweeplab.store import open_store
from test_report import (  # the store builders of the report tests
    LM_EXPERIMENT,
    PALINDROME_EXPERIMENT,
    SCRIPT_NAME,
    add_run,
    lm_series,
    write_experiment,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="needs Debian's chromium package (apt-get install -y chromium)")

EVENT_HANDLER_NAME = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
TOY_EXPERIMENT = """
name: toytest
task: toy2d
variants: {numpy: {model: mlp_numpy}, torch: {model: mlp}}
columns: [{title: Test acc, metric: test/acc}]
figures: [{kind: boundary}]
"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


class DevTools:
    """The few DevTools calls the test needs, over Chromium's debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        commands, self._to_browser = os.pipe()
        self._from_browser, replies = os.pipe()
        self.timeout, self.events, self._buffer, self._id = timeout, [], b"", 0

        def as_fds_3_and_4() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            a, b = os.dup(commands), os.dup(replies)  # above 4: dup2 below never meets its own fd
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        preexec_fn=as_fds_3_and_4, close_fds=False,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == self._id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, event: str) -> dict[str, Any]:
        return self._read_until(lambda m: m.get("method") == event)

    def _read_until(self, wanted) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                self.events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError("no answer from chromium")
            if select.select([self._from_browser], [], [], min(left, 0.5))[0]:
                self._buffer += os.read(self._from_browser, 1 << 20)

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, TimeoutError, RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)


def open_page(browser: DevTools, path: Path) -> str:
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.call(f"{domain}.enable", session=session)
    browser.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired")
    return session


PAGE_FACTS = """JSON.stringify({
  tables: [...document.querySelectorAll('table.results:not(.models)')].map(t => t.tBodies[0].rows.length),
  hidden: [...document.querySelectorAll('table.results, figure')].filter(e => !e.closest('details')
            && e.getBoundingClientRect().height === 0).length,
  summary: document.querySelector('section.summary') !== null,
  width: document.documentElement.scrollWidth,
  figures: [...document.querySelectorAll('figure.plot, figure.artifact')].map(f => {
    const el = f.querySelector('svg, img'); const box = el.getBoundingClientRect();
    return {id: f.id, tag: el.tagName.toLowerCase(), width: box.width, height: box.height,
            decoded: el.tagName.toLowerCase() !== 'img' || (el.complete && el.naturalWidth > 0)};
  }),
  samples: document.querySelectorAll('pre.sample').length,
  scripts: document.scripts.length,
  pwned: document.body.hasAttribute('data-pwned'),
  text: document.body.innerText,
})"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    """Three experiments: an LM table with text and an attention image, a palindrome versus-plot and
    curves, toy2d decision boundaries (PNG); hostile names among the rows."""
    root = tmp_path_factory.mktemp("browser")
    store = open_store(f"sqlite:///{root / 'runs' / 'sweeplab.sqlite'}")
    lm = write_experiment(root, LM_EXPERIMENT, "lmtest")
    for seed in (1111, 1112):
        add_run(store, lm, "LSTM1", seed, series=lm_series([5.5, 4.8, 4.4], [5.0, 4.6, 4.7], 110.0 + seed % 7))
        run_id = add_run(store, lm, "TF", seed, series=lm_series([5.8, 5.0, 4.7], [5.2, 4.9, 4.8], 150.0))
        (store.run_dir(run_id)).mkdir(parents=True)
        (store.run_dir(run_id) / "attention.svg").write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="60" height="60"><rect width="60" height="60"/></svg>')
        (store.run_dir(run_id) / "generated.txt").write_text("the cat sat <eos> on the mat\n")
    add_run(store, lm, SCRIPT_NAME, series={"train/loss": [6.0, math.nan], "valid/loss": [5.8]}, status="diverged")
    extra = add_run(store, lm, "LSTM1", 1113, series=lm_series([5.0], [4.9], 120.0))
    store.update_run(extra, cell=EVENT_HANDLER_NAME)  # a cell outside the file: reported as an extra row
    pal = write_experiment(root, PALINDROME_EXPERIMENT, "paltest")
    for length, acc in ((5, 1.0), (10, 0.7)):
        add_run(store, pal, f"data.length={length}", series={"valid/acc": [0.5, acc], "test/acc": [acc]})
    toy = write_experiment(root, TOY_EXPERIMENT, "toytest")
    for cell in ("numpy", "torch"):
        run_id = add_run(store, toy, cell, series={"train/loss": [0.6, 0.3], "test/acc": [0.8, 0.9]})
        store.run_dir(run_id).mkdir(parents=True)
        Image.new("RGB", (32, 24), (200, 80, 60)).save(store.run_dir(run_id) / "decision_boundary.png")
    return write_report([str(lm), str(pal), str(toy)], store, root / "out")


SCREENSHOT = Path(os.environ.get("SWEEPLAB_SCREENSHOTS", "reports/screenshots")) / "report-1400px.png"
WIDTH = 1400  # a laptop screen: the report must read at this width without scrolling sideways


@pytest.fixture(scope="module")
def page(report, tmp_path_factory: pytest.TempPathFactory):
    browser = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    try:
        session = open_page(browser, report.pages[0])
        browser.call("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        facts = browser.call("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True}, session=session)
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)  # for a person to look at (reports/ is ignored by git)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        yield json.loads(facts["result"]["value"]), browser.events
    finally:
        browser.close()


def test_a_screenshot_at_1400px_is_saved_and_nothing_overflows(page):
    facts, _ = page
    with Image.open(SCREENSHOT) as image:
        assert WIDTH - 20 <= image.width <= WIDTH and image.height > 900  # the whole page (less a scroll bar)
    assert facts["width"] <= WIDTH and facts["summary"] and facts["hidden"] == 0


def test_renders_without_console_errors(page):
    _, events = page
    problems = [e["params"] for e in events if e.get("method") in ("Runtime.exceptionThrown",
                                                                   "Page.javascriptDialogOpening")]
    problems += [e["params"]["entry"] for e in events
                 if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning")]
    problems += [e["params"] for e in events if e.get("method") == "Runtime.consoleAPICalled"]
    assert problems == []


def test_shows_every_table_and_figure(page, report):
    facts, _ = page
    assert facts["tables"] == [6, 3, 2]  # lm: 5 cells + the extra row; palindrome: 3 lengths; toy2d: 2
    expected = sorted({p.stem for p in report.figures})  # every figure file (an SVG and its PNG) is on the page
    assert sorted(f["id"] for f in facts["figures"]) == expected
    assert {f["tag"] for f in facts["figures"]} == {"svg", "img"}
    for figure in facts["figures"]:
        assert figure["width"] > 0 and figure["height"] > 0 and figure["decoded"], figure
    assert facts["samples"] == 1  # the TF cell's generated text


def test_hostile_names_are_text_and_no_script_runs(page):
    facts, _ = page
    assert SCRIPT_NAME in facts["text"] and EVENT_HANDLER_NAME in facts["text"]
    assert facts["scripts"] == 0 and not facts["pwned"]
