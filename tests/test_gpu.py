"""The CUDA paths, on a machine that has them: `pytest -m gpu` (CI has no GPU; these are opt-in)."""
from __future__ import annotations

import pytest
import torch

from sweeplab.engine.runner import RunOptions, execute
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


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on GPUs needs 2 or more")
def test_ddp_on_two_gpus_matches_one_gpu(tiny_corpus, store_url):
    store = open_store(store_url)
    layer = {**LM, "data.path": str(tiny_corpus)}
    one = execute(resolve("lm", layer), store, RunOptions(quiet=True))
    two = execute(resolve("lm", {**layer, "train.nproc": 2}), store, RunOptions(quiet=True))
    assert two.status == "finished" and store.get_run(two.run_id).env["processes"] == 2
    assert two.metrics["test/loss"] == pytest.approx(one.metrics["test/loss"], rel=1e-3)
