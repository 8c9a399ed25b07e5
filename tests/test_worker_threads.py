"""A sweep worker's OpenMP settings: idle threads sleep instead of spinning, unless the user chose otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

from sweeplab.sweep.worker import quiet_openmp


def test_quiet_openmp_makes_idle_threads_passive(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    quiet_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_quiet_openmp_keeps_the_users_choice(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_spawned_worker_sets_it_before_torch_loads():
    """A spawned worker imports this module before worker_main runs: torch (and OpenMP) must not be loaded
    by then, or the setting would come too late."""
    out = subprocess.run([sys.executable, "-c", "import sys, sweeplab.sweep.worker; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
