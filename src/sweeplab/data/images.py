"""Image datasets for the `image` task: decoded once into a uint8 tensor cache, served from memory,
augmented and normalised in batches on the training device (as airbench does), never per sample.

Splits: `train`; `valid`, training images held out (`data.valid_size` of them, else
`data.valid_fraction`) by a permutation seeded from the run's seed (or `data.valid_seed`), so
runs of one seed are compared on the same images; `test`, the dataset's official held-out set
(CIFAR-10 test_batch, MNIST t10k, Tiny-ImageNet val/, a fixed 20% of digits). Every dataset gets a
`valid` split because it, never `test`, picks the best checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from sweeplab.config import MAX_SEED, DataConfig
from sweeplab.data import image_formats as fmt
from sweeplab.data.paths import cache_dir, data_root, dataset_dir, sha256_files
from sweeplab.errors import UserError
from sweeplab.io import load_cache, save_atomic
from sweeplab.registry import DATASETS

CACHE_VERSION = 1  # bump when the decoded layout changes: old cache files are then ignored


# --------------------------------------------------------------------------------- configuration
class ImageDataConfig(DataConfig):
    valid_size: int = Field(0, ge=0, description="training images held out as the `valid` split (which picks the "
                                                 "best checkpoint); 0 = data.valid_fraction of them")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training images held out as `valid` "
                                                               "when data.valid_size is 0")
    valid_seed: int | None = Field(None, ge=0, le=MAX_SEED, description="seed of the `valid` hold-out; null = "
                                                                        "the run's seed")
    train_limit: int = Field(0, ge=0, description="train on at most N images (a fixed random subset), 0 = all")
    test_limit: int = Field(0, ge=0, description="evaluate `test` on its first N images, 0 = all")
    crop_padding: int = Field(0, ge=0, description="random-crop augmentation: zero padding in pixels, 0 = off")
    flip: bool = Field(False, description="random horizontal-flip augmentation")


class CifarDataConfig(ImageDataConfig):
    valid_size: int = Field(5000, ge=0, description="training images held out as the `valid` split (which picks "
                                                    "the best checkpoint); 0 = data.valid_fraction of them")
    crop_padding: int = Field(4, ge=0, description="random-crop augmentation: zero padding in pixels, 0 = off")
    flip: bool = Field(True, description="random horizontal-flip augmentation")


class MnistDataConfig(ImageDataConfig):
    valid_size: int = Field(5000, ge=0, description="training images held out as the `valid` split (which picks "
                                                    "the best checkpoint); 0 = data.valid_fraction of them")


class TinyImageNetDataConfig(ImageDataConfig):
    crop_padding: int = Field(4, ge=0, description="random-crop augmentation: zero padding in pixels, 0 = off")
    flip: bool = Field(True, description="random horizontal-flip augmentation")


@dataclass(frozen=True)
class ImageSource:
    folders: tuple[str, ...]  # usual folders under the data root, first match wins; () = bundled
    files: Callable[[Path], list[Path]]  # the source files (their checksums key the cache)
    decode: fmt.Decoder


def _cifar_files(folder: Path) -> list[Path]:
    files = fmt.cifar_files(folder)
    return [*files["train"], files["test"], *files["meta"]]


SOURCES = {
    "cifar10": (ImageSource(("cifar-10-batches-bin", "cifar-10-batches-py"), _cifar_files, fmt.decode_cifar10),
                CifarDataConfig),
    "mnist": (ImageSource(("MNIST/raw",), lambda f: list(fmt.mnist_files(f).values()), fmt.decode_mnist),
              MnistDataConfig),
    "tinyimagenet": (ImageSource(("tiny-imagenet-200",), fmt.tiny_files, fmt.decode_tinyimagenet),
                     TinyImageNetDataConfig),
    "digits": (ImageSource((), fmt.digits_files, fmt.decode_digits), ImageDataConfig),
}
for _name, (_source, _config) in SOURCES.items():
    DATASETS.register(_name, group="image", config=_config)(_source)


# ------------------------------------------------------------------------------------- the cache
_MEMO: dict[str, dict] = {}  # the last dataset loaded in this process (a sweep reuses it)


def source_folder(name: str, path: str) -> Path:
    source = SOURCES[name][0]
    if not source.folders:
        if path:
            raise UserError(f"data.path: {name!r} ships with scikit-learn, there is no folder to read; leave it empty")
        return Path(".")
    if path:
        return dataset_dir(path, "", name)
    found = [f for f in source.folders if (data_root() / f).is_dir()]
    return dataset_dir("", (found or list(source.folders))[0], name)


def load_decoded(name: str, path: str = "") -> dict:
    """The decoded dataset (uint8 tensors, classes, per-channel mean/std), via the cache."""
    source = SOURCES[name][0]
    folder = source_folder(name, path)
    key = sha256_files(sorted(source.files(folder)))[:24]
    cached = cache_dir() / f"images-{name}-v{CACHE_VERSION}-{key}.pt"
    if str(cached) in _MEMO:
        return _MEMO[str(cached)]
    blob = load_cache(cached, keys=_CACHE_KEYS)  # None: absent or unreadable, then rebuilt from the sources
    if blob is None:
        blob = _prepare(source.decode(folder))
        save_atomic(blob, cached)
    _MEMO.clear()
    _MEMO[str(cached)] = blob
    return blob


_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "test_names", "mean", "std")


def _prepare(d: fmt.Decoded) -> dict:
    mean, std = channel_stats(d.train_x)
    return {"train_x": d.train_x, "train_y": d.train_y, "test_x": d.test_x, "test_y": d.test_y,
            "classes": d.classes, "test_names": d.test_names, "mean": mean, "std": std}


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in 0..1 units) of uint8 images, exactly, from 256-bin histograms."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.size(1)):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        mean = (hist * levels).sum() / hist.sum()
        means.append(mean)
        stds.append(((hist * (levels - mean) ** 2).sum() / hist.sum()).sqrt().clamp_min(1e-3))
    return torch.stack(means).float(), torch.stack(stds).float()


# ------------------------------------------------------------------------------------- the splits
@dataclass
class ImageSplit:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64
    index: torch.Tensor  # (N,) position of each image in its source set (training files for `valid`)
    names: list[str] | None = None  # file names, where the images have them (Tiny-ImageNet)

    def sample_ids(self) -> list[str] | list[int]:
        return self.names if self.names is not None else self.index.tolist()

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class ImageData:
    name: str
    classes: list[str]
    train: ImageSplit
    held_out: dict[str, ImageSplit]  # "valid" (carved from the training images) and "test"
    mean: torch.Tensor  # (C,) of the training images, 0..1 units
    std: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return c, h, w

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_images(name: str, cfg: ImageDataConfig, run_seed: int = 0) -> ImageData:
    """The splits of dataset `name`; `run_seed` seeds the `valid` hold-out unless data.valid_seed is set."""
    blob = load_decoded(name, cfg.path)
    valid, train = holdout_indices(len(blob["train_y"]), cfg, run_seed, name)
    train = (train[: cfg.train_limit] if cfg.train_limit else train).sort().values
    held_out = {"valid": ImageSplit(blob["train_x"][valid], blob["train_y"][valid], valid)}
    test = torch.arange(min(cfg.test_limit or len(blob["test_y"]), len(blob["test_y"])))
    names = blob["test_names"][: len(test)] if blob["test_names"] else None
    held_out["test"] = ImageSplit(blob["test_x"][test], blob["test_y"][test], test, names)
    return ImageData(name, list(blob["classes"]), ImageSplit(blob["train_x"][train], blob["train_y"][train], train),
                     held_out, blob["mean"], blob["std"])


def holdout_indices(n: int, cfg: ImageDataConfig, run_seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, train) positions in the training set: disjoint, from one seeded permutation; valid sorted."""
    size = cfg.valid_size or max(1, round(n * cfg.valid_fraction))
    if size >= n:
        what = f"data.valid_size={cfg.valid_size}" if cfg.valid_size else f"data.valid_fraction={cfg.valid_fraction}"
        raise UserError(f"{what} leaves no training images: {name} has {n:,}; accepted: fewer than {n:,} held out")
    seed = run_seed if cfg.valid_seed is None else cfg.valid_seed
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed % 2**63))
    return order[:size].sort().values, order[size:]


