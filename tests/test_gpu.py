"""The CUDA paths, on a machine that has them: `pytest -m gpu` (CI has no GPU; these are opt-in)."""
from __future__ import annotations

import pytest
import torch

from sweeplab.engine.device import get_device
from sweeplab.engine.runner import RunOptions, execute
from sweeplab.engine.trainer import Trainer
from sweeplab.store import open_store
from sweeplab.tasks import TASKS, resolve

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
LM = {"data": "text", "model.emsize": 32, "model.nhid": 32, "model.dropout": 0.0, "optim.lr": 1.0,
      "train.batch_size": 4, "train.eval_batch_size": 4, "train.bptt": 12, "train.epochs": 2, "device": "cuda"}


@pytest.mark.parametrize("model", ["lstm", "transformer"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_lm_trains_on_the_gpu_in_every_precision(model, precision, tiny_corpus, store_url):
    cfg = resolve("lm", {**LM, "data.path": str(tiny_corpus), "model": model, "train.precision": precision})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and result.device != "cpu"  # the GPU's own name
    losses = [m.value for m in open_store(store_url).metrics(result.run_id) if m.key == "train/loss"]
    assert losses[-1] < losses[0]


def test_image_trains_on_the_gpu_channels_last_bf16(store_url):
    cfg = resolve("image", {"data": "digits", "model": "resnet18", "train.epochs": 1, "train.precision": "bf16",
                            "device": "cuda"})
    result = execute(cfg, open_store(store_url), RunOptions(quiet=True))
    assert result.status == "finished" and result.device != "cpu" and 0 <= result.metrics["test/acc1"] <= 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on GPUs needs 2 or more")
def test_ddp_on_two_gpus_matches_one_gpu(tiny_corpus, store_url):
    store = open_store(store_url)
    layer = {**LM, "data.path": str(tiny_corpus)}
    one = execute(resolve("lm", layer), store, RunOptions(quiet=True))
    two = execute(resolve("lm", {**layer, "train.nproc": 2}), store, RunOptions(quiet=True))
    assert two.status == "finished" and store.get_run(two.run_id).env["processes"] == 2
    assert two.metrics["test/loss"] == pytest.approx(one.metrics["test/loss"], rel=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # fp16's GradScaler reads found-inf on the host
def test_lm_training_steps_never_wait_for_the_gpu(precision, tiny_corpus, tmp_path):
    """Between log_every boundaries a step queues its kernels and returns: no .item(), no host copy."""
    cfg = resolve("lm", {**LM, "data.path": str(tiny_corpus), "train.precision": precision})
    task = TASKS.get("lm").obj(cfg, get_device("cuda"))
    trainer = Trainer(task, task.build(), store=open_store(f"sqlite:///{tmp_path / 's.sqlite'}"), run_id="x",
                      run_dir=tmp_path)
    batches = list(task.train_batches(1))[:6]
    for batch in batches[:2]:  # lazy CUDA and cuBLAS set-up may synchronise once
        trainer.train_step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[2:]:
            trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
