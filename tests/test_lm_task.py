"""End-to-end lm runs on a tiny corpus: every model trains, the store and checkpoints are written,
resume gives the result of an uninterrupted run, divergence and interruption end cleanly."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sweeplab.config import run_key
from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.registry import MODELS, TASKS
from sweeplab.store import checkpoint, open_store
from sweeplab.tasks import resolve
from sweeplab.tasks.lm import SoftmaxCrossEntropy

TINY = {"data": "text", "model.emsize": 16, "model.nhid": 16, "model.nlayers": 1, "model.dropout": 0.1,
        "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.log_every": 5,
        "train.keep_checkpoints": "all"}


def tiny_cfg(corpus: Path, **overrides):
    return resolve("lm", {**TINY, "data.path": str(corpus), **overrides})


def curve(store, run_id: str, key: str) -> list[float]:
    return [m.value for m in store.metrics(run_id) if m.key == key]


@pytest.mark.parametrize("model", MODELS.names("lm"))
def test_every_lm_model_trains_and_is_stored(model, tiny_corpus, store_url):
    lr = 0.5 if model == "transformer" else 2.0
    cfg = tiny_cfg(tiny_corpus, model=model, **{"optim.lr": lr, "train.epochs": 3, "train.schedule": "constant"})
    store = open_store(store_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    assert result.status == "finished" and store.get_run(result.run_id).key == run_key(cfg)
    train = curve(store, result.run_id, "train/loss")
    assert len(train) == 3 and all(math.isfinite(v) for v in train) and train[-1] < train[0]
    assert {"valid/ppl", "test/ppl", "train/ms_per_batch", "train/tokens_per_s"} <= set(result.metrics)
    assert result.params == result.metrics["params"] > 0
    run_dir = store.run_dir(result.run_id)
    assert checkpoint.list_epochs(run_dir) == [1, 2, 3]
    assert (run_dir / "generated.txt").read_text().strip() and (run_dir / "vocab.txt").exists()
    assert any((run_dir / "tb").iterdir())
    assert (run_dir / "attention.svg").exists() == (model == "transformer")


def test_resume_continues_at_next_epoch_with_identical_results(tiny_corpus, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_corpus, **{"train.epochs": 3, "model.dropout": 0.3})
    reference = open_store(f"sqlite:///{tmp_path / 'a' / 's.sqlite'}")
    ref = execute(cfg, reference, RunOptions(quiet=True))

    store = open_store(f"sqlite:///{tmp_path / 'b' / 's.sqlite'}")
    original = Trainer.train_epoch

    def interrupted_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_2)
    first = execute(cfg, store, RunOptions(quiet=True))
    assert first.status == "interrupted" and store.get_run(first.run_id).epoch == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = execute(cfg, store, RunOptions(quiet=True))
    assert resumed.run_id == first.run_id and resumed.status == "finished"
    for key in ("train/loss", "valid/loss", "test/loss"):
        assert curve(store, first.run_id, key) == curve(reference, ref.run_id, key)  # bit-identical on CPU
    epochs = [m.epoch for m in store.metrics(first.run_id) if m.key == "train/loss"]
    assert epochs == [1, 2, 3]  # no epoch lost or repeated


def test_finished_run_is_not_trained_twice(tiny_corpus, store_url):
    cfg = tiny_cfg(tiny_corpus, **{"train.epochs": 1})
    store = open_store(store_url)
    first = execute(cfg, store, RunOptions(quiet=True))
    again = execute(cfg, store, RunOptions(quiet=True))
    assert again.run_id == first.run_id and len(store.list_runs()) == 1
    assert again.metrics == first.metrics


def test_divergence_ends_the_run_with_its_metrics(tiny_corpus, store_url):
    cfg = tiny_cfg(tiny_corpus, model="rnn_relu",
                   **{"optim.lr": 1e6, "train.clip": 0.0, "train.log_every": 1, "train.epochs": 3})
    store = open_store(store_url)
    result = execute(cfg, store, RunOptions(quiet=True))
    row = store.get_run(result.run_id)
    assert result.status == row.status == "diverged" and "training loss became" in row.error
    losses = curve(store, result.run_id, "step/loss")
    assert losses and math.isfinite(losses[0])  # the history up to the divergence is kept


def test_sigterm_interrupts_and_the_run_resumes(tiny_corpus, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'runs' / 's.sqlite'}"
    args = [sys.executable, "-m", "sweeplab", "run", "lm", "--store", store_url,
            *[f"{k}={v}" for k, v in {**TINY, "data.path": tiny_corpus, "train.epochs": 200}.items()]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 60
    while not list((tmp_path / "runs").glob("*/checkpoints/epoch_001.pt")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    (row,) = open_store(store_url).list_runs()
    assert row.status == "interrupted" and row.epoch >= 1
    assert b"resumable from epoch" in proc.stderr.read()


# -- the training step's loss: SoftmaxCrossEntropy is F.cross_entropy, in fewer passes ------------------------

@pytest.mark.parametrize("scale", [1.0, 300.0])  # 300: rows whose target's probability underflows in fp32
def test_softmax_cross_entropy_equals_torch_value_and_gradient(scale):
    torch.manual_seed(0)
    logits = (torch.randn(50, 37, dtype=torch.double) * scale).requires_grad_()
    y = torch.randint(0, 37, (50,))
    ours = SoftmaxCrossEntropy.apply(logits, y)
    (grad,) = torch.autograd.grad(ours * 3, logits)
    expected = F.cross_entropy(logits, y)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(grad, torch.autograd.grad(expected * 3, logits)[0])
    assert math.isfinite(float(ours.detach()))


def test_softmax_cross_entropy_refuses_a_second_backward_rather_than_a_wrong_gradient():
    logits = torch.randn(4, 5, requires_grad=True)
    loss = SoftmaxCrossEntropy.apply(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)  # the kept softmax became the gradient in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_softmax_cross_entropy_under_bf16_autocast_agrees_with_torch_within_bf16_rounding():
    """bf16 logits stay bf16 (no fp32 copy of the (N, V) buffer): the fp32 loss moves by far less than bf16's
    own rounding of the logits (|logit| ~ 4 here: 2**-8 * 4 = 0.016); the weight's gradient agrees to bf16's."""
    torch.manual_seed(0)
    weight = torch.randn(37, 16, requires_grad=True)
    h, y = torch.randn(50, 16), torch.randint(0, 37, (50,))
    results = []
    for loss_fn in (SoftmaxCrossEntropy.apply, F.cross_entropy):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = h @ weight.T  # bf16 under autocast
            loss = loss_fn(logits, y)
        assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
        results.append((loss, torch.autograd.grad(loss, weight)[0]))
    (ours, ours_grad), (expected, expected_grad) = results
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-3)
    torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-2, atol=1e-3)


def test_lm_step_runs_no_log_softmax_passes(tiny_corpus, tmp_path):
    """The step's loss keeps one softmax and turns it into the gradient in place: no log_softmax output,
    no zero-filled nll_loss gradient, no log_softmax backward over the vocabulary."""
    cfg = tiny_cfg(tiny_corpus)
    task = TASKS.get("lm").obj(cfg, torch.device("cpu"))
    model = task.build()
    trainer = Trainer(task, model, store=open_store(f"sqlite:///{tmp_path / 's.sqlite'}"), run_id="x", run_dir=tmp_path)
    batch = next(iter(task.train_batches(1)))
    with torch.profiler.profile() as prof:
        trainer.train_step(batch)
    ops = {event.key for event in prof.key_averages()}
    assert "aten::mm" in ops and not ops & {"aten::_log_softmax", "aten::_log_softmax_backward_data",
                                             "aten::nll_loss_backward"}


def test_a_bf16_lm_step_never_casts_the_vocabulary_sized_buffers(tiny_corpus, tmp_path):
    """Under bf16 autocast the logits, their softmax and its gradient stay bf16: no (N, V) cast either way."""
    cfg = tiny_cfg(tiny_corpus, **{"train.precision": "bf16"})
    task = TASKS.get("lm").obj(cfg, torch.device("cpu"))
    trainer = Trainer(task, task.build(), store=open_store(f"sqlite:///{tmp_path / 's.sqlite'}"), run_id="x",
                      run_dir=tmp_path)
    x, y = next(iter(task.train_batches(1)))
    with torch.profiler.profile(record_shapes=True) as prof:
        trainer.train_step((x, y))
    vocabulary_sized = [y.numel(), len(task.dictionary)]
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[:1] == [vocabulary_sized]]
    softmaxes = [e for e in prof.events() if e.name == "aten::_softmax"]
    assert softmaxes and casts == []
