"""The full-scale path on the CPU: a checkpoint resumes onto another device, damage is told from trouble of the
moment, `max_steps` holds across a resume, a process that lost its run writes no checkpoint, a stalled run
ends, and the device a run reports is the one it trained on."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa
import torch
from tests.test_checkpoints import best_at_epoch_1, damage, interrupt_in_epoch, rows

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.engine.watchdog import Watchdog
from sweeplab.io import DamagedFile, UnreadableFile
from sweeplab.store import checkpoint, open_store
from sweeplab.store.db import LeaseLost
from sweeplab.store.schema import runs
from sweeplab.tasks import resolve
from sweeplab.tasks.toy2d import Toy2DTask

TOY = {"model": "mlp", "data.n_samples": 200, "train.batch_size": 32, "train.epochs": 3, "device": "cpu",
       "train.keep_checkpoints": "all"}


def interrupted_toy(store, monkeypatch, **overrides):
    """A toy2d run stopped during epoch 3: checkpoints 1 and 2 on disk, their rows in the store."""
    cfg = resolve("toy2d", {**TOY, **overrides})
    restore = interrupt_in_epoch(monkeypatch, 3)
    first = execute(cfg, store, RunOptions(quiet=True))
    restore()
    assert first.status == "interrupted"
    return cfg, first.run_id


# ------------------------------------------------------------------------------- resume anywhere
@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_a_checkpoint_resumes_onto_another_device(store_url, monkeypatch):
    """Loading onto the run's device put the CPU generator's state there, and torch.set_rng_state refused it;
    the `meta` device stands in for a GPU: the file loads onto the CPU, the state dicts go to the device."""
    store = open_store(store_url)
    cfg, run_id = interrupted_toy(store, monkeypatch)
    saved = checkpoint.load(checkpoint.epoch_path(store.run_dir(run_id), 2))
    task = Toy2DTask(cfg, torch.device("meta"))
    model = task.build()
    trainer = Trainer(task, model, store=store, run_id=run_id, run_dir=store.run_dir(run_id), quiet=True)
    trainer.restore(2)
    assert trainer.state.epoch == 2 and next(model.parameters()).device.type == "meta"
    assert torch.equal(torch.get_rng_state(), saved["rng"]["cpu"])
    trainer.recorder.close()


@pytest.mark.parametrize("rng", ["cuda-states", "a-bare-tensor"])
def test_generator_states_of_other_machines_and_older_checkpoints_restore(rng):
    """A checkpoint written on a GPU carries CUDA generator states: a machine without CUDA restores the CPU's
    and has no use for the rest. Checkpoints from before the dict held the CPU state alone."""
    state = torch.random.get_rng_state()
    saved = {"cpu": state, "cuda": [torch.zeros(16, dtype=torch.uint8)]} if rng == "cuda-states" else state
    torch.manual_seed(3)
    checkpoint.set_rng_state(saved)
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------------------ damage vs trouble
@pytest.mark.parametrize("trouble", [OSError(errno.EIO, "Input/output error"), OSError(errno.ESTALE, "Stale file handle"),
                                     PermissionError(errno.EACCES, "Permission denied"), MemoryError()],
                         ids=["EIO", "ESTALE", "permission", "out-of-memory"])
def test_trouble_reading_a_checkpoint_fails_the_run_and_keeps_its_history(trouble, store_url, monkeypatch, tmp_path):
    store = open_store(store_url)
    cfg, run_id = interrupted_toy(store, monkeypatch)
    history, kept = rows(store, run_id), checkpoint.list_epochs(store.run_dir(run_id))
    load = torch.load

    def failing(*args, **kwargs):
        raise trouble

    monkeypatch.setattr(torch, "load", failing)
    with pytest.raises(UnreadableFile) as caught:
        execute(cfg, store, RunOptions(quiet=True))
    assert not isinstance(caught.value, DamagedFile) and "may be sound" in str(caught.value)
    row = store.get_run(run_id)
    assert row.status == "failed" and row.owner is None
    assert rows(store, run_id) == history and checkpoint.list_epochs(store.run_dir(run_id)) == kept == [1, 2]
    assert not [p for p in (store.run_dir(run_id) / "checkpoints").iterdir() if "damaged" in p.name]

    monkeypatch.setattr(torch, "load", load)  # the network folder is back: the next attempt resumes after epoch 2
    reference = execute(cfg, open_store(f"sqlite:///{tmp_path / 'ref' / 's.sqlite'}"), RunOptions(quiet=True))
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.status == "finished" and resumed.metrics["test/loss"] == reference.metrics["test/loss"]


def test_a_damaged_checkpoint_is_set_aside_never_deleted(store_url, monkeypatch):
    store = open_store(store_url)
    cfg, run_id = interrupted_toy(store, monkeypatch, **{"train.keep_checkpoints": "last"})
    folder = store.run_dir(run_id) / "checkpoints"
    damage(folder / "epoch_002.pt", "truncated")
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.status == "finished"
    (aside,) = [p.name for p in folder.iterdir() if "damaged" in p.name]
    assert aside.startswith("epoch_002.pt.damaged-") and checkpoint.list_epochs(store.run_dir(run_id))[-1] == 3


# ------------------------------------------------------------------------------ max_steps, started_at
def test_max_steps_holds_exactly_across_a_resume_after_the_last_step(store_url, monkeypatch):
    """7 steps of 5 a epoch: the cap falls inside epoch 2. Stopped after its last checkpoint, the resumed run
    took one more step and a third epoch."""
    store = open_store(store_url)
    cfg = resolve("toy2d", {**TOY, "train.max_steps": 7, "train.epochs": 10})
    final = Trainer.evaluate_final

    def killed_before_the_end(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate_final", killed_before_the_end)
    first = execute(cfg, store, RunOptions(quiet=True))
    monkeypatch.setattr(Trainer, "evaluate_final", final)
    resumed = execute(cfg, store, RunOptions(quiet=True))
    row = store.get_run(first.run_id)
    assert resumed.status == "finished" and (row.step, row.epoch) == (7, 2)
    assert sorted({m.epoch for m in store.metrics(row.id) if m.split == "train"}) == [1, 2]


def test_a_resumed_run_starts_its_clock_again(store_url, monkeypatch):
    store = open_store(store_url)
    cfg, run_id = interrupted_toy(store, monkeypatch)
    stopped = store.get_run(run_id)
    time.sleep(0.05)
    execute(cfg, store, RunOptions(quiet=True))
    assert store.get_run(run_id).started_at > stopped.ended_at  # the current owner's start, not the first one's


# ------------------------------------------------------------------------------ fencing, watchdog
def test_a_process_that_lost_its_run_writes_no_checkpoint(store_url, monkeypatch):
    """Another process takes the run over while this one trains epoch 2 (it stalled past its lease): the
    checkpoint it then writes must not replace the new owner's, nor may it prune any."""
    store = open_store(store_url)
    cfg = resolve("toy2d", TOY)
    train_epoch = Trainer.train_epoch

    def taken_over_in_epoch_2(self, epoch):
        lr = train_epoch(self, epoch)
        if epoch == 2:
            with store.engine.begin() as conn:
                conn.execute(sa.update(runs).where(runs.c.id == self.run_id).values(owner="elsewhere 1 newowner"))
        return lr

    monkeypatch.setattr(Trainer, "train_epoch", taken_over_in_epoch_2)
    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch, lr: None)  # its metric rows are fenced already
    with pytest.raises(LeaseLost):
        execute(cfg, store, RunOptions(quiet=True))
    (row,) = store.list_runs()
    folder = store.run_dir(row.id) / "checkpoints"
    assert checkpoint.list_epochs(store.run_dir(row.id)) == [1] and len(list(folder.iterdir())) == 1  # no temp file
    assert row.owner == "elsewhere 1 newowner"


