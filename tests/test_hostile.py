"""A hostile user at the command line: secrets, terminals, versions, and sweeps that tell the truth.

Each bad input is exit 2 and one stderr line, no traceback, nothing left behind; what a user may legally type
(a name with escape sequences) is stored as given and printed escaped.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from tests.test_cli_errors import one_error_line
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.store import open_store
from sweeplab.store.artifacts import shown
from sweeplab.store.db import redact
from sweeplab.store.schema import MIGRATIONS, schema_version
from sweeplab.terminal import printable

runner = CliRunner()
TOY = ["data.n_samples=100", "train.epochs=2"]
CLI = [sys.executable, "-c", "from sweeplab.cli import main; main()"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------------- one line, exit 2
@pytest.mark.parametrize("args, expected", [
    (["run", "toy2d", "seed=1", "seed=2"], "'seed' is given twice"),
    (["run", "toy2d", "train.epochs=1", "train.epochs=3"], "'train.epochs' is given twice"),
    (["runs", "show", "x\udcff"], "not valid UTF-8"),  # how Python receives argv bytes that are not UTF-8
    (["run", "toy2d", "--name", "a\udce9b"], "not valid UTF-8"),
], ids=["seed-twice", "key-twice", "run-ref-not-utf8", "name-not-utf8"])
def test_bad_arguments_are_one_line_and_leave_nothing(args, expected, store_url):
    one_error_line(invoke(*args, "--store", store_url), expected)
    assert open_store(store_url).list_runs() == []


def test_a_store_written_by_a_newer_sweeplab_is_refused(store_url):
    store = open_store(store_url)
    with store.engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=len(MIGRATIONS) + 1))
    line = one_error_line(invoke("runs", "list", "--store", store_url), "newer sweeplab")
    assert f"schema version {len(MIGRATIONS) + 1}" in line


def test_an_error_message_is_one_line_whatever_it_quotes(store_url):
    """A run reference with a line break and an escape sequence: the message quotes it escaped."""
    result = invoke("runs", "show", "evil\n\x1b[2Jname", "--store", store_url)
    line = one_error_line(result)
    assert "\x1b" not in result.stderr and "\\x1b[2J" in line or "\\x1b" in line


def test_runs_alone_prints_its_help():
    for group in ("runs", "data", "bench"):
        result = invoke(group)
        assert result.exit_code == 0 and "Usage" in result.stdout and "error" not in result.stderr


# ------------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize("password", ["s3cr@t", "pa:ss/wo#rd", "p%40ss", "sp ace?q=1", "@@@", "x/y@z:w"])
def test_no_part_of_a_password_is_ever_printed(password, monkeypatch):
    url = f"postgresql://alice:{password}@db.example:5432/sweeps"
    for shown_url in (redact(url), shown(url.replace("postgresql", "s3"))):
        assert not any(piece in shown_url for piece in _pieces(password)), shown_url
        assert "db.example" in shown_url
    result = invoke("runs", "list", "--store", url.replace("db.example:5432", "127.0.0.1:1"))
    assert result.exit_code == 2 and not any(piece in result.stderr for piece in _pieces(password)), result.stderr


def _pieces(password: str) -> list[str]:
    """Every 3-character piece of the password that is not also part of the URL's other text."""
    return [password[i:i + 3] for i in range(len(password) - 2) if password[i:i + 3] not in "postgresql://alice"]


@pytest.mark.parametrize("url", ["postgresql://alice@db/sweeps?password=topsecret&sslmode=require",
                                 "s3://bucket/prefix?secret=topsecret&region=eu",
                                 "s3://bucket/prefix?aws_access_key_id=AKIA&aws_secret_access_key=topsecret"])
def test_query_string_credentials_are_redacted(url):
    for text in (redact(url), shown(url)):
        assert "topsecret" not in text and "***" in text and ("sslmode=require" in text or "s3://" in text)


# ------------------------------------------------------------------------------------- terminals, CSV
NAME = "evil\x1b]52;c;cHduZWQ=\x07\x1b[2J\nrow\u202e=cmd|' /C calc'!A0"


@pytest.fixture
def evil_run(store_url):
    result = invoke("run", "toy2d", *TOY, "--name", NAME, "--store", store_url)
    assert result.exit_code == 0, result.output
    return store_url


def test_a_name_with_escape_sequences_is_stored_as_given_and_printed_escaped(evil_run):
    assert open_store(evil_run).list_runs()[0].name == NAME
    listing = invoke("runs", "list", "--store", evil_run)
    assert listing.exit_code == 0 and printable(NAME) in listing.stdout
    assert "\x1b" not in listing.stdout and "\u202e" not in listing.stdout
    assert len(listing.stdout.strip().splitlines()) == 1  # one line a run outside a terminal, the whole name


def test_csv_export_has_no_control_characters_and_no_formulas(evil_run):
    exported = invoke("runs", "export", "--format", "csv", "--store", evil_run)
    assert exported.exit_code == 0 and "\x1b" not in exported.stdout and "\x07" not in exported.stdout
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 1 and rows[0]["name"] == printable(NAME)
    formula = invoke("run", "toy2d", *TOY, "seed=7", "--name", "=HYPERLINK(\"http://x\")", "--store", evil_run)
    assert formula.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(invoke("runs", "export", "--store", evil_run).stdout)))
    assert rows[1]["name"].startswith("'=")


def test_runs_list_says_steps_for_step_based_runs(store_url):
    assert invoke("run", "palindrome", "train.max_steps=20", "train.eval_every=10", "--store", store_url).exit_code == 0
    assert invoke("run", "toy2d", *TOY, "--store", store_url).exit_code == 0
    lines = invoke("runs", "list", "--store", store_url).stdout.strip().splitlines()
    assert "\tstep 20\t" in lines[0] and "\tepoch 2\t" in lines[1]


