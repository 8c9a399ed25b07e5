"""Checkpoints and caches that survive damage: one safe load naming the file, resume falling back to the
previous good checkpoint (or a clean restart), damaged caches rebuilt, the summary kept across a resume."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from sweeplab import io
from sweeplab.data import images
from sweeplab.data.paths import cache_dir
from sweeplab.data.text import load_corpus
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks.resolve import resolve

TINY = {"data": "text", "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "model.dropout": 0.0,
        "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.epochs": 3}
TIMINGS = ("ms_per_batch", "_per_s", "time_s")  # wall-clock values: never equal between two processes


def tiny_cfg(corpus: Path, **overrides):
    return resolve("lm", {**TINY, "data.path": str(corpus), **overrides})


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    else:  # a plain pickle, not a torch file
        path.write_bytes(pickle.dumps({"a": 1}))


def rows(store, run_id: str) -> list[tuple]:
    return [(m.epoch, m.split, m.name, m.value) for m in store.metrics(run_id) if not m.name.endswith(TIMINGS)]


def best_at_epoch_1(monkeypatch) -> None:
    """The validation loss rises every epoch from 1.0: epoch 1 is the best."""
    evaluate = Trainer.evaluate_split
    calls = {"valid": 0}

    def rising(self, split):
        values = evaluate(self, split)
        if split == "valid":
            calls["valid"] += 1
            values["loss"] = float(calls["valid"])
        return values

    monkeypatch.setattr(Trainer, "evaluate_split", rising)


def interrupt_in_epoch(monkeypatch, epoch: int):
    original = Trainer.train_epoch

    def stopped(self, e):
        if e == epoch:
            raise KeyboardInterrupt  # as Ctrl-C or SIGTERM would, mid-run
        return original(self, e)

    monkeypatch.setattr(Trainer, "train_epoch", stopped)
    return lambda: monkeypatch.setattr(Trainer, "train_epoch", original)


def test_an_error_raised_while_a_ctrl_c_unwinds_is_the_interrupt(tiny_corpus, tmp_path, monkeypatch):
    """SQLAlchemy's PostgreSQL pre-ping, cut short by Ctrl-C, restores autocommit on the busy connection in a
    `finally` and raises ProgrammingError in place of the KeyboardInterrupt (seen under the Ray executor): the run
    was stopped, not broken, and resumes."""
    from sweeplab.errors import interrupted

    original = Trainer.train_epoch

    def cut_short(self, e):
        if e == 2:
            try:
                raise KeyboardInterrupt
            finally:
                raise RuntimeError("can't change 'autocommit' now: connection in transaction status ACTIVE")
        return original(self, e)

    monkeypatch.setattr(Trainer, "train_epoch", cut_short)
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    first = execute(tiny_cfg(tiny_corpus), store, RunOptions(quiet=True))
    assert first.status == "interrupted" and store.get_run(first.run_id).error == "interrupted after epoch 1"
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert execute(tiny_cfg(tiny_corpus), store, RunOptions(quiet=True)).status == "finished"

    try:
        raise ValueError("unrelated")
    except ValueError as unrelated:
        assert not interrupted(unrelated)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as stop:
            raise OSError("cleanup failed") from stop
    except OSError as wrapped:
        assert interrupted(wrapped)


# ------------------------------------------------------------------------------------ safe load
@pytest.mark.parametrize("how", ["truncated", "garbage", "pickle"])
def test_a_damaged_file_is_one_typed_error_naming_it(tmp_path, how):
    path = tmp_path / "epoch_001.pt"
    io.save_atomic({"model": {"w": torch.ones(3)}}, path)
    damage(path, how)
    with pytest.raises(io.UnreadableFile) as caught:
        io.load(path)
    assert str(path) in str(caught.value) and "weights_only" not in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None


def test_pickled_code_is_refused_without_advising_weights_only_false(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(io.UnreadableFile, match="never unpickled") as caught:
        io.load(path)
    assert "weights_only" not in str(caught.value)


def test_contents_of_the_wrong_shape_are_unreadable(tmp_path):
    path = tmp_path / "c.pt"
    io.save_atomic([1, 2, 3], path)
    with pytest.raises(io.UnreadableFile, match=r"expected the keys \['model'\], found a list"):
        io.load(path, keys=("model",))
    io.save_atomic({"other": 1}, path)
    with pytest.raises(io.UnreadableFile, match=r"expected the keys \['model'\]"):
        checkpoint.load(path, keys=("model",))


# ------------------------------------------------------------------------------------- caches
@pytest.mark.parametrize("how", ["garbage", "pickle", "truncated"])
def test_a_damaged_token_cache_is_rebuilt_with_a_warning(tiny_corpus, capsys, how, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_CACHE", str(tmp_path / "cache"))  # this test's cache alone
    corpus = load_corpus("text", str(tiny_corpus))
    (cached,) = cache_dir().glob("tokens-*.pt")
    damage(cached, how)
    again = load_corpus("text", str(tiny_corpus))
    assert torch.equal(again.train, corpus.train) and again.dictionary.idx2word == corpus.dictionary.idx2word
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cached) in err and "rebuilding" in err and "weights_only" not in err
    assert io.load(cached)["words"] == corpus.dictionary.idx2word  # the rebuilt cache is good again


def test_a_damaged_image_cache_is_rebuilt_with_a_warning(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPLAB_CACHE", str(tmp_path / "cache"))  # this test's cache alone
    monkeypatch.setattr(images, "_MEMO", {})
    first = images.load_decoded("digits")
    (cached,) = cache_dir().glob("images-digits-*.pt")
    damage(cached, "truncated")
    monkeypatch.setattr(images, "_MEMO", {})  # a new process: nothing in memory
    again = images.load_decoded("digits")
    assert torch.equal(again["train_x"], first["train_x"]) and again["classes"] == first["classes"]
    err = capsys.readouterr().err
    assert str(cached) in err and "rebuilding" in err
    assert set(io.load(cached)) == set(first)


# ------------------------------------------------------------------------------------- resume
@pytest.fixture
def reference(tiny_corpus, tmp_path):
    """An uninterrupted run of the same config, in a store of its own."""
    def make(cfg):
        store = open_store(f"sqlite:///{tmp_path / 'ref' / 's.sqlite'}")
        result = execute(cfg, store, RunOptions(quiet=True))
        return store, result

    return make


def test_a_truncated_last_checkpoint_resumes_from_the_previous_one(tiny_corpus, tmp_path, monkeypatch, capsys,
                                                                   reference, one_thread):
    cfg = tiny_cfg(tiny_corpus, **{"train.keep_checkpoints": "last"})
    ref_store, ref = reference(cfg)
    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    restore = interrupt_in_epoch(monkeypatch, 3)
    first = execute(cfg, store, RunOptions(quiet=True))
    restore()
    run_dir = store.run_dir(first.run_id)
    assert first.status == "interrupted" and checkpoint.list_epochs(run_dir) == [1, 2]  # previous kept mid-run
    damage(checkpoint.epoch_path(run_dir, 2), "truncated")
    capsys.readouterr()

    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.status == "finished"
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and str(checkpoint.epoch_path(run_dir, 2)) in warning
    assert rows(store, first.run_id) == rows(ref_store, ref.run_id)  # epoch 2 retrained once, nothing lost
    assert checkpoint.list_epochs(run_dir) == [3]  # keep_checkpoints=last applies once the run ends


def test_with_no_readable_checkpoint_the_run_restarts_from_scratch(tiny_corpus, tmp_path, monkeypatch, capsys,
                                                                   reference, one_thread):
    cfg = tiny_cfg(tiny_corpus)
    ref_store, ref = reference(cfg)
    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    restore = interrupt_in_epoch(monkeypatch, 3)
    first = execute(cfg, store, RunOptions(quiet=True))
    restore()
    run_dir = store.run_dir(first.run_id)
    paths = [checkpoint.epoch_path(run_dir, epoch) for epoch in checkpoint.list_epochs(run_dir)]
    for path in paths:
        damage(path, "garbage")
    capsys.readouterr()

    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.status == "finished"
    lines = capsys.readouterr().err.splitlines()  # one line per damaged checkpoint, newest first
    assert len(lines) == len(paths) == 2 and all(str(p) in line for p, line in zip(paths[::-1], lines, strict=True))
    assert lines[-1].endswith("none left: training restarts from scratch")
    assert rows(store, first.run_id) == rows(ref_store, ref.run_id)
    assert resumed.metrics["test/loss"] == ref.metrics["test/loss"]


def test_mid_run_pruning_keeps_the_previous_checkpoint(tiny_corpus, store_url, monkeypatch, one_thread):
    cfg = tiny_cfg(tiny_corpus, **{"train.keep_checkpoints": "best", "train.epochs": 4})
    seen = []
    original = Trainer.save_checkpoint

    def spy(self, epoch):
        original(self, epoch)
        seen.append(checkpoint.list_epochs(self.run_dir))

    monkeypatch.setattr(Trainer, "save_checkpoint", spy)
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert all(len(kept) >= 2 and kept[-1] == i + 1 for i, kept in enumerate(seen[1:], 1))
    best = int(result.metrics["best_epoch"])
    assert checkpoint.list_epochs(open_store(store_url).run_dir(result.run_id)) == [best]


# ------------------------------------------------------------------------------ summary after resume
def test_a_resume_after_the_last_checkpoint_keeps_the_whole_summary(tiny_corpus, tmp_path, monkeypatch,
                                                                     reference, one_thread):
    cfg = tiny_cfg(tiny_corpus)
    _, ref = reference(cfg)
    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    original = Trainer.evaluate_final

    def killed_before_the_summary(self):
        raise KeyboardInterrupt  # every epoch done and checkpointed; the final test never ran

    monkeypatch.setattr(Trainer, "evaluate_final", killed_before_the_summary)
    first = execute(cfg, store, RunOptions(quiet=True))
    assert first.status == "interrupted"
    assert checkpoint.list_epochs(store.run_dir(first.run_id))[-1] == 3
    monkeypatch.setattr(Trainer, "evaluate_final", original)

    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.status == "finished"
    assert set(resumed.metrics) == set(ref.metrics) and resumed.ms_per_batch is not None
    untimed = {k: v for k, v in ref.metrics.items() if not k.endswith(TIMINGS)}
    assert {k: resumed.metrics[k] for k in untimed} == untimed
    assert all(math.isfinite(resumed.metrics[k]) for k in ref.metrics if k.endswith(TIMINGS))
    assert store.summary(first.run_id) == resumed.metrics


def test_a_damaged_best_checkpoint_at_the_end_scores_the_last_weights_and_says_so(tiny_corpus, store_url, monkeypatch,
                                                                                   capsys, one_thread):
    best_at_epoch_1(monkeypatch)  # the final splits want epoch 1's checkpoint
    final = Trainer.evaluate_final

    def damage_best_then_score(self):
        damage(checkpoint.epoch_path(self.run_dir, 1), "truncated")
        return final(self)

    monkeypatch.setattr(Trainer, "evaluate_final", damage_best_then_score)
    result = execute(tiny_cfg(tiny_corpus), open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and result.metrics["best_epoch"] == 3 and "test/loss" in result.metrics
    assert "epoch_001.pt" in capsys.readouterr().err
