"""Word-level corpora, tokenized exactly as pytorch/examples' word_language_model does.

Each line is whitespace-split and `<eos>` appended (blank lines too); one dictionary grows over
train, valid and test in that order. The token ids are prepared once into a cache keyed by the
files' checksums, then served from memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from sweeplab.config import DataConfig
from sweeplab.data.paths import cache_dir, dataset_dir, require_file, sha256_files
from sweeplab.errors import UserError
from sweeplab.io import load_cache, save_atomic
from sweeplab.registry import DATASETS

EOS = "<eos>"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TextLayout:
    folder: str  # usual folder under the data root
    files: dict[str, str]  # split -> file name


LAYOUTS = {
    "wikitext2": TextLayout("wikitext-2", {s: f"{s}.txt" for s in SPLITS}),
    "ptb": TextLayout("ptb", {s: f"ptb.{s}.txt" for s in SPLITS}),
    "text": TextLayout("", {s: f"{s}.txt" for s in SPLITS}),
}

class TextDataConfig(DataConfig):
    train_tokens: int = Field(0, ge=0, description="use the first N training tokens, 0 = all (quick runs)")
    eval_tokens: int = Field(0, ge=0, description="use the first N valid and test tokens, 0 = all (quick runs)")


for _name in LAYOUTS:
    DATASETS.register(_name, group="lm", config=TextDataConfig)(LAYOUTS[_name])


class Dictionary:
    def __init__(self, words: list[str] | None = None):
        self.idx2word: list[str] = []
        self.word2idx: dict[str, int] = {}
        for word in words or []:
            self.add_word(word)

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def encode(self, text: str) -> list[int]:
        """Ids of `text`'s words; a word outside the vocabulary becomes <unk> (if the corpus has one)."""
        unk = self.word2idx.get("<unk>")
        ids = [self.word2idx.get(w, unk) for w in text.split()]
        return [i for i in ids if i is not None]

    def __len__(self) -> int:
        return len(self.idx2word)


@dataclass
class Corpus:
    dictionary: Dictionary
    train: torch.Tensor  # (N,) int64 token ids
    valid: torch.Tensor
    test: torch.Tensor


def tokenize(paths: dict[str, Path]) -> Corpus:
    dictionary = Dictionary()
    ids: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        tokens: list[int] = []
        for line in read_text_lines(paths[split]):
            tokens.extend(dictionary.add_word(w) for w in line.split())
            tokens.append(dictionary.add_word(EOS))
        ids[split] = torch.tensor(tokens, dtype=torch.int64)
    return Corpus(dictionary, ids["train"], ids["valid"], ids["test"])


def read_text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, streamed as pytorch/examples reads them (open(path, encoding="utf8")).

    A binary file (invalid UTF-8, or NUL bytes, which no text corpus holds) is a UserError naming the file
    and where it stops being text, instead of a UnicodeDecodeError traceback or a corpus of garbage words.
    """
    with open(path, encoding="utf8") as f:
        try:
            for number, line in enumerate(f, start=1):
                if "\0" in line:
                    raise _not_text(path, f"a NUL byte on line {number:,}")
                yield line
        except UnicodeDecodeError:
            raise _not_text(path, _first_invalid_byte(path)) from None


def _first_invalid_byte(path: Path) -> str:
    raw = path.read_bytes()  # only on the error path: where the text stops being UTF-8
    try:
        raw.decode("utf8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"byte 0x{raw[exc.start]:02x} at offset {exc.start:,}, line {line:,}"
    return "invalid UTF-8"


def _not_text(path: Path, where: str) -> UserError:
    return UserError(f"{path}: not a UTF-8 text file ({where}); expected word-level text, one sentence or "
                     "paragraph a line")


def load_corpus(name: str, path: str = "") -> Corpus:
    """The corpus `name` (wikitext2, ptb, text) from its folder, through the token-id cache."""
    layout = LAYOUTS[name]
    if name == "text" and not path:
        raise UserError("data=text needs data.path=DIR, a folder holding train.txt, valid.txt and test.txt")
    folder = dataset_dir(path, layout.folder, name)
    paths = {s: require_file(folder / f, name) for s, f in layout.files.items()}
    cached = cache_dir() / f"tokens-{sha256_files(paths.values())[:24]}.pt"
    blob = load_cache(cached, keys=("words", *SPLITS))  # None: absent or unreadable, then rebuilt
    if blob is not None:
        return Corpus(Dictionary(blob["words"]), blob["train"], blob["valid"], blob["test"])
    corpus = tokenize(paths)
    save_atomic({"words": corpus.dictionary.idx2word, "train": corpus.train, "valid": corpus.valid,
                 "test": corpus.test}, cached)
    return corpus


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) -> (N // batch_size, batch_size): each column a contiguous stream, the remainder dropped."""
    rows = data.size(0) // batch_size
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()  # (T, B)


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A window of up to `bptt` steps starting at row i, and the same shifted by one as targets."""
    seq_len = min(bptt, source.size(0) - 1 - i)
    x = source[i : i + seq_len]  # (T, B)
    y = source[i + 1 : i + 1 + seq_len].reshape(-1)  # (T*B,)
    return x, y