# ------------------------------------------------------------------------------------- sweeps tell the truth
def toy_experiment(folder: Path, epochs: int, cells: int = 2) -> Path:
    spec = {"name": "truth", "task": "toy2d", "base": {"data.n_samples": 200, "train.epochs": epochs},
            "variants": {"MLP": {"model": "mlp"}}, "seeds": list(range(1, cells + 1)),
            "columns": [{"title": "Test acc", "metric": "test/acc"}]}
    path = folder / "truth.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _wait_for_status(store_url: str, status: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(r.status == status for r in open_store(store_url).list_runs()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no run became {status}")


def test_a_sweep_whose_cell_is_trained_elsewhere_exits_non_zero_and_wait_waits(tmp_path, store_url):
    path = toy_experiment(tmp_path, epochs=400, cells=1)
    other = subprocess.Popen([*CLI, "run", "toy2d", "data.n_samples=200", "train.epochs=400", "seed=1",
                              "--store", store_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_status(store_url, "running")
        left = invoke("sweep", path, "--store", store_url)
        assert left.exit_code == 1 and "still being trained by other processes" in left.stderr
        waited = invoke("sweep", path, "--wait", "--store", store_url)  # returns once the other process is done
        assert waited.exit_code == 0, waited.output
        assert [r.status for r in open_store(store_url).list_runs()] == ["finished"]
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_of_a_two_worker_sweep_prints_no_traceback(attempt, tmp_path, store_url):
    """Ctrl-C reaches every process of the terminal's group; a worker still importing torch used to end
    with a KeyboardInterrupt traceback. Sent at three moments: as the workers start, while they import, and
    during training."""
    path = toy_experiment(tmp_path, epochs=300, cells=4)
    proc = subprocess.Popen([*CLI, "sweep", str(path), "--workers", "2", "--store", store_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = proc.stderr.readline()  # "sweep truth: 4 cells ...": the workers are being started now
    time.sleep([0.0, 0.7, 4.0][attempt])
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert first.startswith("sweep truth") and "Traceback" not in err and proc.returncode == 130, err[-3000:]


def test_workers_end_when_their_driver_is_killed(tmp_path, store_url):
    path = toy_experiment(tmp_path, epochs=3000, cells=2)
    proc = subprocess.Popen([*CLI, "sweep", str(path), "--workers", "2", "--store", store_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_status(store_url, "running")
    workers = [r.env["pid"] for r in open_store(store_url).list_runs()]
    proc.kill()  # SIGKILL: the driver cannot pass anything on
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    statuses = {r.status for r in open_store(store_url).list_runs()}
    assert statuses <= {"interrupted", "finished"}  # each worker checkpointed and said so: resumable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_every_cell_is_checked_when_the_file_is_loaded(tmp_path, store_url):
    """A bad combination in one cell of a grid (here the last: lr 0 is refused) stops the sweep before any trains."""
    spec = {"name": "combos", "task": "toy2d", "base": {"data.n_samples": 100, "train.epochs": 1},
            "axes": {"model": ["mlp", "mlp_numpy"], "optim": ["sgd", "adam"]},
            "columns": [{"title": "Test acc", "metric": "test/acc"}]}
    path = tmp_path / "combos.yaml"
    path.write_text(yaml.safe_dump(spec))
    one_error_line(invoke("sweep", path, "--store", store_url), "mlp_numpy", "optim")
    assert open_store(store_url).list_runs() == []
    with open_store(store_url).engine.connect() as conn:
        assert not conn.execute(sa.text("select count(*) from sweeps")).scalar()


# ------------------------------------------------------------------------------------- artifact storage
@pytest.mark.parametrize("uri, expected", [
    ("memory://sweeps", "vanish"),
    ("foo://bucket/x", "not a storage URL"),
    ("{file}", "is a file"),
    ("{file}/below", "cannot write there"),
    ("/proc/sweeplab-runs", "cannot write there"),
    ("s3://bucket/x", "cannot write to it"),  # a host that does not answer (the endpoint below)
], ids=["memory", "unknown-scheme", "a-file", "below-a-file", "not-writable", "unreachable-host"])
def test_artifact_storage_is_checked_before_training(uri, expected, store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    (tmp_path / "plain-file").write_text("not a folder")
    uri = uri.format(file=tmp_path / "plain-file")
    one_error_line(invoke("run", "toy2d", *TOY, "--artifacts", uri, "--store", store_url), expected)
    assert open_store(store_url).list_runs() == []  # no failed row left behind
    if not uri.startswith("s3"):
        experiment = toy_experiment(tmp_path, epochs=1, cells=1)
        one_error_line(invoke("sweep", experiment, "--artifacts", uri, "--store", store_url), expected)
        assert open_store(store_url).list_runs() == []


def test_read_commands_with_a_bad_artifact_root_say_so(store_url, tmp_path):
    assert invoke("run", "toy2d", *TOY, "--name", "kept", "--store", store_url).exit_code == 0
    for args in (["runs", "show", "kept"], ["report", "kept-sweep"]):
        one_error_line(invoke(*args, "--artifacts", tmp_path / "nowhere", "--store", store_url), "no such folder")


def test_a_sweeps_progress_counter_never_goes_back(store_url, tmp_path):
    experiment = toy_experiment(tmp_path, epochs=20, cells=4)
    result = invoke("sweep", experiment, "--workers", "2", "--store", store_url)
    assert result.exit_code == 0, result.output
    counts = [int(line[1:4]) for line in result.stderr.splitlines() if line.startswith("[") and "/4]" in line]
    assert len(counts) == 8 and counts == sorted(counts) and counts[-1] == 4  # 4 running lines, 4 finished ones
