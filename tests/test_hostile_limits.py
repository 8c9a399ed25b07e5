"""A hostile user's files and overrides: every resource is bounded before it is spent, every value is storable.

Each refusal is exit 2 and one stderr line that names the limit and how to raise it: no traceback, no run row,
no store or cache file left behind. Where a non-finite number is legal (a diverged run's metrics), every
`--json` and the store's JSON columns stay strict JSON.
"""
from __future__ import annotations

import gzip
import json
import lzma
import math
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from tests.test_cli import TINY
from tests.test_cli_errors import invoke, one_error_line
from tests.test_image_data import WNIDS, write_cifar_bin, write_mnist, write_tiny

from sweeplab.config import json_safe
from sweeplab.errors import brief
from sweeplab.models import vision
from sweeplab.models.size import training_bytes
from sweeplab.models.spec import VectorSpec, VocabSpec
from sweeplab.registry import MODELS
from sweeplab.store import open_store
from sweeplab.sweep.bench import BenchRow
from sweeplab.sweep.expand import load_experiment
from sweeplab.tasks import resolve

COLUMNS = "columns: [{title: Loss, metric: valid/loss}]\n"
ROWS = "variants: {a: {}}\n"


def strict_json(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def alias_bomb(levels: int) -> str:
    """`&a0 [x] * 10`, then each level ten aliases of the one below: 10**levels values from a few hundred bytes."""
    anchors = ["  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    anchors += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "task: toy2d\nanchors:\n" + "\n".join(anchors) + f"\nbase: {{model.hidden: *a{levels - 1}}}\n" + ROWS + COLUMNS


def grid(values_per_axis: int, axes: int = 4) -> str:
    keys = ["model.hidden", "model.layers", "train.batch_size", "data.n_samples"][:axes]
    values = ", ".join(str(v) for v in range(10, 10 + values_per_axis))
    return "task: toy2d\naxes: {" + ", ".join(f"{k}: [{values}]" for k in keys) + "}\n" + COLUMNS


# (id, file text, what the one line must say)
BAD_FILES = [
    ("alias-bomb", alias_bomb(9), ["100,000 YAML values", "SWEEPLAB_MAX_YAML_VALUES=N"]),
    ("alias-cycle", "task: toy2d\nbase: &a {x: [*a]}\n" + ROWS + COLUMNS, ["100,000 YAML values"]),
    ("too-deep", "task: toy2d\nbase: " + "[" * 50_000 + "]" * 50_000 + "\n", ["nested too deeply"]),
    ("too-large", "# padding\n" * 100_001 + "task: toy2d\n" + ROWS + COLUMNS,
     ["1,000,000 bytes", "SWEEPLAB_MAX_EXPERIMENT_BYTES=N"]),
    ("grid-10^12", grid(1000), ["1,000,000,000,000 cells", "10,000", "--max-cells N", "SWEEPLAB_MAX_CELLS=N"]),
    ("seeds-10^12", "task: toy2d\nseeds: 1000000000000\n" + ROWS + COLUMNS,
     ["1,000,000,000,000 seeds", "limit of 100", "--max-seeds N", "SWEEPLAB_MAX_SEEDS=N"]),
    ("seed-negative", "task: toy2d\nseeds: [1, -1]\n" + ROWS + COLUMNS, ["seeds: -1 is out of range", "4,294,967,295"]),
    ("seed-2^32", "task: toy2d\nseeds: [4294967296]\n" + ROWS + COLUMNS, ["4294967296 is out of range"]),
    ("seed-2^64", "task: toy2d\nseeds: [18446744073709551616]\n" + ROWS + COLUMNS, ["out of range"]),
    ("base-inf", "task: toy2d\nbase: {optim.momentum: .inf}\n" + ROWS + COLUMNS,
     ["base.optim.momentum: expected a finite number, got inf"]),
    ("axis-nan", "task: toy2d\naxes: {train.clip: [1.0, .nan]}\n" + COLUMNS, ["expected a finite number, got nan"]),
    ("int-of-5000-digits", "task: toy2d\nbase: {model.hidden: " + "9" * 5000 + "}\n" + ROWS + COLUMNS,
     ["not valid YAML", "4300 digits"]),
    ("axes-10^4515", "task: toy2d\naxes:\n" + "".join(f"  k{i}: [1, 2]\n" for i in range(15_000)) + COLUMNS,
     ["about 10^4515 cells"]),
    ("reference-nan", "task: toy2d\n" + ROWS + COLUMNS + "references: [{row: a, column: Loss, value: .nan, source: s}]\n",
     ["references[0].value: expected a finite number, got nan"]),
]


@pytest.mark.parametrize("text, parts", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
@pytest.mark.parametrize("command", ["sweep", "report"])
def test_a_hostile_experiment_file_is_one_line_and_leaves_nothing(command, text, parts, tmp_path, store_url):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    extra = ["--plan"] if command == "sweep" else ["--out", tmp_path / "report"]
    line = one_error_line(invoke(command, path, *extra, "--store", store_url), str(path), *parts)
    assert len(line) < 400  # the message never repeats an expanded value
    assert not (tmp_path / "report").exists()
    assert command == "report" or not (tmp_path / "runs").exists()  # `report` opens the store (to read) first


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_an_experiment_file_that_is_not_a_regular_file_is_never_read(kind, tmp_path, store_url):
    path = tmp_path / "exp.yaml"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")  # read whole, it never ends
    else:
        os.mkfifo(path)  # opened for reading, it waits for a writer that never comes
    one_error_line(invoke("sweep", path, "--plan", "--store", store_url), str(path), "not a regular file")
    assert not (tmp_path / "runs").exists()


def test_an_alias_expansion_under_the_cap_is_quoted_briefly(tmp_path, store_url):
    path = tmp_path / "exp.yaml"
    path.write_text(alias_bomb(4))  # 10,000 values: read, then refused as no single value
    line = one_error_line(invoke("sweep", path, "--plan", "--store", store_url), "base.model.hidden",
                          "expected a single value")
    assert len(line) < 250


def test_the_caps_are_raised_by_flag_and_environment(tmp_path, store_url, monkeypatch):
    path = tmp_path / "six.yaml"
    path.write_text(grid(2, axes=2) + "seeds: 2\n")  # 2 x 2 grid points x 2 seeds = 8 cells
    monkeypatch.setenv("SWEEPLAB_MAX_CELLS", "7")
    one_error_line(invoke("sweep", path, "--plan", "--store", store_url), "8 cells", "limit of 7")
    one_error_line(invoke("report", path, "--out", tmp_path / "r", "--store", store_url), "8 cells", "limit of 7")
    # --max-cells lifts the cap: the next check (an unknown executor) is the one that speaks
    one_error_line(invoke("sweep", path, "--max-cells", "8", "--executor", "nope", "--store", store_url), "--executor")
    monkeypatch.setenv("SWEEPLAB_MAX_SEEDS", "1")
    one_error_line(invoke("sweep", path, "--max-cells", "8", "--store", store_url), "2 seeds", "limit of 1")
    assert load_experiment(path, max_cells=8, max_seeds=2).cell_count() == 8
    monkeypatch.setenv("SWEEPLAB_MAX_SEEDS", "many")
    one_error_line(invoke("sweep", path, "--store", store_url), "SWEEPLAB_MAX_SEEDS='many' is not accepted")
    assert not (tmp_path / "r").exists() and open_store(store_url).list_runs() == []


# ----------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("override, parts", [
    ("seed=-1", ["seed: -1 is out of range", "0 to 4,294,967,295"]),
    ("seed=4294967296", ["seed: 4294967296 is out of range"]),
    ("seed=18446744073709551616", ["out of range"]),
    ("data.seed=-5", ["data.seed"]),
    ("optim.momentum=.inf", ["optim.momentum: expected a finite number, got inf"]),
    ("train.clip=.nan", ["train.clip: expected a finite number, got nan"]),
    ("train.gamma=.inf", ["train.gamma: expected a finite number, got inf"]),
    ("model.hidden=" + "9" * 5000, ["model.hidden"]),
    ("model.layers=1000000000", ["model.layers", "1000"]),
])
def test_a_bad_override_is_one_line_before_any_work(override, parts, store_url, tmp_path):
    line = one_error_line(invoke("run", "toy2d", override, "--json", "--store", store_url), *parts)
    assert len(line) < 250
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296", "18446744073709551616"])
def test_generate_takes_only_seeds_in_range(seed, store_url):
    one_error_line(invoke("generate", "any-run", "--seed", seed, "--store", store_url), "--seed")


def test_a_non_finite_override_or_budget_of_a_sweep_is_refused(tmp_path, store_url):
    path = tmp_path / "exp.yaml"
    path.write_text("task: toy2d\n" + ROWS + COLUMNS)
    one_error_line(invoke("sweep", path, "train.clip=.inf", "--store", store_url), "train.clip", "finite")
    # 400 digits are an infinite float: the plan stored in sweeps.spec would hold Infinity
    one_error_line(invoke("sweep", path, "--budget", "1" + "0" * 400 + "h", "--store", store_url), "--budget")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("task, overrides, parts", [
    ("toy2d", ["model.hidden=100000000"], ["model mlp", "model.hidden, model.layers", "SWEEPLAB_MAX_MODEL_BYTES"]),
    ("toy2d", ["model=mlp_numpy", "model.hidden=2000000"], ["model mlp_numpy", "GiB"]),
    ("palindrome", ["model.hidden=10000000"], ["model rnn", "model.hidden"]),
    ("lm", ["model.emsize=100000000"], ["model lstm", "model.emsize, model.nhid, model.nlayers"]),
])
def test_a_model_too_big_to_train_is_refused_before_it_is_built(task, overrides, parts, tiny_corpus, store_url,
                                                                 tmp_path):
    data = [*(o for o in TINY if not o.startswith("model.emsize")), f"data.path={tiny_corpus}"] if task == "lm" else []
    one_error_line(invoke("run", task, *data, *overrides, "--store", store_url), "memory of this machine", *parts)
    assert open_store(store_url).list_runs() == []


def test_the_model_memory_cap_is_raised_or_lowered_by_environment(store_url, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_MAX_MODEL_BYTES", "1000")
    one_error_line(invoke("run", "toy2d", "--dry-run", "--store", store_url), "that SWEEPLAB_MAX_MODEL_BYTES allows")
    monkeypatch.setenv("SWEEPLAB_MAX_MODEL_BYTES", "100000")
    assert invoke("run", "toy2d", "--dry-run", "--store", store_url).exit_code == 0


def _model_cases() -> list[tuple[str, str, tuple]]:
    """(group, name, arguments of its factory) for every registered model, at its default settings."""
    import sweeplab.tasks  # noqa: F401 - fills the registry

    args = {"lm": lambda c: (VocabSpec(50), c), "image": lambda c: (vision.ImageSpec(3, 32, 32, 10), c),
            "toy2d": lambda c: (VectorSpec(2, 3), c), "palindrome": lambda c: (VectorSpec(10, 10), c),
            "addition": lambda c: (VectorSpec(20, 10), c)}
    return [(group, name, make(MODELS.get(name, group=group).config()))
            for group, make in args.items() for name in MODELS.names(group)]


@pytest.mark.parametrize("group, name, args", _model_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_meta_count_is_exact_and_draws_nothing_from_the_generator(group, name, args):
    create = MODELS.get(name, group=group).obj
    torch.manual_seed(0)
    expected = create(*args)
    torch.manual_seed(0)
    counted, over = training_bytes(create, args, limit=2**40)
    model = create(*args)
    assert not over
    assert counted == (4 * sum(p.numel() * p.element_size() for p in expected.parameters())
                       + sum(b.numel() * b.element_size() for b in expected.buffers()))
    for a, b in zip(expected.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the meta build took no random numbers: the same seed, the same weights


# ---------------------------------------------------------------------------------------- images
def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 100_000], ids=["above-pillows-warning", "above-pillows-error"])
def test_an_image_decompression_bomb_is_one_line_naming_the_file(side, tmp_path, store_url):
    folder = write_tiny(tmp_path / "tiny")
    bomb = folder / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_1.JPEG"
    bomb.write_bytes(_png_header(side, side))
    cache = Path(os.environ["SWEEPLAB_CACHE"])
    before = set(cache.glob("*")) if cache.is_dir() else set()
    result = invoke("run", "image", "data=tinyimagenet", f"data.path={folder}", "model=mlp", "--store", store_url)
    one_error_line(result, str(bomb), f"{side:,}x{side:,}", "16,777,216 pixels", "SWEEPLAB_MAX_IMAGE_PIXELS=N")
    assert open_store(store_url).list_runs() == []
    assert (set(cache.glob("*")) if cache.is_dir() else set()) == before


@pytest.mark.parametrize("data, bomb_name", [("cifar10", "data_batch_2.bin.xz"), ("mnist", "t10k-images-idx3-ubyte.gz")])
def test_a_compressed_dataset_file_is_read_no_further_than_the_cap(data, bomb_name, tmp_path, store_url, monkeypatch):
    folder = tmp_path / data
    if data == "cifar10":
        write_cifar_bin(folder, xz=True)
    else:
        write_mnist(folder, gz=True)
    bomb = folder / bomb_name
    compress = lzma.compress if bomb.suffix == ".xz" else gzip.compress
    bomb.write_bytes(compress(b"\0" * 2_000_000))  # 2 MB from a few kB
    monkeypatch.setenv("SWEEPLAB_MAX_DECOMPRESSED_BYTES", "1000000")
    result = invoke("run", "image", f"data={data}", f"data.path={folder}", "data.valid_size=2", "model=mlp",
                    "--store", store_url)
    one_error_line(result, str(bomb), "1,000,000 bytes", "SWEEPLAB_MAX_DECOMPRESSED_BYTES=N")
    assert open_store(store_url).list_runs() == []


# ------------------------------------------------------------------------------------ valid JSON
def test_a_diverged_run_prints_and_shows_strict_json(store_url):
    """Held before this file (metrics and summaries were already made finite): kept so that it stays held."""
    result = invoke("run", "toy2d", "optim.lr=1e30", "data.n_samples=64", "train.epochs=2", "--json",
                    "--store", store_url)
    assert result.exit_code == 3, result.output  # diverged
    run = strict_json(result.stdout.strip().splitlines()[-1])
    assert run["status"] == "diverged" and None in run["metrics"].values()
    store = open_store(store_url)
    store.set_summary(run["run_id"], {"valid/ppl": math.inf, "valid/loss": math.nan})  # what a diverged LM stores
    shown = invoke("runs", "show", run["run_id"], "--store", store_url)
    assert shown.exit_code == 0, shown.output
    assert strict_json(shown.stdout)["summary"]["valid/ppl"] is None
    exported = invoke("runs", "export", "--format", "json", "--store", store_url)
    assert strict_json(exported.stdout)[0]["valid/ppl"] is None


def test_a_row_stored_with_an_infinite_setting_still_shows_as_strict_json(store_url):
    """Rows stored before settings were checked for finiteness may hold Infinity in their config."""
    cfg = resolve("toy2d", {"data.n_samples": 64}).to_dict()
    cfg["train"]["clip"] = math.inf
    store = open_store(store_url)
    run_id = store.create_run(key="k" * 64, name="legacy", task="toy2d", config=cfg, env={}, status="finished")
    shown = invoke("runs", "show", run_id, "--store", store_url)
    assert shown.exit_code == 0, shown.output
    assert strict_json(shown.stdout)["config"]["train"]["clip"] is None


def test_bench_rows_and_json_safe_have_no_nan():
    row = BenchRow("cpu", "cpu", 1, ms_per_batch=math.nan, epoch_s=math.inf, speedup=-math.inf)
    assert strict_json(json.dumps(row.to_json(), allow_nan=False))["ms_per_batch"] is None
    assert json_safe({"a": [1.0, math.nan, ("NaN", -math.inf)]}) == {"a": [1.0, None, ["NaN", None]]}


def test_brief_quotes_any_value_in_a_few_dozen_characters():
    nested: list = ["x"] * 10
    for _ in range(8):
        nested = [nested] * 10  # 10**9 items if printed whole
    assert len(brief(nested)) <= 80 and len(brief("y" * 10**6)) <= 80 and brief(0.5) == "0.5"
