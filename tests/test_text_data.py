"""Tokenization as pytorch/examples does it, on the real corpora; batching; the token-id cache."""
from __future__ import annotations

import torch
from tests.conftest import real_data

from sweeplab.data.text import batchify, get_batch, load_corpus, tokenize


def test_wikitext2_vocabulary_and_token_counts():
    real_data("wikitext-2")
    corpus = load_corpus("wikitext2")
    assert len(corpus.dictionary) == 33_278
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (2_088_628, 217_646, 245_569)
    assert corpus.dictionary.idx2word[corpus.train[-1]] == "<eos>"


def test_ptb_vocabulary_and_token_counts():
    real_data("ptb")
    corpus = load_corpus("ptb")
    assert len(corpus.dictionary) == 10_000 and corpus.train.numel() == 929_589


def test_tokenize_matches_the_reference_rule(tiny_corpus):
    """Reference: `line.split() + ['<eos>']` for every line; one dictionary over train, valid, test."""
    words: dict[str, int] = {}
    expected = []
    for split in ("train", "valid", "test"):
        for line in (tiny_corpus / f"{split}.txt").read_text().splitlines(keepends=True):
            ids = [words.setdefault(w, len(words)) for w in line.split() + ["<eos>"]]
            if split == "train":
                expected += ids
    corpus = tokenize({s: tiny_corpus / f"{s}.txt" for s in ("train", "valid", "test")})
    assert corpus.train.tolist() == expected and corpus.dictionary.word2idx == words


def test_cache_serves_the_same_corpus(tiny_corpus):
    first = load_corpus("text", str(tiny_corpus))
    second = load_corpus("text", str(tiny_corpus))  # from the cache
    assert torch.equal(first.train, second.train) and first.dictionary.idx2word == second.dictionary.idx2word


def test_batchify_and_windows():
    data = torch.arange(23)
    batched = batchify(data, 4)  # 5 rows, remainder dropped; column j is a contiguous stream
    assert batched.shape == (5, 4) and batched[:, 1].tolist() == [5, 6, 7, 8, 9]
    x, y = get_batch(batched, 3, bptt=35)  # the last window is short
    assert x.shape == (1, 4) and torch.equal(y, batched[4])
