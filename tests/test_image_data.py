"""Image datasets: the real files in ../shared/data, small files written here in the same formats,
the restricted unpickler, the uint8 cache, the splits and the batched on-device augmentation."""
from __future__ import annotations

import gzip
import lzma
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import real_data
from typer.testing import CliRunner

from sweeplab.cli import app
from sweeplab.data import image_formats as fmt
from sweeplab.data import images
from sweeplab.data.images import (
    ImageDataConfig,
    Normalizer,
    augment,
    channel_stats,
    load_decoded,
    load_images,
    plan_epoch,
)
from sweeplab.errors import UserError
from sweeplab.store import open_store

runner = CliRunner()
WNIDS = ["n02124075", "n04067472", "n04540053"]


@pytest.fixture(autouse=True)
def _forget_memo():
    images._MEMO.clear()  # each test reads through the (per-session) disk cache, not a previous test's memory


# ------------------------------------------------------------------- writers of the real formats
def write_cifar_bin(folder: Path, per_batch: int = 6, test: int = 4, xz: bool = False, seed: int = 0) -> dict:
    """Six CIFAR-10 binary batches of random images; returns what they hold."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    held = {}
    for stem, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        data = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).tobytes()
        path = folder / f"{stem}.bin{'.xz' if xz else ''}"
        path.write_bytes(lzma.compress(data) if xz else data)
        held[stem] = (x, y.astype(np.int64))
    return held


def write_cifar_py(folder: Path, per_batch: int = 5, protocol: int = 2) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    held = {}
    for stem in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": stem.encode(), b"labels": y, b"data": x,
                 b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (folder / stem).write_bytes(pickle.dumps(batch, protocol=protocol))
        held[stem] = (x.reshape(-1, 3, 32, 32), np.array(y))
    names = {b"label_names": [n.encode() for n in fmt.CIFAR_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(names, protocol=protocol))
    return held


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_mnist(folder: Path, train: int = 12, test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    held = {}
    for prefix, n in (("train", train), ("t10k", test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", x), ("labels-idx1", y)):
            data = _idx(array)
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)
        held[prefix] = (x, y.astype(np.int64))
    return held


def write_tiny(folder: Path, per_class: int = 3, val_per_class: int = 2, size: int = 64) -> Path:
    """A Tiny-ImageNet folder in the standard layout, one grayscale image among the JPEGs."""
    rng = np.random.default_rng(2)
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text("n02124075\tEgyptian cat\nn04067472\treel\nn04540053\tvolleyball\n")

    def image(path: Path, gray: bool = False) -> None:
        shape = (size, size) if gray else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, "JPEG")

    for w in WNIDS:
        (folder / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            image(folder / "train" / w / "images" / f"{w}_{i}.JPEG", gray=(w, i) == (WNIDS[1], 0))
    lines = []
    for k in range(val_per_class * len(WNIDS)):
        name = f"val_{k * 7}.JPEG"  # not contiguous, as in the real val/
        image(folder / "val" / "images" / name)
        lines.append(f"{name}\t{WNIDS[(k * 2) % len(WNIDS)]}\t0\t0\t10\t10")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


# -------------------------------------------------------------------------------- the real files
def test_real_cifar10_is_complete_and_in_the_standard_order():
    folder = real_data("cifar-10-batches-bin")
    blob = load_decoded("cifar10", str(folder))
    assert blob["train_x"].shape == (50_000, 3, 32, 32) and blob["train_x"].dtype == torch.uint8
    assert torch.bincount(blob["train_y"]).tolist() == [5000] * 10
    assert len(blob["test_y"]) == len(blob["test_x"]) > 0
    assert blob["classes"] == (folder / "class_names.txt").read_text().split()
    # data_batch_1 image 0 is a frog with these first red values, as widely printed
    assert int(blob["train_y"][0]) == blob["classes"].index("frog")
    assert blob["train_x"][0, 0, 0, :10].tolist() == [59, 43, 50, 68, 98, 119, 139, 145, 149, 149]
    # the per-channel statistics every CIFAR-10 recipe normalises with
    assert blob["mean"].tolist() == pytest.approx([0.4914, 0.4822, 0.4465], abs=1e-4)
    assert blob["std"].tolist() == pytest.approx([0.2470, 0.2435, 0.2616], abs=1e-4)


def test_real_mnist_has_60000_training_images():
    blob = load_decoded("mnist", str(real_data("MNIST/raw")))
    assert blob["train_x"].shape == (60_000, 1, 28, 28) and blob["test_x"].shape == (10_000, 1, 28, 28)
    assert torch.bincount(blob["train_y"]).sum() == 60_000 and int(blob["train_y"].max()) == 9
    assert blob["mean"].item() == pytest.approx(0.1307, abs=1e-4)  # the constants of every MNIST recipe
    assert blob["std"].item() == pytest.approx(0.3081, abs=1e-4)


def test_real_tinyimagenet_labels_follow_wnids_and_val_annotations():
    folder = real_data("tiny-imagenet-10")
    blob = load_decoded("tinyimagenet", str(folder))
    wnids = (folder / "wnids.txt").read_text().split()
    assert blob["train_x"].shape == (5000, 3, 64, 64) and blob["test_x"].shape == (500, 3, 64, 64)
    assert torch.bincount(blob["train_y"]).tolist() == [500] * 10
    annotations = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines()]
    assert blob["test_names"] == [a[0] for a in annotations]
    assert blob["test_y"].tolist() == [wnids.index(a[1]) for a in annotations]
    words = dict(line.split("\t") for line in (folder / "words.txt").read_text().splitlines())
    assert blob["classes"] == [words[w].split(",")[0] for w in wnids]
    first = Image.open(folder / "val" / "images" / annotations[0][0]).convert("RGB")
    assert torch.equal(blob["test_x"][0], torch.from_numpy(np.array(first)).permute(2, 0, 1))


def test_real_tinyimagenet_grayscale_images_become_rgb():
    folder = real_data("tiny-imagenet-10")
    blob = load_decoded("tinyimagenet", str(folder))
    wnid = (folder / "wnids.txt").read_text().split()[0]
    files = sorted((folder / "train" / wnid / "images").iterdir())
    gray = next(i for i, p in enumerate(files) if Image.open(p).mode == "L")
    x = blob["train_x"][gray]  # class 0 comes first, its files sorted
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_digits_come_from_scikit_learn():
    from sklearn.datasets import load_digits

    data = load_images("digits", ImageDataConfig())
    assert len(data.train) + len(data.held_out["valid"]) + len(data.held_out["test"]) == len(load_digits().target) == 1797
    assert data.shape == (1, 8, 8) and data.num_classes == 10 and int(data.train.x.max()) == 255


# ------------------------------------------------------------------- written files, same formats
@pytest.mark.parametrize("xz", [False, True])
def test_cifar_binary_records_decode_exactly(tmp_path, xz):
    held = write_cifar_bin(tmp_path / "c", xz=xz)
    d = fmt.decode_cifar10(tmp_path / "c")
    assert np.array_equal(d.train_x.numpy(), np.concatenate([held[f"data_batch_{i}"][0] for i in range(1, 6)]))
    assert d.train_y.tolist() == np.concatenate([held[f"data_batch_{i}"][1] for i in range(1, 6)]).tolist()
    assert np.array_equal(d.test_x.numpy(), held["test_batch"][0]) and d.classes == fmt.CIFAR_CLASSES


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_python_pickles_decode_exactly(tmp_path, protocol):
    held = write_cifar_py(tmp_path / "cifar-10-batches-py", protocol=protocol)
    d = fmt.decode_cifar10(tmp_path / "cifar-10-batches-py")
    assert np.array_equal(d.train_x.numpy(), np.concatenate([held[f"data_batch_{i}"][0] for i in range(1, 6)]))
    assert d.test_y.tolist() == held["test_batch"][1].tolist()


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", ["os.system", "eval", "nested"])
def test_a_malicious_pickle_is_refused_not_run(tmp_path, payload):
    write_cifar_py(tmp_path / "c")
    sentinel = tmp_path / "pwned"
    if payload == "os.system":
        blob = pickle.dumps(_Evil(sentinel))
    elif payload == "eval":
        blob = b"cbuiltins\neval\n(V__import__('os').system('touch " + str(sentinel).encode() + b"')\ntR."
    else:  # the evil object hidden inside an otherwise normal batch dict
        blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(sentinel)]})
    (tmp_path / "c" / "data_batch_3").write_bytes(blob)
    with pytest.raises(UserError, match="refusing to unpickle .*data_batch_3"):
        fmt.decode_cifar10(tmp_path / "c")
    assert not sentinel.exists()


def test_mnist_idx_plain_and_gz_decode_exactly(tmp_path):
    held = write_mnist(tmp_path / "gz", gz=True)
    write_mnist(tmp_path / "plain", gz=False)
    for folder in ("gz", "plain"):
        d = fmt.decode_mnist(tmp_path / folder)
        assert np.array_equal(d.train_x[:, 0].numpy(), held["train"][0])
        assert d.test_y.tolist() == held["t10k"][1].tolist()


def test_tinyimagenet_layout_decodes_in_place(tmp_path):
    folder = write_tiny(tmp_path / "tiny")
    d = fmt.decode_tinyimagenet(folder)
    assert d.train_x.shape == (9, 3, 64, 64) and d.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert d.classes == ["Egyptian cat", "reel", "volleyball"]
    lines = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines()]
    assert d.test_names == [f for f, *_ in lines] and d.test_y.tolist() == [WNIDS.index(w) for _, w, *_ in lines]
    gray = d.train_x[3]  # WNIDS[1]'s first image was written grayscale
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    expected = np.array(Image.open(folder / "val" / "images" / lines[1][0]).convert("RGB"))
    assert torch.equal(d.test_x[1], torch.from_numpy(expected).permute(2, 0, 1))


# ------------------------------------------------------------------------------------ bad files
def _damage(folder: Path, kind: str) -> str:
    """Break a written dataset; returns what the error line must name."""
    if kind == "missing":
        (folder / "data_batch_3.bin").unlink()
        return "data_batch_3.bin"
    if kind == "record_size":
        path = folder / "data_batch_2.bin"
        path.write_bytes(path.read_bytes() + b"\x00" * 5)
        return "record size"
    path = folder / "data_batch_4.bin.xz"
    path.write_bytes(lzma.compress((folder / "data_batch_4.bin").read_bytes())[:-40])
    (folder / "data_batch_4.bin").unlink()
    return "data_batch_4.bin.xz is truncated"


@pytest.mark.parametrize("kind", ["missing", "record_size", "truncated"])
def test_damaged_cifar_is_one_line_exit_2_and_no_run(tmp_path, store_url, kind):
    write_cifar_bin(tmp_path / "c")
    needle = _damage(tmp_path / "c", kind)
    result = runner.invoke(app, ["run", "image", "data=cifar10", f"data.path={tmp_path / 'c'}", "data.valid_size=2",
                                 "model=mlp", "--store", store_url])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert open_store(store_url).list_runs() == []


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "t10k-images-idx3-ubyte.gz is truncated"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-28])), "should hold"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(p.read_bytes())[4:])), "magic"),
])
def test_damaged_mnist_names_the_file(tmp_path, damage, needle):
    write_mnist(tmp_path / "m")
    damage(tmp_path / "m" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(UserError, match=needle):
        fmt.decode_mnist(tmp_path / "m")


def test_a_wnid_folder_without_images_is_one_line_exit_2(tmp_path, store_url):
    folder = write_tiny(tmp_path / "tiny")
    for p in (folder / "train" / WNIDS[2] / "images").iterdir():
        p.unlink()
    result = runner.invoke(app, ["run", "image", "data=tinyimagenet", f"data.path={folder}", "model=mlp",
                                 "--store", store_url])
    assert result.exit_code == 2 and WNIDS[2] in result.stderr and "no images" in result.stderr
    assert open_store(store_url).list_runs() == []


def test_an_unknown_wnid_in_val_annotations_names_the_line(tmp_path):
    folder = write_tiny(tmp_path / "tiny")
    path = folder / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_999.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="val_annotations.txt line 7"):
        fmt.tiny_layout(folder)


def test_a_missing_folder_says_where_to_put_the_data(tmp_path, store_url):
    result = runner.invoke(app, ["run", "image", "data=mnist", f"data.path={tmp_path / 'nope'}", "--store", store_url])
    assert result.exit_code == 2 and "folder not found" in result.stderr


# ---------------------------------------------------------------------------------------- cache
def test_decoded_once_then_served_from_the_cache(tmp_path, monkeypatch):
    write_mnist(tmp_path / "m")
    first = load_decoded("mnist", str(tmp_path / "m"))
    images._MEMO.clear()

    def fail(_):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "SOURCES", {**images.SOURCES, "mnist": (
        images.ImageSource(("MNIST/raw",), images.SOURCES["mnist"][0].files, fail), images.MnistDataConfig)})
    again = load_decoded("mnist", str(tmp_path / "m"))
    assert torch.equal(first["train_x"], again["train_x"])
    # a changed source file is a different cache key: decoded afresh
    write_mnist(tmp_path / "m", seed=9)
    images._MEMO.clear()
    with pytest.raises(AssertionError, match="decoded again"):
        load_decoded("mnist", str(tmp_path / "m"))


def test_channel_stats_equal_the_float_computation():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert torch.allclose(mean.double(), f.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), f.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)


# --------------------------------------------------------------------------------------- splits
def test_valid_holdout_is_fixed_and_disjoint_from_train(tmp_path):
    write_mnist(tmp_path / "m", train=40)
    cfg = ImageDataConfig(path=str(tmp_path / "m"), valid_size=10, train_limit=20, test_limit=4)
    data = load_images("mnist", cfg)
    valid = data.held_out["valid"]
    assert (len(data.train), len(valid), len(data.held_out["test"])) == (20, 10, 4)
    assert not set(valid.index.tolist()) & set(data.train.index.tolist())
    blob = load_decoded("mnist", str(tmp_path / "m"))
    assert torch.equal(valid.x, blob["train_x"][valid.index])
    assert torch.equal(data.train.y, blob["train_y"][data.train.index])
    assert torch.equal(load_images("mnist", cfg).held_out["valid"].index, valid.index)
    with pytest.raises(UserError, match="data.valid_size=40 leaves no training images"):
        load_images("mnist", ImageDataConfig(path=str(tmp_path / "m"), valid_size=40))


# --------------------------------------------------------------------------------- augmentation
def test_augment_crops_a_window_of_the_zero_padded_image_then_flips_it():
    x = torch.randint(1, 256, (5, 3, 6, 5), dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [2, 2], [4, 1], [3, 4], [2, 2]])
    flips = torch.tensor([False, False, True, True, False])
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = [padded[b, :, dy:dy + 6, dx:dx + 5] for b, (dy, dx) in enumerate(shifts.tolist())]
    out = augment(x, shifts, flips, padding=2)
    for b, window in enumerate(windows):
        assert torch.equal(out[b], window.flip(-1) if flips[b] else window)
    assert torch.equal(out[1], x[1])  # the centred window, not flipped, is the image itself
    assert torch.equal(augment(x, shifts, None, 2), torch.stack(windows))
    assert torch.equal(augment(x, None, flips, 0)[2], x[2].flip(-1)) and augment(x, None, None, 0) is x


def test_normalize():
    x = torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor([0.2, 0.6]), torch.tensor([0.3, 0.1])
    y = Normalizer(mean, std, torch.device("cpu"))(x)
    assert torch.allclose(y, (x.float() / 255 - mean[:, None, None]) / std[:, None, None], atol=1e-5)
    assert Normalizer(mean, std, torch.device("cpu"), channels_last=True)(x).is_contiguous(
        memory_format=torch.channels_last)


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    cpu = torch.device("cpu")
    a, b = plan_epoch(100, 1, 3, 4, True, cpu), plan_epoch(100, 1, 3, 4, True, cpu)
    c = plan_epoch(100, 1, 4, 4, True, cpu)
    assert torch.equal(a.order, b.order) and torch.equal(a.shifts, b.shifts) and torch.equal(a.flips, b.flips)
    assert not torch.equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(100)) and int(a.shifts.max()) <= 8 and 20 < int(a.flips.sum()) < 80


def test_a_folder_without_cifar_batches_names_both_versions(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither the binary version .* nor the python version"):
        fmt.decode_cifar10(tmp_path / "empty")
