"""Training functions of the user's own: `sweeplab run FILE.py:FUNCTION`, `task: FILE.py:FUNCTION` in an experiment
file and `module:function`; their keys, run identity, checkpoints (kill -9 and resume), stops, sweeps with
--budget, the report; and bad input, one line each.

Each command runs in a process of its own: a function, once loaded, stays registered in its process.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import real_data

from sweeplab.store import open_store

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CLI = [sys.executable, "-m", "sweeplab"]

# A small loop: data and a model of its own, checkpoints each epoch, `pause` seconds an epoch (to be killed in).
LOOP = '''
import time
import torch
from pydantic import BaseModel, Field
from torch import nn

class Config(BaseModel):
    lr: float = Field(0.1, gt=0)
    epochs: int = Field(4, ge=1)
    dropout: float = 0.2
    pause: float = 0.0

def main(config: Config, run):
    torch.manual_seed(run.seed)
    x = torch.randn(512, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Dropout(config.dropout), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    start, step = 1, 0
    state = run.restore()
    if state is not None:
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        start, step = state["epoch"] + 1, state["step"]
    for epoch in range(start, config.epochs + 1):
        for batch in torch.randperm(512).split(64):  # the global generator: restored with the checkpoint
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
        run.log(step=step, epoch=epoch, loss=loss.item())
        run.log(split="valid", acc=(model(x).argmax(1) == y).float().mean())
        run.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "step": step})
        time.sleep(config.pause)
        if run.should_stop():
            return
'''


def sweeplab(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess, *parts: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and all(p in lines[0] for p in parts), proc.stderr


@pytest.fixture()
def loop(tmp_path: Path) -> Path:
    path = tmp_path / "loop.py"
    path.write_text(LOOP)
    return path


def history(store_url: str, run_id: str) -> list[tuple]:
    return sorted((m.step, m.epoch, m.split, m.name, m.value) for m in open_store(store_url).metrics(run_id))


def test_a_function_runs_with_its_keys_and_is_on_record(loop, store_url):
    proc = sweeplab("run", f"{loop}:main", "lr=0.2", "epochs=2", "--json", "--store", store_url)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["task"] == "loop:main"
    assert result["config"]["params"] == {"lr": 0.2, "epochs": 2, "dropout": 0.2, "pause": 0.0}
    (row,) = open_store(store_url).list_runs()
    assert row.config["plugins"][0]["path"] == str(loop) and row.epoch == 2 and row.step == 16
    assert [m.epoch for m in open_store(store_url).metrics(row.id) if m.split == "valid"] == [1, 2]
    again = sweeplab("run", f"{loop}:main", "epochs=2", "lr=0.2", "--store", store_url)  # same keys: done already
    assert again.returncode == 0 and "not trained again" in again.stdout + again.stderr


def test_its_keys_are_shown_typed_and_checked(loop, tmp_path):
    shown = sweeplab("run", f"{loop}:main", "--help")
    assert shown.returncode == 0 and all(k in shown.stdout for k in ("lr", "epochs", "dropout", "0.1", "seed"))
    one_line(sweeplab("run", f"{loop}:main", "lrr=1"), "unknown key 'lrr'", "accepted: seed, device, lr, epochs")
    one_line(sweeplab("run", f"{loop}:main", "lr=fast"), "lr:", "'fast'")
    one_line(sweeplab("run", f"{loop}:main", "lr=-1"), "lr:", "greater than 0")
    one_line(sweeplab("run", f"{loop}:main", "epochs=1.5"), "epochs:", "1.5")


def test_without_an_annotation_the_config_is_the_dict_given(tmp_path, store_url):
    (tmp_path / "plain.py").write_text("def fit(config, run):\n    run.log(step=1, seen=len(config), lr=config['lr'])\n")
    proc = sweeplab("run", "plain.py:fit", "lr=0.5", "--json", "--store", store_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])["metrics"]
    assert metrics["train/lr"] == 0.5 and metrics["train/seen"] == 1


def test_an_installed_module_function_runs(tmp_path, loop, store_url):
    package = tmp_path / "site" / "mylab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(LOOP)
    proc = sweeplab("run", "mylab.train:main", "epochs=1", "--json", "--store", store_url,
                    env={"PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["task"] == "mylab.train:main"


def test_the_key_follows_the_functions_source(loop, tmp_path):
    def key() -> str:
        proc = sweeplab("run", f"{loop}:main", "--dump-config")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["key"]

    first = key()
    (tmp_path / "notes.py").write_text("# another file of the folder\n")
    assert key() == first
    loop.write_text(LOOP.replace("nn.Tanh()", "nn.ReLU()"))
    assert key() != first


def test_killed_with_sigkill_and_resumed_it_ends_as_a_run_that_never_stopped(loop, tmp_path):
    whole = f"sqlite:///{tmp_path}/whole/s.sqlite"
    assert sweeplab("run", f"{loop}:main", "--store", whole).returncode == 0
    broken = f"sqlite:///{tmp_path}/broken/s.sqlite"
    proc = subprocess.Popen([*CLI, "run", f"{loop}:main", "pause=1.0", "--store", broken],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "broken"
    deadline = time.time() + 120
    while not list(checkpoints.glob("*/checkpoints/epoch_002.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row,) = open_store(broken).list_runs()
    assert row.status == "running"  # as the kill left it: its owner is gone
    resumed = sweeplab("run", f"{loop}:main", "pause=1.0", "--store", broken)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stderr and "from step 16, epoch 2" in resumed.stderr
    (done,) = open_store(whole).list_runs()
    # pause is outside the numbers but inside the key: compare the histories, value for value
    assert history(broken, row.id) == history(whole, done.id)


def test_ctrl_c_ends_a_polling_function_at_its_next_question(loop, tmp_path, store_url):
    proc = subprocess.Popen([*CLI, "run", f"{loop}:main", "pause=1.0", "--store", store_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("*/checkpoints/epoch_001.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    (row,) = open_store(store_url).list_runs()
    assert row.status == "interrupted" and 1 <= row.epoch < 4
    assert sweeplab("run", f"{loop}:main", "pause=1.0", "--store", store_url).returncode == 0
    assert open_store(store_url).get_run(row.id).epoch == 4


@pytest.mark.parametrize(("body", "status", "code", "error"), [
    ("    raise ValueError('no batches')\n", "failed", 1, "ValueError: no batches"),
    ("    pass\n", "diverged", 3, "logged no metrics"),
    ("    run.log(step=1, loss=float('nan'))\n", "diverged", 3, "training loss became nan"),
    ("    run.log(step=1, loss='low')\n", "failed", 1, "run.log: loss=str is not accepted"),
    ("    run.save({'f': open})\n", "failed", 1, "run.save: the state holds what a checkpoint cannot load"),
    # a library's cleanup failing while a Ctrl-C unwinds (a database driver's, say): stopped, not broken
    ("    run.log(step=1, loss=1.0)\n    try:\n        raise KeyboardInterrupt\n    finally:\n"
     "        raise RuntimeError('cleanup failed')\n", "interrupted", 130, "interrupted at step 1"),
])
def test_how_a_function_ends_is_on_record(body, status, code, error, tmp_path, store_url):
    (tmp_path / "bad.py").write_text("def main(config, run):\n" + body)
    proc = sweeplab("run", "bad.py:main", "--store", store_url, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    (row,) = open_store(store_url).list_runs()
    assert row.status == status and error in row.error
    if status == "failed":
        assert (tmp_path / "runs" / row.id / "traceback.txt").is_file()
        assert error in sweeplab("runs", "show", row.id, "--store", store_url).stdout


@pytest.mark.parametrize(("source", "ref", "parts"), [
    (None, "missing.py:main", ["plugin missing.py: no such file"]),
    ("def main(config):\n    pass\n", "f.py:main", ["f.py:main", "takes (config, run)", "it takes (config)"]),
    ("def main(config, run):\n    pass\n", "f.py:train", ["no function 'train'", "accepted: main"]),
    ("def main(config: int, run):\n    pass\n", "f.py:main", ["annotated", "accepted: a pydantic model"]),
    ("import nothing_here\ndef main(config, run):\n    pass\n", "f.py:main", ["f.py:1", "ModuleNotFoundError"]),
])
def test_a_bad_function_is_one_line_and_stores_nothing(source, ref, parts, tmp_path, store_url):
    if source is not None:
        (tmp_path / "f.py").write_text(source)
    one_line(sweeplab("run", ref, "--store", store_url, cwd=tmp_path), *parts)
    assert open_store(store_url).list_runs() == []


def test_a_sweep_with_a_budget_shortens_the_functions_epochs(loop, tmp_path, store_url):
    spec = {"name": "own", "task": "loop.py:main", "axes": {"lr": [0.05, 0.2]}, "seeds": 2, "base": {"epochs": 30},
            "columns": [{"title": "Valid acc", "metric": "valid/acc"}]}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(spec))
    proc = sweeplab("sweep", "own.yaml", "--budget", "25s", "--workers", "1", "--store", store_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = open_store(store_url).list_runs(sweep="own")
    assert len(runs) == 4 and all(r.status == "finished" for r in runs)
    epochs = {r.config["params"]["epochs"] for r in runs}
    assert len(epochs) == 1 and 1 <= epochs.pop() < 30  # one fraction for all: the rows stay comparable
    assert all("of 30 epochs" in r.note for r in runs)


def test_a_plugin_edited_while_its_sweep_runs_fails_its_cells_in_one_line(loop, store_url):
    from sweeplab.errors import UserError
    from sweeplab.sweep.worker import check_plugins
    from sweeplab.tasks import plugins, resolve

    cfg = resolve(plugins.use_task(f"{loop}:main")[0])
    check_plugins(cfg)  # as loaded
    stale = cfg.__class__(**{**cfg.__dict__, "plugins": ((cfg.plugins[0][0], str(loop), "0" * 64),)})
    with pytest.raises(UserError, match="changed since the sweep started"):
        check_plugins(stale)


def test_the_example_loop_sweeps_learning_rates_and_reports(tmp_path, store_url):
    real_data("MNIST")
    experiment = EXAMPLES / "mnist_lr.yaml"
    proc = sweeplab("sweep", experiment, "--store", store_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = open_store(store_url).list_runs(sweep="mnist_lr")
    assert len(runs) == 9 and {r.config["params"]["lr"] for r in runs} == {0.001, 0.01, 0.1}
    report = sweeplab("report", experiment, "--store", store_url, "--out", tmp_path / "report", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Which learning rate trains best?" in text and "| 0.01 |" in text and "built by the training function" in text


def test_the_planners_calibration_ends_a_function_through_should_stop(tmp_path, store_url):
    """A loop that reads no `epochs` but asks `run.should_stop()` is calibrated on one epoch, not forever."""
    (tmp_path / "forever.py").write_text(
        "import itertools\nfrom pydantic import BaseModel\n\nclass Config(BaseModel):\n    epochs: int = 5\n\n"
        "def main(config: Config, run):\n    for epoch in itertools.count(1):\n"
        "        run.log(step=epoch, epoch=epoch, loss=1.0 / epoch)\n        if run.should_stop():\n            return\n")
    spec = {"name": "forever", "task": "forever.py:main", "variants": {"only": {}},
            "columns": [{"title": "Loss", "metric": "train/loss"}]}
    (tmp_path / "forever.yaml").write_text(yaml.safe_dump(spec))
    proc = sweeplab("sweep", "forever.yaml", "--budget", "1m", "--plan", "--store", store_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "/epoch of the function, timed whole" in proc.stdout and "5 of 5 epochs" in proc.stdout
    assert open_store(store_url).list_runs() == []  # a plan trains nothing in the store
