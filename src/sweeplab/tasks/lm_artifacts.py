"""Language-model artifacts: the vocabulary, generated text and attention heat maps."""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from sweeplab.config import RunConfig, flatten
from sweeplab.data.text import Dictionary
from sweeplab.errors import UserError
from sweeplab.limits import Limit
from sweeplab.models.spec import VocabSpec, create_model
from sweeplab.store import RunRow, Store, checkpoint
from sweeplab.store.runfiles import read_run_file
from sweeplab.tasks.resolve import capable, resolve, tasks_with

VOCAB_FILE = "vocab.txt"
SAMPLE_FILE = "generated.txt"
# Text given on the command line is bounded before any work is spent on it.
GENERATE_WORDS = Limit("words", 10_000, "SWEEPLAB_MAX_GENERATE_WORDS")  # --words: one pass of the model a word
# --text: each map is words x words per layer and head, with a label per word; the runs' own maps show 24
ATTENTION_WORDS = Limit("words", 128, "SWEEPLAB_MAX_ATTENTION_WORDS")
CONTEXT_WORDS = 512  # the most a Transformer re-reads while generating, so the longest --prompt (not raised)


def check_words(option: str, words: int, limit: Limit) -> None:
    """One line naming the option, its limit and how to raise it, before a model is even loaded."""
    try:
        limit.check(words)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None


def check_prompt(prompt: str) -> None:
    words = len(prompt.split())
    if words > CONTEXT_WORDS:
        raise UserError(f"--prompt: {words:,} words, more than the limit of {CONTEXT_WORDS:,}: the context a "
                        "Transformer reads")


def save_vocab(dictionary: Dictionary, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / VOCAB_FILE).write_text("\n".join(dictionary.idx2word) + "\n", encoding="utf8")


def load_lm(store: Store, run: RunRow, device: str = "cpu") -> tuple[nn.Module, Dictionary, RunConfig]:
    """The run's model with its best kept checkpoint, and its vocabulary."""
    if not capable(run.task, "text"):
        raise UserError(f"run {run.id} is a {run.task!r} run; this command needs a language-model run "
                        f"(task {', '.join(tasks_with('text'))})")
    run_dir = store.run_dir(run.id)
    vocab = read_run_file(run_dir, VOCAB_FILE)  # the run folder is untrusted: no link followed, size capped
    epochs = checkpoint.list_epochs(run_dir)
    if vocab is None or not epochs:
        raise UserError(f"run {run.id} has no finished checkpoint and vocabulary under {run_dir} (status {run.status})")
    cfg = resolve("lm", {**flatten(run.config), "device": "cpu"})  # a GPU-trained run reads on any machine
    dictionary = Dictionary(vocab.decode("utf8", errors="replace").splitlines())
    model = create_model("lm", cfg.model_name, VocabSpec(len(dictionary)), cfg.model)
    best = int(store.summary(run.id).get("best_epoch", 0))
    epoch = best if best in epochs else epochs[-1]
    model.load_state_dict(checkpoint.load_from_run(run_dir, epoch)["model"])
    return model.to(device).eval(), dictionary, cfg


@torch.no_grad()
def generate(model: nn.Module, dictionary: Dictionary, *, words: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 1111, prompt: str = "") -> str:
    """Sample `words` tokens, one at a time, as word_language_model's generate.py does."""
    if not temperature > 0:  # written so that NaN is refused too
        raise UserError(f"--temperature must be a number > 0, got {temperature}")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = dictionary.encode(prompt) or [int(torch.randint(len(dictionary), (1,), generator=gen))]
    recurrent = hasattr(model, "rnn")
    hidden = model.init_hidden(1)
    context = torch.tensor(ids, device=device).view(-1, 1)  # (T, 1)
    out: list[str] = [dictionary.idx2word[i] for i in ids] if prompt else []
    for _ in range(words):
        logits, new_hidden = model(context, hidden)
        scores = logits[-1].float().cpu() / temperature
        if top_k:
            kth = scores.topk(min(top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        idx = int(torch.multinomial(scores.softmax(-1), 1, generator=gen))
        out.append(dictionary.idx2word[idx])
        token = torch.tensor([[idx]], device=device)
        if recurrent:  # carry the state; feed only the new word
            hidden, context = new_hidden, token
        else:  # a transformer re-reads its (bounded) context
            context = torch.cat([context, token])[-CONTEXT_WORDS:]
    return " ".join(w if w != "<eos>" else "\n" for w in out).replace(" \n ", "\n").strip()


def save_sample(model: nn.Module, dictionary: Dictionary, run_dir: Path, *, words: int, seed: int) -> Path:
    path = run_dir / SAMPLE_FILE
    path.write_text(generate(model, dictionary, words=words, seed=seed) + "\n", encoding="utf8")
    return path


@torch.no_grad()
def attention_maps(model: nn.Module, dictionary: Dictionary, tokens: list[str]) -> list[torch.Tensor]:
    """Per layer (heads, T, T) attention weights of `tokens`."""
    if not hasattr(model, "attention_maps"):
        raise UserError("attention maps need a transformer run (model=transformer)")
    device = next(model.parameters()).device
    ids = dictionary.encode(" ".join(tokens))
    if not ids:
        raise UserError("--text has no word of the run's vocabulary")
    was_training = model.training
    model.eval()
    model.keep_attention(True)
    try:
        model(torch.tensor(ids, device=device).view(-1, 1))
        return [w[0].float().cpu() for w in model.attention_maps()]
    finally:
        model.keep_attention(False)
        model.train(was_training)


def save_attention(model: nn.Module, dictionary: Dictionary, tokens: list[str], path: Path) -> Path:
    """A grid of heat maps, a row per layer and a column per head, as SVG or PNG (by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = attention_maps(model, dictionary, tokens)
    labels = [dictionary.idx2word[i] for i in dictionary.encode(" ".join(tokens))]
    layers, heads = len(maps), maps[0].size(0)
    size = 1.2 + 0.22 * len(labels)
    fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers), squeeze=False)
    for layer, weights in enumerate(maps):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(weights[head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()  # rendered in memory first: a failure leaves no half-written file behind
    fig.savefig(image, format=path.suffix[1:])
    plt.close(fig)
    write_output(path, image.getvalue())
    return path


def write_output(path: Path, data: bytes) -> None:
    """Write a user-named output file whole or not at all (a temp file renamed into place), making its folders;
    a path that cannot be written is one line naming it, not a traceback."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        if tmp.is_file():
            tmp.unlink()