# ------------------------------------------------------------------ batched augmentation on device
def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch: batch order and augmentation are a function of (seed, epoch)
    only, so a resumed run draws exactly what the uninterrupted run would have drawn."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


@dataclass
class EpochPlan:
    order: torch.Tensor  # (N,) the permutation of the epoch
    shifts: torch.Tensor | None  # (N, 2) crop offsets (dy, dx) in 0..2*padding, aligned with `order`
    flips: torch.Tensor | None  # (N,) bool


def plan_epoch(n: int, seed: int, epoch: int, padding: int, flip: bool, device: torch.device) -> EpochPlan:
    g = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=g)
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=g) if padding else None
    flips = torch.rand(n, generator=g) < 0.5 if flip else None
    return EpochPlan(order.to(device), None if shifts is None else shifts.to(device),
                     None if flips is None else flips.to(device))


def augment(x: torch.Tensor, shifts: torch.Tensor | None, flips: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Random crop and horizontal flip of a uint8 batch, as torchvision's RandomCrop(size, padding)
    then RandomHorizontalFlip, for the whole batch in one gather: each output pixel's position in
    the zero-padded image is computed (row shifted by dy; column shifted by dx, mirrored if flipped)."""
    if shifts is None and flips is None:
        return x
    B, C, H, W = x.shape
    if shifts is None:
        shifts, padding = torch.zeros(B, 2, dtype=torch.long, device=x.device), 0
    source = F.pad(x, (padding, padding, padding, padding)) if padding else x  # (B, C, H+2p, W+2p)
    cols = torch.arange(W, device=x.device).expand(B, W)
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)  # (B, W)
    rows = shifts[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    index = rows[:, :, None] * (W + 2 * padding) + shifts[:, 1, None, None] + cols[:, None, :]  # (B, H, W)
    out = source.reshape(B, C, -1).gather(2, index.view(B, 1, H * W).expand(B, C, H * W))
    return out.view(B, C, H, W)


class Normalizer:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std, as one multiply-add."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device, channels_last: bool = False):
        self.scale = (1 / (255 * std)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addcmul(self.shift, x.float(), self.scale)
        return out.contiguous(memory_format=self.memory_format)


def augmented_batches(x: torch.Tensor, y: torch.Tensor, plan: EpochPlan, batch_size: int, padding: int,
                      normalize: Normalizer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's training batches: full batches only (a batch of one breaks BatchNorm), unless the
    whole set is smaller than one batch."""
    for i in range(max(len(y) // batch_size, 1)):
        sel = slice(i * batch_size, (i + 1) * batch_size)
        idx = plan.order[sel]
        shifts = None if plan.shifts is None else plan.shifts[sel]
        flips = None if plan.flips is None else plan.flips[sel]
        xb = augment(x[idx], shifts, flips, padding)  # (B, C, H, W) uint8
        yield normalize(xb), y[idx]


def eval_batches(split: ImageSplit, batch_size: int, normalize: Normalizer,
                 device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        xb = split.x[start:start + batch_size].to(device, non_blocking=True)
        yield normalize(xb), split.y[start:start + batch_size].to(device, non_blocking=True)
