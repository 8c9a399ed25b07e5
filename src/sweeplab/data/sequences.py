"""Generated sequence puzzles: digit palindromes and big-integer addition.

Nothing is read from disk: every batch is drawn from a NumPy generator seeded by (run seed, split,
index), so a batch is a pure function of those three numbers and a resumed run sees exactly the
batches it would have seen. Numbers are kept as digit arrays (least-significant digit first), so
a 40-digit addition is as easy to generate as a 2-digit one; Python ints are only used to check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from sweeplab.config import NEUTRAL, Section
from sweeplab.registry import DATASETS

BASE = 10  # decimal digits: 10 classes, one-hot width 10
STREAMS = {"train": 0, "valid": 1, "test": 2}  # independent random streams per split
TEST_SEED = 20_240_404  # the test set is the same for every run seed, like a real dataset's


def seeded_rng(seed: int, split: str, index: int = 0) -> np.random.Generator:
    """The generator of batch `index` of `split` for run `seed` (SeedSequence mixes the three)."""
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, STREAMS[split], index])


# ---------------------------------------------------------------------------------------------
# Palindromes

class PalindromeDataConfig(Section):
    length: int = Field(5, ge=2, le=10_000, description="digits per palindrome: the model reads length-1, predicts the last")
    encoding: Literal["scalar", "onehot"] = Field(
        "scalar", description="a digit as one number (input size 1, the course skeleton) or one-hot (size 10)")
    test_size: int = Field(10_000, ge=1, le=10_000_000, description="held-out palindromes scored once at the end")


def palindromes(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """(n, length) digits, each row a palindrome: a random first half, mirrored."""
    half = rng.integers(0, BASE, size=(n, (length + 1) // 2))
    return np.concatenate([half, half[:, : length // 2][:, ::-1]], axis=1)


@DATASETS.register("generated", group="palindrome", config=PalindromeDataConfig)
@dataclass(frozen=True)
class PalindromeData:
    """Digit palindromes drawn on the fly; the target (last digit) equals the first digit read."""

    cfg: PalindromeDataConfig
    num_classes: int = BASE

    @property
    def input_dim(self) -> int:
        return 1 if self.cfg.encoding == "scalar" else BASE

    def batch(self, rng: np.random.Generator, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        digits = torch.from_numpy(palindromes(rng, n, self.cfg.length)).to(device)  # (n, L)
        return self.encode(digits[:, :-1]), digits[:, -1]  # (n, L-1, I), (n,)

    def encode(self, digits: torch.Tensor) -> torch.Tensor:
        if self.cfg.encoding == "scalar":
            return digits.float().unsqueeze(-1)  # (n, T, 1): the digit's value, as the course skeleton feeds it
        return F.one_hot(digits, BASE).float()  # (n, T, 10)


# ---------------------------------------------------------------------------------------------
# Addition

class AdditionDataConfig(Section):
    max_digits: int = Field(10, ge=1, le=10_000, description="each operand has 1 to max_digits digits (no 64-bit limit)")
    reverse: bool = Field(True, description="feed digits least-significant first, so the carry flows forward "
                                            "in time; false feeds them as written")
    test_size: int = Field(10_000, ge=1, le=10_000_000, description="held-out additions scored once at the end")
    # Added after runs were stored: at "lengths" (the old behaviour) the run key leaves it out.
    operands: Literal["lengths", "values"] = Field(
        "lengths", description="lengths: each operand's length uniform in 1..max_digits, then its digits; values: "
                               "each value uniform in 0..10^max_digits-1, as the course code draws them (9 in 10 "
                               "operands then have max_digits digits)", json_schema_extra=NEUTRAL)


def random_values(rng: np.random.Generator, n: int, max_digits: int) -> np.ndarray:
    """(n, max_digits) digits, least-significant first, of values uniform in 0..10^max_digits-1.

    A uniform value is a row of independent uniform digits, so this needs no big integers."""
    return rng.integers(0, BASE, size=(n, max_digits))


def random_operands(rng: np.random.Generator, n: int, max_digits: int) -> np.ndarray:
    """(n, max_digits) digits, least-significant first, of numbers whose length is uniform in 1..max_digits."""
    lengths = rng.integers(1, max_digits + 1, size=n)
    digits = rng.integers(0, BASE, size=(n, max_digits))
    rows = np.arange(n)
    leading = np.where(lengths > 1, rng.integers(1, BASE, size=n), digits[rows, lengths - 1])  # no leading zero
    digits[rows, lengths - 1] = leading
    digits[np.arange(max_digits) >= lengths[:, None]] = 0
    return digits


def add_digits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Schoolbook addition of (n, D) digit arrays (least-significant first) -> (n, D+1) digits of the sum."""
    out = np.zeros((a.shape[0], a.shape[1] + 1), dtype=np.int64)
    carry = np.zeros(a.shape[0], dtype=np.int64)
    for i in range(a.shape[1]):
        total = a[:, i] + b[:, i] + carry
        out[:, i], carry = total % BASE, total // BASE
    out[:, -1] = carry
    return out