def test_the_watchdog_fires_on_a_stall_and_not_while_steps_come():
    fired = []
    with Watchdog(0.3, fired.append, exit_process=False) as dog:
        for _ in range(8):
            time.sleep(0.1)
            dog.beat()
        assert not fired
        time.sleep(1.0)
    assert len(fired) == 1 and fired[0] >= 0.3


def test_a_run_whose_steps_stop_ends_failed_and_resumable(store_url, tmp_path):
    """A step that never returns (a hung collective): the heartbeat alone would hold the run forever."""
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from sweeplab.engine.launch import execute
        from sweeplab.engine.runner import RunOptions
        from sweeplab.store import open_store
        from sweeplab.tasks import resolve
        from sweeplab.tasks.toy2d import Toy2DTask

        step = Toy2DTask.train_step
        def hangs_at_step_8(self, model, batch, calls=[0]):
            calls[0] += 1
            if calls[0] == 8:
                time.sleep(3600)
            return step(self, model, batch)
        Toy2DTask.train_step = hangs_at_step_8
        execute(resolve("toy2d", {TOY!r}), open_store({store_url!r}), RunOptions(quiet=True))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SWEEPLAB_STALL_S": "2"})
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "stalled" in proc.stderr and proc.stderr.count("\n") == 1
    store = open_store(store_url)
    (row,) = store.list_runs()
    assert row.status == "failed" and "stalled" in row.error and row.owner is None
    resumed = execute(resolve("toy2d", TOY), store, RunOptions(quiet=True))
    assert resumed.run_id == row.id and resumed.status == "finished"


# ------------------------------------------------------------------------------ what is recorded
def test_the_best_epochs_checkpoint_is_kept_beside_the_last(store_url, monkeypatch):
    best_at_epoch_1(monkeypatch)
    result = execute(resolve("toy2d", {**TOY, "train.keep_checkpoints": "last"}), open_store(store_url),
                     RunOptions(quiet=True))
    assert result.metrics["best_epoch"] == 1
    assert checkpoint.list_epochs(open_store(store_url).run_dir(result.run_id)) == [1, 3]


def test_mlp_numpy_records_the_cpu_it_trains_on_whatever_was_asked(store_url, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU, asked for it
    monkeypatch.setattr("sweeplab.models.size.device_memory", lambda device: 2**40)  # its memory, asked of CUDA
    result = execute(resolve("toy2d", {**TOY, "model": "mlp_numpy", "device": "cuda"}), open_store(store_url),
                     RunOptions(quiet=True))
    assert result.status == "finished" and result.device == "cpu"
    assert open_store(store_url).get_run(result.run_id).env["device"] == "cpu"
