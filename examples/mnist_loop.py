"""A plain PyTorch training loop for MNIST, in the style of pytorch/examples' mnist/main.py, run by sweeplab.

    sweeplab run examples/mnist_loop.py:train lr=0.05 epochs=2
    sweeplab sweep examples/mnist_lr.yaml && sweeplab report examples/mnist_lr.yaml --out reports/mnist_lr

The loop, its model and its DataLoader are ordinary PyTorch; sweeplab gives it `config` (the fields of Config,
set with KEY=VALUE) and `run`, which stores what it logs, checkpoints it, and says when to stop.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sweeplab.api import Run


class Config(BaseModel):
    lr: float = Field(0.05, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    epochs: int = Field(3, ge=1, description="passes over the training images")
    batch_size: int = Field(64, ge=1, description="training batch size")
    train_size: int = Field(0, ge=0, description="training images used, 0 = all 60,000")
    test_size: int = Field(0, ge=0, description="test images used, 0 = all 10,000")
    data: str = Field("", description="folder of the four idx .gz files (default $SWEEPLAB_DATA/MNIST/raw)")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format): a magic number whose last byte is the rank, the sizes, then uint8 data."""
    data = gzip.decompress(path.read_bytes())
    rank = data[3]
    shape = np.frombuffer(data, ">u4", rank, 4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


def mnist(folder: Path, split: str, limit: int) -> TensorDataset:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (torch.from_numpy(images.copy()).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    model.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    return loss / len(loader.dataset), correct / len(loader.dataset)


def train(config: Config, run: Run) -> None:
    folder = Path(config.data or Path(os.environ.get("SWEEPLAB_DATA", "data")) / "MNIST" / "raw")
    train_set, test_set = mnist(folder, "train", config.train_size), mnist(folder, "test", config.test_size)
    generator = torch.Generator().manual_seed(run.seed)  # the shuffling: its state is checkpointed below
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    test_loader = DataLoader(test_set, batch_size=1000)

    torch.manual_seed(run.seed)
    model = Net().to(run.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    # the parameter count for the tables, and what guessing one of 10 digits scores: the report marks a run whose
    # accuracy is no better as one that did not learn
    run.summarize(params=sum(p.numel() for p in model.parameters()), **{"chance/acc": 0.1})

    start, step = 1, 0
    state = run.restore()  # None on a first start; after a kill, what the last run.save() kept
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, step = state["epoch"] + 1, state["step"]

    for epoch in range(start, config.epochs + 1):
        model.train()
        total = correct = seen = 0.0
        for x, y in train_loader:
            x, y = x.to(run.device), y.to(run.device)
            optimizer.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        run.log(step=step, epoch=epoch, split="train", loss=total / seen, acc=correct / seen)
        test_loss, test_acc = evaluate(model, test_loader, run.device)
        run.log(split="test", loss=test_loss, acc=test_acc)
        run.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "generator": generator.get_state(), "epoch": epoch, "step": step})
        if run.should_stop():  # Ctrl-C: the run ends here, resumable from the checkpoint just saved
            return
