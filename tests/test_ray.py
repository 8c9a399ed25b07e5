"""`sweep --executor ray` on a real Ray cluster of two worker nodes (plus a head that trains nothing), all on
127.0.0.1, against the real PostgreSQL server, with a shared temp folder as artifact root. Every node runs
from its own working directory, none of them the driver's, so nothing can be found by accident in ./runs.

PostgreSQL credentials reach the workers the way the README says: PGPASSWORD in the nodes' environment
(libpq reads it); the tasks get the store URL without its password.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from tests.sweep_helpers import invoke, metric_ids
from tests.test_store_postgres import URL as PG_URL
from tests.test_store_postgres import pg_url  # noqa: F401 - the fixture

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.store import open_store
from sweeplab.sweep import executors
from sweeplab.sweep.expand import expand, load_experiment
from sweeplab.tasks import resolve

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server: set SWEEPLAB_TEST_POSTGRES=postgresql://...")
LEASE_S = "4"  # a takeover after a node dies is quick; heartbeats every second
LONG = 14  # epochs of a cell that is stopped mid-run: long enough to be caught at epoch 3, short for the suite
# Epochs of a cell Ctrl-C stops: the cancel takes about 2 s to reach a worker (the driver's ray.wait, then
# the cancel itself), and an idle machine trains a toy epoch in ~0.03 s, so 14 epochs could end first.
INTERRUPTED = 150
CLI = [sys.executable, "-c", "from sweeplab.cli import main; main()"]


def plain(url: str) -> str:
    """The URL without its password: the nodes and the driver read it from PGPASSWORD."""
    return executors.url_without_password(url)


def password() -> str:
    return sa.engine.make_url(PG_URL).password or ""


# ------------------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPUs: it schedules, never trains) + two 1-CPU worker nodes, each started in its own folder."""
    if not PG_URL:
        pytest.skip("no PostgreSQL server: set SWEEPLAB_TEST_POSTGRES=postgresql://...")
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("ray")
    env = {"OMP_NUM_THREADS": "1", "SWEEPLAB_LEASE_S": LEASE_S, "PGPASSWORD": password(),
           # Ray turns a 127.0.0.1 address into this machine's outside address unless told the cluster is one
           # machine's; with it, every process and every connection stays on loopback.
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray_constants = sys.modules["ray._private.ray_constants"]
    one_machine, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False  # read at import: set here too
    cwd = Path.cwd()
    try:
        os.chdir(_folder(root / "head"))
        started = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                "include_dashboard": False})
        for name in ("node-a", "node-b"):
            os.chdir(_folder(root / name))  # its raylet, and so its workers, start here
            started.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    except Exception as exc:  # noqa: BLE001 - Ray could not start here: say why
        os.chdir(cwd)
        pytest.skip(f"a local Ray cluster could not start: {exc}")
    finally:
        os.chdir(cwd)
    started.root = root
    yield started
    ray.shutdown()
    started.shutdown()
    ray_constants.ENABLE_RAY_CLUSTER = one_machine
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_worker_node(cluster) -> None:
    cwd = Path.cwd()
    os.chdir(_folder(cluster.root / f"node-{len(cluster.worker_nodes) + 2}"))
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    finally:
        os.chdir(cwd)


@pytest.fixture
def pg(request) -> str:
    """A fresh PostgreSQL database (with its password) for the test."""
    return request.getfixturevalue("pg_url")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """The driver's folder (the cwd), a shared artifact folder, a third folder for reports."""
    for name in ("driver", "shared", "elsewhere"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "driver")
    return tmp_path / "driver", tmp_path / "shared", tmp_path / "elsewhere"


