"""Shared fixtures: a private store and cache per test, tiny data, the real data where present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_shared = REPO.parent / "shared" / "data"
if not os.environ.get("SWEEPLAB_DATA") and _shared.is_dir():
    os.environ["SWEEPLAB_DATA"] = str(_shared)
REAL_DATA = Path(os.environ["SWEEPLAB_DATA"]) if os.environ.get("SWEEPLAB_DATA") else None


def real_data(folder: str) -> Path:
    """The real dataset folder, or skip (CI always has ../shared/data)."""
    if REAL_DATA is None or not (REAL_DATA / folder).is_dir():
        pytest.skip(f"real data {folder!r} not present (set SWEEPLAB_DATA)")
    return REAL_DATA / folder


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own prepared-data cache and default store; nothing touches ~/.cache or ./runs."""
    monkeypatch.setenv("SWEEPLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # Set (to empty: unset for sweeplab) rather than deleted, so that what a test's command writes there
    # (`--artifacts` exports its value for the processes it starts) is undone when the test ends.
    monkeypatch.setenv("SWEEPLAB_STORE", "")
    monkeypatch.setenv("SWEEPLAB_ARTIFACTS", "")


@pytest.fixture
def one_thread():
    """Tiny, sequential models: a second intra-op thread only adds contention on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs' / 'sweeplab.sqlite'}"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A small corpus in the `text` layout: real words, a few thousand tokens."""
    words = ("the cat sat on the mat and the dog ate the bone while a bird sang in the tree "
             "then it rained so they went home to sleep").split()
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, lines in (("train", 120), ("valid", 20), ("test", 20)):
        text = "\n".join(" ".join(words[(i * 3 + j) % len(words)] for j in range(12)) for i in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder
