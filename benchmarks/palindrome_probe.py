"""What makes the course's vanilla RNN remember a palindrome's first digit? (issue 10, FIDELITY.md)

A standalone probe: one variant of the palindrome set-up per run, trained as the course report
states (RMSprop, batch 128, hidden 128, scalar digits, max-norm 10), and the accuracy on 1,000
fresh palindromes every `--every` steps. The variants change one thing at a time:

  --digits-read N   the model reads N digits; the palindrome has N+1 (the course skeleton's
                    `PalindromeDataset(input_length + 1)`): "length 10" reads 10 digits
  --init torch|linear
                    torch: U(-1/sqrt(H), 1/sqrt(H)) for every weight (torch.nn.RNN's rule, ours);
                    linear: three nn.Linear layers (W_hx, W_hh, W_ph), each U(-1/sqrt(fan_in), ..):
                    W_hx, fed one scalar digit, is then U(-1, 1), 11x larger
  --scale S         digits fed as value * S (1 = as the skeleton feeds them)
  --onehot          digits fed one-hot (input size 10) instead of as one number
  --clip C          max-norm (0 = off: the skeleton's clip line sits before the backward pass)
  --alpha, --eps    RMSprop's smoothing and epsilon (torch's defaults 0.99, 1e-8)

  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/palindrome_probe.py --digits-read 10 --init linear
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from sweeplab.data.sequences import palindromes, seeded_rng


class Probe(nn.Module):
    def __init__(self, init: str, input_dim: int, hidden: int = 128):
        super().__init__()
        self.W_hx, self.W_hh, self.W_ph = nn.Linear(input_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 10)
        if init == "torch":  # one bias, every weight U(-1/sqrt(H), 1/sqrt(H)), as sweeplab's VanillaRNN
            k = 1 / math.sqrt(hidden)
            for p in self.parameters():
                nn.init.uniform_(p, -k, k)
            nn.init.zeros_(self.W_hh.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.size(0), self.W_hh.in_features)  # (B, H)
        for x_t in x.unbind(1):
            h = torch.tanh(self.W_hx(x_t) + self.W_hh(h))
        return self.W_ph(h)  # (B, 10)


def batch(seed: int, index: int, n: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    full = torch.from_numpy(palindromes(seeded_rng(seed, "train", index), n, args.digits_read + 1))
    if args.onehot:
        return nn.functional.one_hot(full[:, :-1], 10).float(), full[:, -1]  # (n, T, 10)
    return full[:, :-1].float().unsqueeze(-1) * args.scale, full[:, -1]  # (n, T, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--digits-read", type=int, default=10)
    p.add_argument("--init", choices=["torch", "linear"], default="torch")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--onehot", action="store_true")
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--alpha", type=float, default=0.99)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=1111)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model = Probe(args.init, 10 if args.onehot else 1)
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr, alpha=args.alpha, eps=args.eps)
    test_x, test_y = batch(args.seed + 1, 0, 1000, args)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        x, y = batch(args.seed, step, 128, args)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if args.clip:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if step % args.every == 0:
            with torch.no_grad():
                curve.append(round((model(test_x).argmax(-1) == test_y).float().mean().item(), 3))
    print(json.dumps({**vars(args), "acc": curve, "s": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