def toy_experiment(folder: Path, name: str, variants: dict, epochs: int = 3) -> Path:
    spec = {"name": name, "title": "toy2d on Ray", "task": "toy2d",
            "base": {"data": "moons", "data.n_samples": 400, "train.batch_size": 8, "train.epochs": epochs},
            "variants": variants, "columns": [{"title": "Test acc", "metric": "test/acc"}],
            "figures": [{"kind": "curves", "metrics": ["train/loss"]}, {"kind": "boundary"}], "scales": {}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_command(path: Path, pg: str, shared: Path, cluster) -> list[str]:
    return [*CLI, "sweep", str(path), "--executor", "ray", "--address", cluster.address, "--store", plain(pg),
            "--artifacts", str(shared)]


def duplicated(store, run_id: str) -> list:
    counts = Counter((m.step, m.epoch, m.split, m.name) for m in store.metrics(run_id))
    return [row for row, n in counts.items() if n > 1]


def train_epochs(store, run_id: str) -> list[int]:
    return [m.epoch for m in store.metrics(run_id) if m.key == "train/loss"]


# ------------------------------------------------------------------------------------- the tests
@needs_postgres
def test_a_sweep_trains_every_cell_once_on_the_nodes_and_a_report_elsewhere_shows_every_figure(
        cluster, pg, places, monkeypatch):
    driver, shared, elsewhere = places
    variants = {"MLP_moons": {"model": "mlp"}, "MLP_circles": {"model": "mlp", "data": "circles"},
                "NumPy_moons": {"model": "mlp_numpy"}, "NumPy_circles": {"model": "mlp_numpy", "data": "circles"}}
    path = toy_experiment(driver, "toyray", variants)
    args = ["sweep", path, "--executor", "ray", "--address", cluster.address, "--store", plain(pg),
            "--artifacts", shared]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "4 finished" in result.stdout
    store = open_store(pg)
    runs = store.list_runs(sweep="toyray")
    assert sorted(r.cell for r in runs) == sorted(variants) and {r.status for r in runs} == {"finished"}
    worker_pids = {r.env["pid"] for r in runs}
    assert os.getpid() not in worker_pids  # trained by Ray's workers, not by the driver
    for run in runs:
        assert run.artifacts == str(shared / run.id)
        assert (shared / run.id / "decision_boundary.svg").is_file() and any((shared / run.id / "tb").iterdir())
        assert train_epochs(store, run.id) == [1, 2, 3] and duplicated(store, run.id) == []
    for folder in (driver, *(cluster.root / n for n in ("head", "node-a", "node-b"))):
        assert not (folder / "runs").exists()  # nothing landed in anyone's ./runs

    rerun = invoke(*args)
    assert rerun.exit_code == 0 and "4 already stored, 0 to run" in rerun.stderr
    assert len(store.list_runs()) == 4

    monkeypatch.chdir(elsewhere)  # a third folder, no --artifacts: the run rows say where the files are
    report = invoke("report", "toyray", "--store", plain(pg), "--out", elsewhere / "report")
    assert report.exit_code == 0, report.output
    markdown = (elsewhere / "report" / "report.md").read_text()
    assert "missing" not in markdown
    boundaries = [p for p in (elsewhere / "report" / "figures").iterdir() if "boundary" in p.name]
    assert len(boundaries) == 4


@needs_postgres
def test_the_password_never_travels_with_a_task_nor_reaches_rays_records(cluster, pg, places, monkeypatch):
    driver, shared, _ = places
    secret = password()
    assert secret
    path = toy_experiment(driver, "secret", {"MLP": {"model": "mlp"}}, epochs=1)
    monkeypatch.setenv("SWEEPLAB_STORE", pg)  # the driver's store, password included, from its environment
    jobs = []
    real_submit = executors._submit
    monkeypatch.setattr(executors, "_submit", lambda j, s, t: jobs.extend(j) or real_submit(j, s, t))
    result = invoke("sweep", path, "--executor", "ray", "--address", cluster.address, "--artifacts", shared)
    assert result.exit_code == 0, result.output
    task_args = pickle.dumps((jobs, executors.url_without_password(pg)))
    assert secret.encode() not in task_args
    assert secret not in str(ray._private.state.jobs())  # the job table: entrypoints, runtime environments
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    leaked = [p for p in session.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []

    monkeypatch.setattr(sys, "argv", ["sweeplab", "sweep", str(path), "--store", pg])
    refused = invoke("sweep", path, "--executor", "ray", "--address", cluster.address, "--store", pg)
    assert refused.exit_code == 2 and "keep the password off the command line" in refused.stderr
    assert secret not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


@needs_postgres
def test_a_node_that_dies_mid_cell_has_the_cell_resumed_elsewhere_from_its_checkpoint(
        cluster, pg, places, tmp_path):
    driver, shared, _ = places
    path = toy_experiment(driver, "killnode", {"Long": {"model": "mlp", "train.epochs": LONG},
                                               "Short": {"model": "mlp", "data": "circles"}})
    sweep = subprocess.Popen(sweep_command(path, pg, shared, cluster), cwd=driver, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    store = open_store(pg)
    try:
        run, epochs, pid, rows_before = _kill_node_of(cluster, store, sweep, "Long")
        out, err = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        add_worker_node(cluster)  # the next tests have two nodes again
    assert sweep.returncode == 0, err
    assert "2 finished" in out and len(store.list_runs(sweep="killnode")) == 2
    long = store.get_run(run.id)
    assert long.status == "finished" and long.env["pid"] != pid  # finished by another process, on the other node
    assert train_epochs(store, long.id) == list(range(1, LONG + 1)) and duplicated(store, long.id) == []
    kept = [row for row in rows_before if row[1] <= epochs]
    assert set(kept) <= set(metric_ids(store, long.id))  # resumed: the rows before the kill were never rewritten
    cfg = next(c for c in expand(load_experiment(path), None, {}, str(path)) if c.label == "Long").cfg
    baseline = execute(cfg, open_store(f"sqlite:///{tmp_path / 'baseline' / 's.sqlite'}"), RunOptions(quiet=True))
    summary = store.summary(long.id)
    for key in ("test/acc", "test/loss", "valid/loss", "train/loss", "best_epoch"):
        assert summary[key] == pytest.approx(baseline.metrics[key], rel=1e-6), key


def _kill_node_of(cluster, store, sweep: subprocess.Popen, cell: str):
    """Once `cell` has checkpointed 3 epochs, kill its node (raylet, object store, its workers): as a
    machine that loses power. Returns (run, checkpointed epochs, pid of the killed worker, its metric rows)."""
    import psutil

    deadline = time.time() + 120
    while time.time() < deadline and sweep.poll() is None:
        row = next((r for r in store.list_runs(status="running") if r.cell == cell and r.owner), None)
        if row and len(train_epochs(store, row.id)) >= 3:
            pid = row.env["pid"]
            node = next(n for n in cluster.worker_nodes
                        if n.all_processes["raylet"][0].process.pid in {p.pid for p in psutil.Process(pid).parents()})
            os.kill(pid, signal.SIGSTOP)  # frozen first: removing a node takes longer than the epochs left
            cluster.remove_node(node, allow_graceful=False)
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)  # its node is gone: so is every process on it
            time.sleep(0.5)
            epochs = len(train_epochs(store, row.id))  # the last of them may not have reached its checkpoint
            return row, epochs - 1, pid, metric_ids(store, row.id)
        time.sleep(0.05)
    pytest.fail(f"the {cell} cell never reached epoch 3 on a worker node: {sweep.communicate()[1][-2000:]}")


@needs_postgres
def test_ctrl_c_of_the_driver_leaves_resumable_runs_and_the_same_command_finishes_them(
        cluster, pg, places):
    driver, shared, _ = places
    path = toy_experiment(driver, "ctrlc", {"A": {"model": "mlp"}, "B": {"model": "mlp", "data": "circles"},
                                            "C": {"model": "mlp_numpy"}}, epochs=INTERRUPTED)
    command = sweep_command(path, pg, shared, cluster)
    sweep = subprocess.Popen(command, cwd=driver, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(pg)
    deadline = time.time() + 120
    while time.time() < deadline:
        running = [r for r in store.list_runs(status="running") if len(train_epochs(store, r.id)) >= 2]
        if len(running) == 2:
            break
        time.sleep(0.05)
    else:
        sweep.kill()
        pytest.fail(f"two cells never got going: {sweep.communicate()[1][-2000:]}")
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=90)
    assert sweep.returncode == 130 and "run the same command again" in err
    stopped = {r.cell: r for r in store.list_runs(sweep="ctrlc")}
    assert {stopped[r.cell].status for r in running} == {"interrupted"}, \
        [(r.cell, r.status, r.error) for r in stopped.values()]
    assert all(r.owner is None for r in stopped.values())  # nobody holds anything: resumable at once
    before = {r.id: metric_ids(store, r.id) for r in running}
    assert min(len(train_epochs(store, r.id)) for r in running) < INTERRUPTED  # stopped mid-training

    again = subprocess.run(command, cwd=driver, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    finished = store.list_runs(sweep="ctrlc")
    assert len(finished) == 3 and {r.status for r in finished} == {"finished"}
    for run in running:
        assert train_epochs(store, run.id) == list(range(1, INTERRUPTED + 1)) and duplicated(store, run.id) == []
        last = max(r[1] for r in before[run.id])  # rows of the epoch it was in go; the final evaluation's too
        kept = [row for row in before[run.id] if row[1] < last and row[2] not in ("best", "test")]
        assert set(kept) <= set(metric_ids(store, run.id))  # resumed: the rows of its checkpointed epochs stay


# ------------------------------------------------------------------------------------- placement
@needs_postgres
def test_device_auto_on_a_cluster_with_gpus_asks_for_a_gpu_and_never_trains_on_the_cpu(cluster, pg, places):
    """A node that reports a GPU (a Ray resource; this machine has no CUDA) stands in for a GPU node. `auto`
    must resolve against the cluster, not the driver's CPU: the cell is a CUDA run, Ray places it on the GPU
    node, and there it fails the way a node without a working GPU would, instead of training on the CPU."""
    driver, shared, _ = places
    cwd = Path.cwd()
    os.chdir(_folder(cluster.root / "gpu-node"))
    try:
        gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    finally:
        os.chdir(cwd)
    try:
        cluster.wait_for_nodes()
        path = toy_experiment(driver, "onthegpu", {"MLP": {"model": "mlp"}}, epochs=1)
        result = invoke("sweep", path, "--executor", "ray", "--address", cluster.address, "--store", plain(pg),
                        "--artifacts", shared)
        assert result.exit_code != 0
        (row,) = open_store(pg).list_runs(sweep="onthegpu")
        assert row.config["device"] == "cuda" and row.status == "failed"
        assert "no CUDA device is available" in row.error  # raised on the GPU node, before any training
        assert not open_store(pg).metrics(row.id)
    finally:
        cluster.remove_node(gpu_node)


@needs_postgres
def test_a_plugin_reaches_every_node(cluster, pg, places):
    """The cell's model comes from a file of the user's (here the example, at one path every node sees): its
    tasks get $SWEEPLAB_PLUGINS, load it before they read the job, and train it on the nodes."""
    driver, shared, _ = places
    plugin = Path(__file__).resolve().parent.parent / "examples" / "my_cnn.py"
    spec = {"name": "ownmodel", "task": "image", "plugins": [str(plugin)],
            "base": {"data": "digits", "data.train_limit": 128, "data.valid_size": 32, "data.test_limit": 64,
                     "train.epochs": 1, "model.width": 8},
            "variants": {"MyCNN": {"model": "my_cnn"}}, "columns": [{"title": "Test acc", "metric": "test/acc1"}]}
    path = driver / "own.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "sweep", str(path), "--executor", "ray", "--address", cluster.address,  # a
                             "--store", plain(pg), "--artifacts", str(shared)],  # process of its own: the plugin
                            capture_output=True, text=True, timeout=300)  # stays out of this one's registries
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = open_store(pg).list_runs(sweep="ownmodel")
    assert run.status == "finished" and run.env["pid"] != os.getpid()  # trained on a node
    assert run.config["plugins"][0]["path"] == str(plugin)


@needs_postgres
def test_a_training_function_runs_on_the_nodes(cluster, pg, places):
    """`task: FILE.py:FUNCTION`: the function reaches the nodes ($SWEEPLAB_FUNCTIONS in the tasks' runtime
    environment), runs there, and its metrics reach the store."""
    driver, shared, _ = places
    loop = Path(__file__).resolve().parent.parent / "examples" / "mnist_loop.py"
    spec = {"name": "ownloop", "task": f"{loop}:train", "base": {"epochs": 1, "train_size": 256, "test_size": 128},
            "axes": {"lr": [0.01]}, "columns": [{"title": "Test acc", "metric": "test/acc"}]}
    path = driver / "loop.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "sweep", str(path), "--executor", "ray", "--address", cluster.address,
                             "--store", plain(pg), "--artifacts", str(shared)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = open_store(pg).list_runs(sweep="ownloop")
    assert run.status == "finished" and run.env["pid"] != os.getpid() and run.task == "mnist_loop:train"
    assert 0 <= open_store(pg).summary(run.id)["test/acc"] <= 1


def test_device_auto_resolves_to_what_the_cluster_has():
    assert resolve("toy2d", {"device": "auto"}, auto_device="cuda").device == "cuda"
    assert resolve("toy2d", {"device": "auto"}, auto_device="cpu").device == "cpu"
    assert resolve("toy2d", {"device": "cpu"}, auto_device="cuda").device == "cpu"  # an explicit choice stands


# ------------------------------------------------------------------------------------- bad input
def _nothing_started(url: str) -> None:
    store = open_store(url)
    assert store.list_runs() == [] and store.list_sweeps() == []


@needs_postgres
def test_bad_input_is_one_line_and_starts_nothing(cluster, pg, places, monkeypatch):
    driver, shared, _ = places
    path = toy_experiment(driver, "bad", {"MLP": {"model": "mlp"}}, epochs=1)
    args = ["sweep", path, "--executor", "ray", "--store", plain(pg)]

    nobody = invoke(*args, "--address", "127.0.0.1:1", "--artifacts", shared)
    assert nobody.exit_code == 2 and "no Ray cluster answers at 127.0.0.1:1" in nobody.stderr
    assert "ray start --head" in nobody.stderr and len(nobody.stderr.strip().splitlines()) == 1

    # Nodes of one machine see all its folders; a folder only the driver's machine has is what a node
    # elsewhere reports when the file the driver wrote is not there to read.
    monkeypatch.setattr(executors, "_write_marker", lambda marker, token: marker.write_text("not the token"))
    local = invoke(*args, "--address", cluster.address, "--artifacts", shared)
    assert local.exit_code == 2 and "a folder only this machine sees" in local.stderr
    assert "node 127.0.0.1" in local.stderr and len(local.stderr.strip().splitlines()) == 1
    monkeypatch.undo()
    monkeypatch.chdir(driver)

    memory = invoke(*args, "--address", cluster.address, "--artifacts", "memory://sweeps")
    assert memory.exit_code == 2 and "inside one process" in memory.stderr

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    missing = invoke(*args, "--address", cluster.address, "--artifacts", shared)
    assert missing.exit_code == 2 and "pip install 'sweeplab[ray]'" in missing.stderr
    _nothing_started(pg)


def test_no_cluster_at_all_is_one_line(tmp_path, monkeypatch):
    ray.shutdown()  # this process may still be connected to the cluster of the tests above
    monkeypatch.setattr("ray._private.utils.read_ray_address", lambda *a: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = toy_experiment(tmp_path, "none", {"MLP": {"model": "mlp"}}, epochs=1)
    result = invoke("sweep", path, "--executor", "ray", "--store", "postgresql://u@127.0.0.1:1/db")
    assert result.exit_code == 2 and "no running Ray cluster found" in result.stderr


def test_a_task_carries_the_url_without_password_and_the_worker_finds_it_in_its_environment(monkeypatch):
    url = "postgresql://alice:s3cret@db.example:5432/sweeps"
    assert executors.url_without_password(url) == "postgresql://alice@db.example:5432/sweeps"
    monkeypatch.setenv("SWEEPLAB_STORE", url)
    assert executors.worker_store_url("postgresql://alice@db.example:5432/sweeps") == url
    assert executors.worker_store_url("postgresql://alice@other:5432/sweeps") == "postgresql://alice@other:5432/sweeps"
    monkeypatch.delenv("SWEEPLAB_STORE")
    assert executors.worker_store_url("postgresql://alice@db.example:5432/sweeps").endswith("@db.example:5432/sweeps")


def test_a_retried_cell_waits_for_the_dead_nodes_lease_then_resumes_the_run(tmp_path, monkeypatch, one_thread):
    """What a Ray retry does when the node that held the cell's run is gone: its heartbeats stop, the lease
    runs out, and the retry takes the run over (a process of another host is never presumed dead)."""
    from sweeplab.config import run_key
    from sweeplab.sweep.worker import Job

    monkeypatch.setenv("SWEEPLAB_LEASE_S", "1.5")
    url = f"sqlite:///{tmp_path / 'runs' / 's.sqlite'}"
    path = toy_experiment(tmp_path, "retry", {"MLP": {"model": "mlp"}}, epochs=2)
    (cell,) = expand(load_experiment(path), None, {}, str(path))
    store = open_store(url)
    held = store.create_run(key=run_key(cell.cfg), name="retry/MLP/1111", task="toy2d", config=cell.cfg.to_dict(),
                            env={}, sweep="retry", cell="MLP", owner="node-7 4242 abcd1234")
    store._leases.clear()  # noqa: SLF001 - the claim is that dead node's, not this process's
    start = time.perf_counter()
    job = Job(0, cell.cfg, "retry/MLP/1111", "retry", "MLP", None, False)
    outcome = executors.ray_cell(0, pickle.dumps(job), url, str(tmp_path / "shared"), 1)
    assert outcome.status == "finished" and outcome.run_id == held
    assert time.perf_counter() - start >= 1.5  # not before the lease ran out
    folder = tmp_path / "runs" / held  # where the first claim put its files: the retry keeps using them
    assert open_store(url).get_run(held).artifacts == str(folder) and (folder / "checkpoints").is_dir()
