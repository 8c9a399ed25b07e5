"""Ray throughput: the same 16-cell toy2d sweep with the local executor (2 workers, 1 thread each) and on a
local Ray cluster of 2 one-CPU nodes (plus a head that trains nothing), both against one PostgreSQL server
and a shared artifact folder. Prints one JSON object: wall time and cells per minute of each, the Ray
cluster's start-up (paid once, not per cell) and an empty task's round trip. Per cell: its own time (build,
train, evaluate, as the worker measured it) and the executor's overhead, what the 2 slots spent on anything
else (task start, worker start-up, store and artifact traffic outside the run) divided by the 16 cells; and
(Ray wall - local wall) x 2 / 16, which also holds the cells' slowdown under Ray's daemons on the same cores.

    SWEEPLAB_TEST_POSTGRES=postgresql://USER:PASSWORD@localhost/postgres .venv/bin/python benchmarks/ray_throughput.py
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml
from rich.console import Console

from sweeplab.sweep.run import SweepOptions, run_sweep

# 16 cells of a few seconds each on this CPU (as benchmarks/sweep_throughput.py's toy2d sweep)
SWEEP = {"name": "raybench", "task": "toy2d", "base": {"model": "mlp", "train.epochs": 100, "data.n_samples": 1000},
         "axes": {"data": ["moons", "circles"], "model.hidden": [16, 32], "optim.lr": [0.03, 0.1, 0.3, 1.0]},
         "columns": [{"title": "Test acc", "metric": "test/acc"}]}
SLOTS = 2


def fresh_database(admin_url: str) -> str:
    name = f"sweeplab_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"create database {name}"))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def timed_sweep(path: Path, opts: SweepOptions) -> dict[str, float]:
    """Wall time of the sweep, cells per minute, the cells' own time (build + train + evaluate, measured in
    the worker) and what the slots spent on anything else, per cell: the executor's overhead."""
    start = time.perf_counter()
    result = run_sweep(path, opts, Console(file=io.StringIO()))
    wall = time.perf_counter() - start
    assert result.statuses.count("finished") == len(result.cells), result.statuses
    cells = [o.wall_s for o in result.outcomes]
    return {"wall_s": round(wall, 1), "cells_per_min": round(len(cells) * 60 / wall, 1),
            "cell_median_s": round(statistics.median(cells), 2),
            "overhead_per_cell_s": round((wall * SLOTS - sum(cells)) / len(cells), 2)}


def start_cluster(root: Path):
    """Head with 0 CPUs + 2 one-CPU nodes on 127.0.0.1, each started in its own folder."""
    import ray
    from ray.cluster_utils import Cluster

    sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False  # keep every address on loopback
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    cwd = Path.cwd()
    try:
        for name in ("head", "node-a", "node-b"):
            (root / name).mkdir()
        os.chdir(root / "head")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                "include_dashboard": False})
        for name in ("node-a", "node-b"):
            os.chdir(root / name)
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    finally:
        os.chdir(cwd)
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def task_round_trip_s(n: int = 20) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def nothing() -> None:
        return None

    ray.get(nothing.remote())  # warm: a worker process per node
    start = time.perf_counter()
    for _ in range(n):
        ray.get(nothing.remote())
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("SWEEPLAB_TEST_POSTGRES"),
                        help="a PostgreSQL URL whose role may create databases")
    args = parser.parse_args()
    if not args.store:
        sys.exit("error: --store postgresql://... (or $SWEEPLAB_TEST_POSTGRES) is needed: Ray needs a shared store")
    password = sa.engine.make_url(args.store).password
    if password:
        os.environ["PGPASSWORD"] = password  # the nodes read it; the URL they get has none
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "raybench.yaml"
        path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
        local = timed_sweep(path, SweepOptions(workers=SLOTS, store_url=fresh_database(args.store),
                                                    artifacts=str(root / "local"), interactive=False))
        start = time.perf_counter()
        cluster = start_cluster(root)
        startup = time.perf_counter() - start
        try:
            round_trip = task_round_trip_s()
            store = fresh_database(args.store)
            plain = sa.engine.make_url(store)
            plain = sa.engine.URL.create(plain.drivername, plain.username, None, plain.host, plain.port, plain.database)
            on_ray = timed_sweep(path, SweepOptions(executor="ray", address=cluster.address,
                                                      store_url=plain.render_as_string(hide_password=False),
                                                      artifacts=str(root / "shared"), interactive=False))
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
    print(json.dumps({
        "cells": 16, "slots": SLOTS, "load_1min": round(os.getloadavg()[0], 1), "local": local,
        "ray": {**on_ray, "cluster_start_s": round(startup, 1), "empty_task_round_trip_ms": round(round_trip * 1000, 1)},
        "ray_wall_over_local_per_cell_s": round((on_ray["wall_s"] - local["wall_s"]) * SLOTS / 16, 2),
    }))


if __name__ == "__main__":
    main()
