"""Engine pieces: schedules, optimizers, atomic checkpoints, precision, the store's schema."""
from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
import torch

from sweeplab.config import TrainConfig
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.schedule import get_lr
from sweeplab.models.optim import create_optimizer, list_optimizers
from sweeplab.store import Metric, checkpoint, open_store
from sweeplab.store.schema import MIGRATIONS
from sweeplab.tasks import resolve


def lr(schedule: str, **kw) -> float:
    cfg = TrainConfig(schedule=schedule, step_size=2, gamma=0.5)
    args = {"epoch": 1, "step": 0, "total_steps": 100, "plateau_drops": 0} | kw
    return get_lr(cfg, 1.0, **args)


def test_schedules_are_pure_functions_of_progress():
    assert lr("constant", epoch=9, step=90) == 1.0
    assert [lr("step", epoch=e) for e in (1, 2, 3, 5)] == [1.0, 1.0, 0.5, 0.25]
    assert lr("cosine", step=0) == 1.0 and lr("cosine", step=50) == pytest.approx(0.5) and lr("cosine", step=100) == 0
    assert lr("plateau", plateau_drops=2) == 1 / 16  # word_language_model divides by 4 each time


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_takes_a_step(name):
    cfg = resolve("lm", {"optim": name, "optim.lr": 0.1}).optim
    weight = torch.nn.Parameter(torch.ones(3))
    opt = create_optimizer(name, cfg, [weight])
    (weight**2).sum().backward()
    opt.step()
    assert (weight < 1).all()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "epoch_001.pt"
    checkpoint.save_atomic({"w": torch.ones(2)}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"w": torch.zeros(2)}, path)
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(2))  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["epoch_001.pt"]  # no temp file left behind


def test_checkpoint_load_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(checkpoint.UnreadableFile, match="never unpickled"):
        checkpoint.load(path)


def test_store_migrates_once_and_records_versions(store_url):
    store = open_store(store_url)
    assert store.version() == len(MIGRATIONS)
    again = open_store(store_url)  # a second open applies nothing
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from schema_version")).scalar() == len(MIGRATIONS)
        assert conn.execute(sa.text("pragma journal_mode")).scalar() == "wal"


def test_store_keeps_nan_as_null_and_reads_it_back(store_url):
    store = open_store(store_url)
    run_id = store.create_run(key="k", name="n", task="lm", config={}, env={})
    store.log_metrics(run_id, [Metric(1, 1, "train", "loss", math.nan), Metric(2, 1, "train", "loss", 2.0)])
    values = [m.value for m in store.metrics(run_id)]
    assert math.isnan(values[0]) and values[1] == 2.0


def test_bf16_autocast_run_trains_like_fp32(tiny_corpus, store_url):
    base = {"data": "text", "data.path": str(tiny_corpus), "model.emsize": 32, "model.nhid": 32, "model.nlayers": 1,
            "train.batch_size": 4, "train.bptt": 10, "train.epochs": 2, "model.dropout": 0.0}
    store = open_store(store_url)
    fp32 = execute(resolve("lm", base), store, RunOptions(quiet=True))
    bf16 = execute(resolve("lm", {**base, "train.precision": "bf16"}), store, RunOptions(quiet=True))
    uniform = math.log(40)  # the tiny corpus has about 40 words
    assert bf16.status == "finished" and bf16.metrics["valid/loss"] < 0.5 * uniform
    assert bf16.metrics["valid/loss"] == pytest.approx(fp32.metrics["valid/loss"], abs=0.25)
