"""Caps on what an experiment file or an override can make sweeplab spend, checked before it is spent.

Each cap has a default far above what the course's experiments need and an environment variable that raises
it; `sweeplab sweep` also takes a flag for the caps a big sweep meets. A refusal is one line that says what
was found, the limit, and how to raise it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from sweeplab.errors import UserError, brief


@dataclass(frozen=True)
class Limit:
    unit: str  # what is counted, as the refusal names it
    default: int
    env: str  # the environment variable that raises it
    flag: str = ""  # the `sweeplab sweep` option that raises it, where there is one

    def value(self, given: int | None = None) -> int:
        """The cap in force: the flag's value when given, else the environment's, else the default."""
        return given if given is not None else self.from_env() or self.default

    def from_env(self) -> int | None:
        text = os.environ.get(self.env, "").strip()
        if not text:
            return None
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{self.env}={text[:40]!r} is not accepted; accepted: a whole number of {self.unit}, "
                            "at least 1")
        return int(text)

    def how_to_raise(self) -> str:
        flag = f"`sweeplab sweep {self.flag} N` or " if self.flag else ""
        return f"to allow more, use {flag}{self.env}=N"

    def check(self, count: int, given: int | None = None, detail: str = "") -> None:
        """ValueError (pydantic's validators turn it into the file's error line) when `count` is over the cap."""
        limit = self.value(given)
        if count > limit:
            count_text = f"{count:,}" if count.bit_length() < 10_000 else brief(count)  # no text past 4,300 digits
            raise ValueError(f"{count_text} {self.unit}{detail}, more than the limit of {limit:,}; "
                             + self.how_to_raise())


# An experiment file: the course's largest is 10 kB and 800 YAML values.
EXPERIMENT_BYTES = Limit("bytes", 1_000_000, "SWEEPLAB_MAX_EXPERIMENT_BYTES")
YAML_VALUES = Limit("YAML values", 100_000, "SWEEPLAB_MAX_YAML_VALUES")  # counted with aliases expanded
# A sweep: the course's largest has 27 cells. Counted from the axes' lengths, before any cell is built.
CELLS = Limit("cells", 10_000, "SWEEPLAB_MAX_CELLS", "--max-cells")
SEEDS = Limit("seeds", 100, "SWEEPLAB_MAX_SEEDS", "--max-seeds")
# One decoded image (Tiny-ImageNet's are 64x64): a small compressed file can claim gigapixels.
IMAGE_PIXELS = Limit("pixels", 4096 * 4096, "SWEEPLAB_MAX_IMAGE_PIXELS")
# One dataset file out of .xz or .gz (CIFAR-10's batches are 31 MB, MNIST's training images 47 MB).
DECOMPRESSED_BYTES = Limit("bytes", 2**30, "SWEEPLAB_MAX_DECOMPRESSED_BYTES")
# What a model may need to train; default: the memory of the device it trains on (sweeplab.models.size).
MODEL_BYTES = Limit("bytes", 0, "SWEEPLAB_MAX_MODEL_BYTES")
