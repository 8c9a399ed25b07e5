"""Every `sweeplab` command in the README, run through the CLI as written, in README order.

Commands that would train for minutes are checked without the long part: a `run` without `--name`
gets `--dry-run` (config, data and model are built; nothing trains), a `sweep` with `--budget` gets
`--plan`. Named runs are trained for real on less data (a few appended overrides), because later
commands (`generate`, `compare`, `runs show` ...) read them. GPU commands must say there is no GPU.
"""
from __future__ import annotations

import glob
import json
import re
import shlex
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import REPO, real_data
from typer.testing import CliRunner

from sweeplab.cli import app

SMALLER = {"lm": ["data.train_tokens=3000", "data.eval_tokens=700"], "image": ["data.train_limit=64", "data.test_limit=64"],
           "palindrome": ["train.max_steps=20"], "addition": ["train.max_steps=20"], "toy2d": [],
           "examples/mnist_loop.py:train": ["train_size=256", "test_size=128", "epochs=1"]}
WLM_LOG = """| epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.67 | loss  6.98 | ppl  1078.32
| end of epoch   1 | time: 95.42s | valid loss  5.54 | valid ppl   254.86
| End of training | test loss  4.97 | test ppl   144.54
"""


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)  # plain blocks; `sh` ones (a cluster's set-up) are not run
    lines = [line for lang, block in blocks if not lang for line in block.splitlines()]
    commands = []
    for line in lines:
        if line.startswith("sweeplab "):
            words = shlex.split(line, comments=True)
            commands.append(words[1: words.index(">")] if ">" in words else words[1:])
    return commands


def adapted(args: list[str]) -> list[str]:
    args = [m for a in args for m in (sorted(glob.glob(a)) if "*" in a else [a])]  # as the shell would
    if args[0] == "run" and "--name" in args:  # the smaller settings replace the recipe's own (a key once)
        smaller = SMALLER[args[1]]
        keys = {pair.split("=", 1)[0] + "=" for pair in smaller}
        return [a for a in args if not a.startswith(tuple(keys))] + smaller
    if args[0] == "run" and "--help" not in args and "--dump-config" not in args:
        return args + ["--dry-run"]
    if args[0] == "sweep" and "--budget" in args:
        return args + (["--plan"] if "--plan" not in args else [])
    return args


def test_readme_has_recipes_for_every_command():
    used = {args[0] for args in readme_commands()}
    assert {"run", "sweep", "report", "runs", "generate", "attention", "compare", "import", "bench"} <= used


def test_every_readme_command_works(tmp_path, monkeypatch):
    for folder in ("wikitext-2", "ptb", "MNIST", "cifar-10-batches-bin", "tiny-imagenet-10"):
        real_data(folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPLAB_STORE", f"sqlite:///{tmp_path / 'runs' / 'sweeplab.sqlite'}")
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "word_language_model.log").write_text(WLM_LOG)
    corpus = tmp_path / "path" / "to" / "corpus"
    corpus.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("a small corpus of words\n" * 40)
    runner = CliRunner()
    for args in readme_commands():
        start = time.perf_counter()
        result = runner.invoke(app, adapted(args))
        print(f"{time.perf_counter() - start:6.1f}s  sweeplab {' '.join(args)}")  # shown with -s
        if "device=cuda" in args and not torch.cuda.is_available():
            assert result.exit_code == 2 and "CUDA" in result.stderr, (args, result.output)
            continue
        assert result.exit_code == 0, (args, result.output)
    assert Path("attention.svg").stat().st_size > 1000
    assert Path("reports/quick/index.html").exists()


# What a recipe must reach, as written in the README, to count as one that learns (chance: 0.1 and 0.5).
LEARNS = {"palindrome": ("test/acc", 0.9), "toy2d": ("test/acc", 0.85)}


@pytest.mark.parametrize("args", [a for a in readme_commands() if a[0] == "run" and a[1] in LEARNS and "--name" in a],
                         ids=" ".join)
def test_readme_recipes_learn(args, tmp_path):
    """A recipe that ends `finished` at chance is a broken recipe (the palindrome's at lr 1e-2 did)."""
    metric, bound = LEARNS[args[1]]
    result = CliRunner().invoke(app, [*args, "--json", "--store", f"sqlite:///{tmp_path / 's.sqlite'}"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["status"] == "finished" and printed["metrics"][metric] >= bound, printed["metrics"]


@pytest.mark.parametrize("args", [a for a in readme_commands() if a[0] == "sweep"], ids=" ".join)
def test_readme_sweeps_name_real_experiment_files(args):
    assert (REPO / args[1]).is_file()
