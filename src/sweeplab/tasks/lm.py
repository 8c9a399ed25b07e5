"""Word-level language modelling (pytorch/examples' word_language_model, inside the shared engine)."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sweeplab.config import TrainConfig
from sweeplab.data.text import Corpus, Dictionary, batchify, get_batch, load_corpus
from sweeplab.errors import UserError
from sweeplab.models.device import unwrap
from sweeplab.models.spec import VocabSpec
from sweeplab.registry import TASKS
from sweeplab.tasks.base import WHOLE, Part, StepOutput, Task
from sweeplab.tasks.lm_artifacts import save_attention, save_sample, save_vocab

SAMPLE_WORDS = 100  # words generated at the end of every run, for the report
ATTENTION_TOKENS = 24  # tokens of the validation text shown in the attention maps


class LMTrainConfig(TrainConfig):
    bptt: int = Field(35, ge=1, description="sequence length of a training window")


def repackage_hidden(h: Any) -> Any:
    """Detach the hidden state from its history, so backprop stops at the window's start
    (truncated BPTT) while the state itself carries on across windows."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return None if h is None else tuple(repackage_hidden(v) for v in h)


class SoftmaxCrossEntropy(torch.autograd.Function):
    """F.cross_entropy(logits, y) (the mean over N rows of V logits), with its gradient softmax(x) - onehot(y)
    written into the softmax that the forward pass keeps.

    F.cross_entropy keeps log_softmax's output, fills an (N, V) buffer with zeros for nll_loss's gradient and
    runs log_softmax's backward over both: passes over vocabulary-sized buffers (700 x 33,278 floats, 93 MB,
    per WikiText-2 step) that this skips. Same value, same gradient to float rounding (tests/test_lm_task.py).
    bf16 logits (autocast) stay bf16: softmax accumulates in fp32 and rounds once, bf16 has fp32's range, and
    the gradient goes on into bf16 matmuls anyway, so the two casts of the whole (N, V) buffer that F.cross_entropy
    makes under autocast (to fp32 and back) are skipped; the loss is taken in fp32 from bf16 values, which moves
    it by well under bf16's own rounding of the logits. Backward runs once per forward (it reuses the kept
    softmax in place).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(logits.dtype, torch.float32)
        with torch.autocast(logits.device.type, enabled=False):
            x = logits if logits.dtype == torch.bfloat16 else logits.to(acc)  # fp16 underflows: taken in fp32
            p = torch.softmax(x, dim=1)  # (N, V)
            # log-sum-exp from the most probable class, whose probability exp(max x - lse) is at least 1/V, so
            # it never underflows (as -log p[y] can); amax is a third of max(dim)'s cost.
            lse = x.amax(dim=1).to(acc) - p.amax(dim=1).to(acc).log()  # (N,)
            loss = (lse - x.gather(1, y[:, None]).squeeze(1).to(acc)).mean()
        ctx.save_for_backward(p, y)
        ctx.dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        p, y = ctx.saved_tensors
        p[torch.arange(y.numel(), device=y.device), y] -= 1
        return p.mul_(grad / y.numel()).to(ctx.dtype), None


@TASKS.register("lm")
class LanguageModelTask(Task):
    """Word-level language model: train/valid/test perplexity, ms/batch, generated text, attention."""
    capabilities = frozenset({"text", "attention"})

    name = "lm"
    train_config = LMTrainConfig
    defaults = {"data": "wikitext2", "model": "lstm", "optim": "sgd", "optim.lr": 20.0, "train.clip": 0.25,
                "train.epochs": 40, "train.batch_size": 20, "train.eval_batch_size": 10, "train.schedule": "plateau",
                "train.keep_checkpoints": "best"}
    item_name = "tokens"
    directions = {**Task.directions, "ppl": -1, "tokens_per_s": 1}

    corpus: Corpus

    def build(self) -> nn.Module:
        self.corpus = load_corpus(self.cfg.data_name, self.cfg.data.path)
        t, d = self.cfg.train, self.cfg.data
        # The vocabulary stays the full corpus's: a quick run has the real model, on less text.
        self.splits = {"train": batchify(_first(self.corpus.train, d.train_tokens), t.batch_size),
                       "valid": batchify(_first(self.corpus.valid, d.eval_tokens), t.eval_batch_size),
                       "test": batchify(_first(self.corpus.test, d.eval_tokens), t.eval_batch_size)}
        for split, ids in self.splits.items():
            if ids.size(0) < 2:
                raise UserError(f"data: the {split} split has too few tokens for batch size {ids.size(1)} "
                                f"(raise data.train_tokens/data.eval_tokens or lower the batch size)")
            self.splits[split] = ids.to(self.device)
        return self.create_model(VocabSpec(len(self.corpus.dictionary))).to(self.device)

    def chance(self) -> dict[str, float]:
        return {"ppl": float(len(self.corpus.dictionary))}  # a uniform guess over the vocabulary

    @property
    def dictionary(self) -> Dictionary:
        return self.corpus.dictionary

    # -- training ----------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        return math.ceil((self.splits["train"].size(0) - 1) / self.cfg.train.bptt)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.hidden = None  # a fresh state each epoch, as word_language_model does
        source = self.splits["train"]
        for i in range(0, source.size(0) - 1, self.cfg.train.bptt):
            yield get_batch(source, i, self.cfg.train.bptt)

    def shard(self, batch: tuple[torch.Tensor, torch.Tensor], part: Part) -> tuple[tuple[torch.Tensor, torch.Tensor], float]:
        """Columns of the (bptt, batch) window: each rank carries the hidden state of its own streams."""
        x, y = batch
        x_part = part.take(x, dim=1)
        return (x_part, part.take(y.view(x.shape), dim=1).reshape(-1)), x_part.size(1) / x.size(1)

    def train_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        if self.hidden is None:
            self.hidden = unwrap(model).init_hidden(x.size(1))
        logits, hidden = model(x, repackage_hidden(self.hidden))
        self.hidden = hidden
        return StepOutput(SoftmaxCrossEntropy.apply(logits, y), y.numel())

    def metrics_of(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / max(sums["n"], 1)
        return {"loss": loss, "ppl": _ppl(loss)}

    # -- evaluation --------------------------------------------------------------------------
    def eval_batch_count(self, split: str) -> int:
        return math.ceil((self.splits[split].size(0) - 1) / self.cfg.train.bptt)

    @torch.no_grad()
    def evaluate_sums(self, model: nn.Module, split: str, part: Part = WHOLE,
                      limit_batches: int | None = None) -> dict[str, Any]:
        """Over `part` of the split's columns (streams), each carrying its hidden state from window to window."""
        source = part.take(self.splits[split], dim=1)  # (rows, streams)
        total = torch.zeros((), device=self.device)
        rows = source.size(0) - 1  # target rows: every window's targets, or those of the first limit_batches
        if limit_batches is not None:
            rows = min(rows, limit_batches * self.cfg.train.bptt)
        if source.size(1) == 0:  # more ranks than streams: this one has none
            return {"loss": total, "n": 0}
        model.eval()
        hidden = unwrap(model).init_hidden(source.size(1))
        for i in range(0, rows, self.cfg.train.bptt):
            x, y = get_batch(source, i, self.cfg.train.bptt)
            logits, hidden = model(x, hidden)
            total += F.cross_entropy(logits.float(), y, reduction="sum")
        model.train()
        return {"loss": total, "n": rows * source.size(1)}

    def finish(self, model: nn.Module, run_dir: Path) -> dict[str, float]:
        """The vocabulary (so `generate` needs no data), a text sample, and attention maps."""
        save_vocab(self.dictionary, run_dir)
        save_sample(model, self.dictionary, run_dir, words=SAMPLE_WORDS, seed=self.cfg.seed)
        if hasattr(unwrap(model), "attention_maps"):
            ids = self.corpus.valid[:ATTENTION_TOKENS].tolist()
            save_attention(model, self.dictionary, [self.dictionary.idx2word[i] for i in ids], run_dir / "attention.svg")
        return {}


def _first(ids: torch.Tensor, n: int) -> torch.Tensor:
    return ids[:n] if n else ids


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
