"""The CUDA paths, on a machine that has them: `pytest -m gpu` (CI has no GPU; these are opt-in)."""
from __future__ import annotations

import pytest
import torch

from sweeplab.engine.launch import execute
from sweeplab.engine.runner import RunOptions
from sweeplab.engine.trainer import Trainer
from sweeplab.models.device import get_device
from sweeplab.registry import TASKS
from sweeplab.store import open_store
from sweeplab.tasks import resolve

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


@pytest.mark.parametrize("resume_on", ["cuda", "cpu"])
def test_a_run_checkpointed_on_the_gpu_resumes_on_the_gpu_and_on_the_cpu(resume_on, tiny_corpus, tmp_path):
    """The checkpoint loads onto the CPU (the generator states must stay there) and the state dicts are copied
    to the resuming device; the CUDA generators come back too, so a resume on the GPU repeats the run exactly."""
    from sweeplab.store import checkpoint

    layer = {**LM, "data.path": str(tiny_corpus), "model.dropout": 0.3, "train.epochs": 3,
             "train.keep_checkpoints": "all"}
    reference = execute(resolve("lm", layer), open_store(f"sqlite:///{tmp_path / 'ref.sqlite'}"), RunOptions(quiet=True))
    store = open_store(f"sqlite:///{tmp_path / 'run.sqlite'}")
    first = execute(resolve("lm", layer), store, RunOptions(quiet=True))
    run_dir = store.run_dir(first.run_id)
    assert len(checkpoint.load(checkpoint.epoch_path(run_dir, 2))["rng"]["cuda"]) == torch.cuda.device_count()
    checkpoint.epoch_path(run_dir, 3).unlink()
    cfg = resolve("lm", layer)
    task = TASKS.get("lm").obj(cfg, get_device(resume_on))
    model = task.build()
    trainer = Trainer(task, model, store=store, run_id=first.run_id, run_dir=run_dir, quiet=True)
    assert trainer.restore_latest() == 2 and next(model.parameters()).device.type == resume_on
    trainer.recorder.close()
    if resume_on == "cuda":  # the whole resume through the engine, from epoch 2: the same numbers
        store.update_run(first.run_id, status="interrupted")
        resumed = execute(cfg, store, RunOptions(quiet=True))
        assert resumed.metrics["test/loss"] == reference.metrics["test/loss"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on GPUs needs 2 or more")
def test_ddp_on_two_gpus_matches_one_gpu(tiny_corpus, store_url):
    store = open_store(store_url)
    layer = {**LM, "data.path": str(tiny_corpus)}
    one = execute(resolve("lm", layer), store, RunOptions(quiet=True))
    two = execute(resolve("lm", {**layer, "train.nproc": 2}), store, RunOptions(quiet=True))
    assert two.status == "finished" and store.get_run(two.run_id).env["processes"] == 2
    assert two.metrics["test/loss"] == pytest.approx(one.metrics["test/loss"], rel=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on GPUs needs 2 or more")
def test_ddp_with_batchnorm_on_two_gpus_matches_one_gpu(store_url):
    """SyncBatchNorm over NCCL: the whole batch's statistics, as on one GPU."""
    store = open_store(store_url)
    layer = {"data": "digits", "model": "vgg8", "data.train_limit": 512, "train.batch_size": 64, "train.epochs": 2,
             "device": "cuda"}
    one = execute(resolve("image", layer), store, RunOptions(quiet=True))
    two = execute(resolve("image", {**layer, "train.nproc": 2}), store, RunOptions(quiet=True))
    assert two.status == "finished"
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