def to_digits(values: list[int], width: int) -> np.ndarray:
    """Python ints -> (n, width) digits, least-significant first (exact for any size)."""
    if any(v < 0 or v >= BASE**width for v in values):
        raise ValueError(f"every value must be a non-negative integer of at most {width} digits")
    return np.array([[int(c) for c in str(v).zfill(width)[::-1]] for v in values], dtype=np.int64).reshape(-1, width)


def from_digits(digits: np.ndarray | torch.Tensor) -> list[int]:
    """(n, D) digits, least-significant first -> Python ints (exact for any size)."""
    rows = digits.tolist()
    return [int("".join(str(d) for d in reversed(row)) or "0") for row in rows]


@DATASETS.register("generated", group="addition", config=AdditionDataConfig)
@dataclass(frozen=True)
class AdditionData:
    """Pairs of big integers and their sum, one digit position per time step.

    Step t reads the t-th digit of both operands (one-hot each, 20 inputs) and predicts the t-th
    digit of the sum; the sequence has max_digits + 1 steps, the last one for the final carry.
    Least-significant first, a recurrent net can carry like the schoolbook algorithm; as written
    (reverse=false) the carry into a digit comes from digits not read yet.
    """

    cfg: AdditionDataConfig
    num_classes: int = BASE
    input_dim: int = 2 * BASE

    @property
    def seq_len(self) -> int:
        return self.cfg.max_digits + 1

    def batch(self, rng: np.random.Generator, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        draw = random_values if self.cfg.operands == "values" else random_operands
        a, b = draw(rng, n, self.cfg.max_digits), draw(rng, n, self.cfg.max_digits)
        return self.encode(a, b, device)

    def encode(self, a: np.ndarray, b: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Operand digits (n, D), least-significant first -> inputs (n, D+1, 20) and target digits (n, D+1)."""
        pad = np.zeros((a.shape[0], 1), dtype=np.int64)  # both operands read 0 at the final-carry step
        ab = torch.from_numpy(np.stack([np.hstack([a, pad]), np.hstack([b, pad])], axis=-1))  # (n, T, 2)
        y = torch.from_numpy(add_digits(a, b))  # (n, T)
        if not self.cfg.reverse:  # as written: most-significant digit first
            ab, y = ab.flip(1), y.flip(1)
        x = F.one_hot(ab, BASE).flatten(2).float()  # (n, T, 20)
        return x.to(device), y.to(device)

    def decode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
        """Inputs and targets back to Python ints (a, b, sum): what the tests check against a + b."""
        ab, y = x.view(*x.shape[:2], 2, BASE).argmax(-1), y
        if not self.cfg.reverse:
            ab, y = ab.flip(1), y.flip(1)
        return from_digits(ab[..., 0].cpu()), from_digits(ab[..., 1].cpu()), from_digits(y.cpu())
