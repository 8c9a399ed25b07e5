"""Readers of the image datasets' own file formats, each returning uint8 tensors (N, C, H, W).

- CIFAR-10 binary version: records `<1 byte label><1024 R><1024 G><1024 B>`, plain or `.xz`.
- CIFAR-10 python version: pickled dicts, read with an unpickler that admits only what those
  files hold (dicts, lists, bytes, NumPy arrays); a file that asks for anything else is refused.
- MNIST: idx files (big-endian header: magic, dimensions), plain or `.gz`.
- Tiny-ImageNet: `wnids.txt` (line order = class id), `words.txt` (names),
  `train/<wnid>/images/*`, `val/images/*` labelled in place by `val/val_annotations.txt`.
- digits: scikit-learn's bundled 8x8 digits (0..16 levels, scaled to 0..255).

Every problem a user can cause (missing or truncated file, wrong record size, a class folder with no
images) is a UserError naming the file.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeplab.errors import UserError
from sweeplab.limits import DECOMPRESSED_BYTES, IMAGE_PIXELS

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@dataclass
class Decoded:
    """A dataset as decoded from its files: the training set and the official held-out set."""

    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    test_names: list[str] | None = None  # file names of the held-out images, where they have names


def _workers() -> int:
    return min(8, os.cpu_count() or 1)


def read_bytes(path: Path, name: str) -> bytes:
    """A file's bytes, decompressed if it ends in .xz or .gz (the decompressors release the GIL: threads decode
    in parallel), never more than the cap: a few kB of .xz can claim gigabytes."""
    raw = path.read_bytes()
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix)
    if opener is None:
        return raw
    limit = DECOMPRESSED_BYTES.value()
    try:
        with opener(io.BytesIO(raw)) as file:
            data = file.read(limit + 1)
    except (lzma.LZMAError, EOFError, OSError) as exc:
        raise UserError(f"dataset {name!r}: {path} is truncated or not a valid {path.suffix} file ({exc})") from None
    if len(data) > limit:
        raise UserError(f"dataset {name!r}: {path} decompresses to more than the limit of {limit:,} bytes; "
                        + DECOMPRESSED_BYTES.how_to_raise())
    return data


def find_file(folder: Path, stems: list[str], name: str) -> Path:
    """The first of `stems` present in `folder`, as is or compressed (.xz, .gz)."""
    for stem in stems:
        for suffix in ("", ".xz", ".gz"):
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    raise UserError(f"dataset {name!r}: missing file {folder / stems[0]} (also looked for "
                    f"{', '.join(s + x for s in stems for x in ('', '.xz', '.gz'))}); "
                    f"`sweeplab data fetch {name}` says where it comes from")


# ------------------------------------------------------------------------------------- CIFAR-10
def cifar_files(folder: Path) -> dict[str, Any]:
    """The batch files of either CIFAR-10 version, and which version they are."""
    if not any(folder.glob("data_batch_1.bin*")) and not (folder / "data_batch_1").is_file():
        raise UserError(f"dataset 'cifar10': {folder} holds neither the binary version (data_batch_1.bin ... "
                        "data_batch_5.bin, test_batch.bin, plain or .xz) nor the python version (data_batch_1 ... "
                        "data_batch_5, test_batch); `sweeplab data fetch cifar10` says where they come from")
    if any(folder.glob("data_batch_1.bin*")):
        train = [find_file(folder, [f"data_batch_{i}.bin"], "cifar10") for i in range(1, 6)]
        tests = sorted(folder.glob("test_batch*.bin*"))
        # the official test_batch.bin, or one partial copy such as test_batch_first1000.bin.xz
        test = find_file(folder, ["test_batch.bin"], "cifar10") if len(tests) != 1 else tests[0]
        meta = [p for p in (folder / "batches.meta.txt", folder / "class_names.txt") if p.is_file()]
        return {"kind": "bin", "train": train, "test": test, "meta": meta[:1]}
    train = [find_file(folder, [f"data_batch_{i}"], "cifar10") for i in range(1, 6)]
    test = find_file(folder, ["test_batch"], "cifar10")
    meta = [folder / "batches.meta"] if (folder / "batches.meta").is_file() else []
    return {"kind": "py", "train": train, "test": test, "meta": meta}


def read_cifar_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = read_bytes(path, "cifar10")
    if not data or len(data) % CIFAR_RECORD:
        raise UserError(f"dataset 'cifar10': {path} holds {len(data):,} bytes, not a whole number of "
                        f"{CIFAR_RECORD:,}-byte records (label + 32x32x3 pixels): wrong record size or truncated")
    records = np.frombuffer(data, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    _check_labels(labels, len(CIFAR_CLASSES), path, "cifar10")
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())  # the planes are already CHW
    return images, labels


class CifarUnpickler(pickle.Unpickler):
    """Admits only what CIFAR-10's python batches hold: containers, bytes and NumPy arrays.

    pickle runs whatever callable a file names; this one resolves only the few names needed to
    rebuild a NumPy array (they allocate memory and copy bytes, nothing else), and refuses every
    other global, so a malicious file fails before any of its code can run.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("_codecs", "encode"): __import__("codecs").encode,  # how protocol 2 writes bytes from Python 3
    }

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UserError(f"dataset 'cifar10': refusing to unpickle {self.path}: it asks for {module}.{name}, "
                            "and CIFAR-10 python batches hold only dicts, lists, bytes and NumPy arrays") from None


