"""Users' own models from their own files: `--plugin`, `plugins:` in an experiment file, an installed entry
point; the run key follows the plugin's source; bad plugins are one line.

Each test runs sweeplab in a process of its own: a plugin, once imported, stays registered in its process.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweeplab.store import open_store

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CLI = [sys.executable, "-m", "sweeplab"]
DIGITS = ["data=digits", "data.train_limit=256", "data.valid_size=64", "data.test_limit=100", "train.epochs=1"]


def sweeplab(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and all(p in lines[0] for p in parts), proc.stderr


def key_of(*args, env: dict | None = None) -> str:
    proc = sweeplab("run", "image", *args, "--dump-config", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["key"]


def test_the_examples_import_nothing_from_sweeplab_but_its_api():
    for path in EXAMPLES.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert [n for n in names if n and n.startswith("sweeplab")] in (["sweeplab.api"], []), path


def test_a_plugin_model_from_the_command_line_trains_and_is_on_record(store_url):
    proc = sweeplab("run", "image", "--plugin", EXAMPLES / "my_cnn.py", *DIGITS, "model=my_cnn", "model.width=8",
                    "--json", "--store", store_url)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and 0 <= result["metrics"]["test/acc1"] <= 1
    (row,) = open_store(store_url).list_runs()
    (plugin,) = row.config["plugins"]
    assert plugin["name"] == "my_cnn" and plugin["path"] == str(EXAMPLES / "my_cnn.py") and len(plugin["sha256"]) == 64
    shown = sweeplab("runs", "show", row.id, "--store", store_url)
    assert shown.returncode == 0 and plugin["sha256"] in shown.stdout
    help_text = sweeplab("run", "image", "--plugin", EXAMPLES / "my_cnn.py", "--help").stdout
    assert "my_cnn" in help_text  # listed among the task's models
    config = sweeplab("run", "image", "--plugin", EXAMPLES / "my_cnn.py", "model=my_cnn", "--dump-config").stdout
    assert '"width": 32' in config  # its keys and defaults, as a built-in's


def test_the_example_experiment_adds_the_plugin_row_to_the_course_table(store_url, tmp_path):
    """`plugins:` in the file, relative to it; every cell (a worker process) loads it; the report shows the row
    and where its code came from. Smaller than the quick scale: digits instead of CIFAR-10."""
    out = tmp_path / "report"
    ran = sweeplab("sweep", EXAMPLES / "cifar10_my_cnn.yaml", *DIGITS, "--workers", "2",
                   "--store", store_url, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    runs = open_store(store_url).list_runs(sweep="cifar10_my_cnn")
    assert len(runs) == 7 and {r.status for r in runs} == {"finished"}
    assert [r.config["plugins"][0]["name"] for r in runs if r.cell == "MyCNN_adam_1e-3"] == ["my_cnn"]
    report = sweeplab("report", EXAMPLES / "cifar10_my_cnn.yaml", "--out", out, "--store", store_url, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    markdown = (out / "report.md").read_text()
    assert "MyCNN\\_adam\\_1e-3 |" in markdown and "plugin my\\_cnn:" in markdown  # Markdown escapes the _


def test_an_installed_packages_entry_point_is_loaded(tmp_path, store_url):
    site = tmp_path / "site"
    (site / "my_toys-0.1.dist-info").mkdir(parents=True)
    (site / "my_toys-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-toys\nVersion: 0.1\n")
    (site / "my_toys-0.1.dist-info" / "entry_points.txt").write_text("[sweeplab.plugins]\nmy_toys = my_toys\n")
    (site / "my_toys.py").write_text(
        "from torch import nn\nfrom sweeplab.api import register_model\n\n"
        "@register_model('tiny_linear', task='toy2d')\n"
        "def tiny_linear(spec, cfg):\n    return nn.Linear(spec.input_dim, spec.num_classes)\n")
    proc = sweeplab("run", "toy2d", "model=tiny_linear", "data.n_samples=100", "train.epochs=2", "--json",
                    "--store", store_url, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["params"] == 2 * 2 + 2
    assert open_store(store_url).list_runs()[0].config["plugins"][0]["name"] == "my_toys"


def test_the_run_key_follows_the_plugins_source_and_nothing_else(tmp_path):
    mine, other = tmp_path / "my_cnn.py", tmp_path / "other.py"
    shutil.copy(EXAMPLES / "my_cnn.py", mine)
    other.write_text("from sweeplab.api import register_optimizer\nimport torch\n\n"
                     "@register_optimizer('plain_sgd')\ndef plain_sgd(params, cfg):\n"
                     "    return torch.optim.SGD(params, lr=cfg.lr)\n")
    args = ["--plugin", mine, "--plugin", other, "model=my_cnn"]
    before = key_of(*args)
    assert key_of("--plugin", mine, "model=my_cnn") == before  # loading an unused plugin changes nothing
    other.write_text(other.read_text() + "# a comment in another plugin\n")
    assert key_of(*args) == before
    mine.write_text(mine.read_text().replace("ge=1, le=1024", "ge=2, le=1024"))  # the model's code changed
    assert key_of(*args) != before
    assert key_of("model=vgg8") == key_of(*args[:4], "model=vgg8")  # a built-in's key: no plugin in it


@pytest.mark.parametrize("write, ref, parts", [
    (None, "missing.py", ["plugin missing.py", "no such file"]),
    (None, "no_such_module_xyz", ["no such module"]),
    ("import torch\n\nraise ValueError('boom')\n", "raises.py", ["raises.py:3", "ValueError: boom", "traceback is in"]),
    ("from sweeplab.api import register_model\n\n@register_model('vgg8', task='image')\ndef f(spec, cfg):\n    pass\n",
     "taken.py", ["'vgg8'", "registered twice", "by sweeplab and by plugin taken"]),
], ids=["missing-file", "missing-module", "raises-on-import", "name-taken"])
def test_a_bad_plugin_is_one_line_and_trains_nothing(write, ref, parts, tmp_path, store_url):
    if write:
        (tmp_path / ref).write_text(write)
    proc = sweeplab("run", "image", *DIGITS, "--plugin", ref, "--store", store_url, cwd=tmp_path)
    one_line(proc, *parts)
    assert open_store(store_url).list_runs() == []
    if "traceback is in" in parts:
        log = Path(proc.stderr.rsplit("traceback is in ", 1)[1].strip())
        assert "ValueError: boom" in log.read_text()