def unpickle_cifar(path: Path) -> dict[str, Any]:
    """A python-version batch as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a damaged file
        raise UserError(f"dataset 'cifar10': {path} is not a readable CIFAR-10 python batch "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"dataset 'cifar10': {path} holds a {type(obj).__name__}, not a CIFAR-10 batch dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_cifar_py(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = unpickle_cifar(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"dataset 'cifar10': {path}: 'data' must be a uint8 array of shape (N, 3072)")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(v, int) for v in labels):
        raise UserError(f"dataset 'cifar10': {path}: 'labels' must be a list of {len(data)} integers")
    y = torch.tensor(labels, dtype=torch.int64)
    _check_labels(y, len(CIFAR_CLASSES), path, "cifar10")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), y


def _cifar_classes(meta: list[Path]) -> list[str]:
    if not meta:
        return list(CIFAR_CLASSES)
    if meta[0].suffix == ".txt":
        names = [line.strip() for line in _lines(meta[0], "cifar10")]
    else:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in unpickle_cifar(meta[0]).get("label_names", [])]
    return names if len(names) == len(CIFAR_CLASSES) else list(CIFAR_CLASSES)


def decode_cifar10(folder: Path) -> Decoded:
    files = cifar_files(folder)
    read = read_cifar_bin if files["kind"] == "bin" else read_cifar_py
    with ThreadPoolExecutor(_workers()) as pool:  # xz decoding releases the GIL: batches in parallel
        parts = list(pool.map(read, [*files["train"], files["test"]]))
    train_x = torch.cat([x for x, _ in parts[:-1]])
    train_y = torch.cat([y for _, y in parts[:-1]])
    return Decoded(train_x, train_y, parts[-1][0], parts[-1][1], _cifar_classes(files["meta"]))


# ---------------------------------------------------------------------------------------- MNIST
MNIST_STEMS = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
               "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def mnist_files(folder: Path) -> dict[str, Path]:
    return {key: find_file(folder, [stem, stem.replace("-idx", ".idx")], "mnist") for key, stem in MNIST_STEMS.items()}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte idx file: magic 0x0000 08 <ndim>, then ndim big-endian int32 sizes, then the data."""
    data = read_bytes(path, "mnist")
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise UserError(f"dataset 'mnist': {path} is not an unsigned-byte idx file with {ndim} dimensions "
                        f"(magic 0x0000080{ndim})")
    shape = tuple(int(v) for v in np.frombuffer(data, ">i4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise UserError(f"dataset 'mnist': {path} should hold {size:,} bytes of data for shape {shape}, "
                        f"it holds {len(data) - header:,}: truncated or damaged")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def decode_mnist(folder: Path) -> Decoded:
    files = mnist_files(folder)
    with ThreadPoolExecutor(_workers()) as pool:
        arrays = dict(zip(files, pool.map(lambda k: read_idx(files[k], 3 if k.endswith("x") else 1), files),
                          strict=True))
    out: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise UserError(f"dataset 'mnist': {files[split + '_x']} has {len(x):,} images but "
                            f"{files[split + '_y']} has {len(y):,} labels")
        out[f"{split}_x"] = torch.from_numpy(x.copy()).unsqueeze(1)  # (N, 1, 28, 28)
        out[f"{split}_y"] = torch.from_numpy(y.astype(np.int64))
        _check_labels(out[f"{split}_y"], 10, files[f"{split}_y"], "mnist")
    return Decoded(out["train_x"], out["train_y"], out["test_x"], out["test_y"], [str(d) for d in range(10)])


# -------------------------------------------------------------------------------- Tiny-ImageNet
def _lines(path: Path, name: str = "tinyimagenet") -> list[str]:
    try:
        text = path.read_text(encoding="utf8")
    except UnicodeDecodeError as exc:  # a binary file where an index is expected: name it, no traceback
        raise UserError(f"dataset {name!r}: {path}: not a UTF-8 text file (invalid byte at offset {exc.start:,}); "
                        "expected one entry a line") from None
    return [line.rstrip("\r") for line in text.splitlines() if line.strip()]


def tiny_layout(folder: Path) -> dict[str, Any]:
    """wnids (class order), names, training files per class and labelled validation files."""
    from sweeplab.data.paths import require_file

    wnids = [line.strip() for line in _lines(require_file(folder / "wnids.txt", "tinyimagenet"))]
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (folder / "words.txt").is_file():
        words = dict(line.split("\t", 1) for line in _lines(folder / "words.txt") if "\t" in line)
    train = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        files = sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
        if not files:
            raise UserError(f"dataset 'tinyimagenet': class {wnid} (wnids.txt) has no images in {images}")
        train += [(p, index[wnid]) for p in files]
    val = []
    annotations = require_file(folder / "val" / "val_annotations.txt", "tinyimagenet")
    for n, line in enumerate(_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"dataset 'tinyimagenet': {annotations} line {n}: expected `file<TAB>wnid...` "
                            f"with a wnid from wnids.txt, got {line[:60]!r}")
        val.append((require_file(folder / "val" / "images" / fields[0], "tinyimagenet"), index[fields[1]]))
    return {"wnids": wnids, "classes": [words.get(w, w).split(",")[0].strip() for w in wnids],
            "train": train, "val": val}


def tiny_files(folder: Path) -> list[Path]:
    layout = tiny_layout(folder)
    texts = [folder / "wnids.txt", folder / "val" / "val_annotations.txt"]
    texts += [folder / "words.txt"] if (folder / "words.txt").is_file() else []
    return texts + [p for p, _ in layout["train"]] + [p for p, _ in layout["val"]]


def _decode_image(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path, formats=("JPEG", "PNG")) as img:  # the header only: no pixel is decoded yet
            if img.width * img.height > max_pixels:  # a small file can claim gigapixels (a decompression bomb)
                raise UserError(f"dataset 'tinyimagenet': {path} is {img.width:,}x{img.height:,} pixels, more than "
                                f"the limit of {max_pixels:,} pixels for one image; {IMAGE_PIXELS.how_to_raise()}")
            return np.asarray(img.convert("RGB"))  # (H, W, 3); grayscale images become RGB
    except OSError as exc:
        raise UserError(f"dataset 'tinyimagenet': cannot decode {path} ({exc})") from None


def _decode_images(items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    max_pixels = IMAGE_PIXELS.value()
    # Our own check replaces Pillow's, which warns (a second stderr line) between its limit and twice it.
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with ThreadPoolExecutor(_workers()) as pool:  # Pillow releases the GIL while decoding
            arrays = list(pool.map(lambda path: _decode_image(path, max_pixels), [p for p, _ in items]))
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    shape = arrays[0].shape
    for (path, _), array in zip(items, arrays, strict=True):
        if array.shape != shape:
            raise UserError(f"dataset 'tinyimagenet': {path} is {array.shape[1]}x{array.shape[0]}, the others "
                            f"{shape[1]}x{shape[0]}: all images must have one size")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return x, torch.tensor([label for _, label in items], dtype=torch.int64)


def decode_tinyimagenet(folder: Path) -> Decoded:
    layout = tiny_layout(folder)
    train_x, train_y = _decode_images(layout["train"])
    test_x, test_y = _decode_images(layout["val"])
    return Decoded(train_x, train_y, test_x, test_y, layout["classes"], [p.name for p, _ in layout["val"]])


# --------------------------------------------------------------------------------------- digits
DIGITS_TEST = 360  # the fixed held-out part (20%) of the 1,797 digits
DIGITS_SPLIT_SEED = 0


def digits_files(_: Path) -> list[Path]:
    import importlib.resources

    return [Path(str(importlib.resources.files("sklearn.datasets.data") / "digits.csv.gz"))]


def decode_digits(_: Path) -> Decoded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.round(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = order[:DIGITS_TEST].sort().values, order[DIGITS_TEST:].sort().values
    return Decoded(x[train], y[train], x[test], y[test], [str(d) for d in range(10)])


def _check_labels(labels: torch.Tensor, num_classes: int, path: Path, name: str) -> None:
    if len(labels) and int(labels.max()) >= num_classes:
        raise UserError(f"dataset {name!r}: {path} has label {int(labels.max())}; expected 0..{num_classes - 1}")


Decoder = Callable[[Path], Decoded]
