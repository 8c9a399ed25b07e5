"""Image training throughput: vgg8 and resnet18 on CIFAR-10 batches, and the data pipeline alone.

Models: training images/s (forward, backward, SGD step) in fp32 and bf16 autocast, each with and
without channels_last; on a GPU also resnet18 on Tiny-ImageNet-sized data (64x64, 200 classes)
with the time one 100,000-image epoch takes. Data: sweeplab's pipeline (the uint8 training set in
memory, crop + flip + normalisation batched on the device) against a plain per-sample
Dataset + DataLoader applying the same transforms image by image (PIL, as torchvision's
RandomCrop / RandomHorizontalFlip / ToTensor / Normalize do), in the same run. Ours must be at least
5x faster: the script exits 1 otherwise.

    SWEEPLAB_DATA=../shared/data .venv/bin/python benchmarks/image_throughput.py [--device auto]
        [--batch-size N] [--steps N] [--results benchmarks/RESULTS.md]

Prints a Markdown section; with --results it writes that section into the file under the heading
"## Vision (issue 3)" (replacing an older one, leaving the other sections alone).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from sweeplab.data.images import CifarDataConfig, Normalizer, augmented_batches, load_images, plan_epoch
from sweeplab.errors import UserError
from sweeplab.models.device import autocast, device_name, get_device, synchronize
from sweeplab.models.vision import ImageSpec, create_image_model
from sweeplab.registry import MODELS

HEADING = "## Vision (issue 3)"
REQUIRED_SPEEDUP = 5.0
TINY_EPOCH = 100_000  # Tiny-ImageNet's training set: 200 classes x 500 images


# ------------------------------------------------------------------------------------------ data
def cifar_train() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The CIFAR-10 training set as uint8 (from the cache), or random images of its shape if absent."""
    try:
        data = load_images("cifar10", CifarDataConfig(valid_size=0))
        return data.train.x, data.train.y, data.mean, data.std, "CIFAR-10 training set (50,000 images)"
    except UserError as exc:
        print(f"note: {exc}; using random images of CIFAR-10's shape", file=sys.stderr)
        x = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)
        return x, torch.randint(0, 10, (50_000,)), torch.full((3,), 0.5), torch.full((3,), 0.25), "random 32x32 images"


class PerSampleCifar(torch.utils.data.Dataset):
    """The usual per-sample pipeline: each image becomes a PIL image, is padded, cropped, maybe flipped,
    converted to a float tensor and normalised on its own, in the DataLoader's process."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, padding: int = 4):
        self.hwc = x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) as PIL wants it
        self.y = y.numpy()
        self.mean, self.std, self.padding = mean.view(-1, 1, 1), std.view(-1, 1, 1), padding

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = ImageOps.expand(Image.fromarray(self.hwc[i]), border=self.padding, fill=0)
        dy, dx = np.random.randint(0, 2 * self.padding + 1, size=2)
        img = img.crop((dx, dy, dx + 32, dy + 32))
        if np.random.rand() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)  # ToTensor
        return (t - self.mean) / self.std, int(self.y[i])  # Normalize


def time_loop(device: torch.device, run: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of `run` (which returns how many items it processed): the median of `repeats`
    timings, so one burst of another process on a shared machine does not decide the figure."""
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        items = run()
        synchronize(device)
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_pipeline(x, y, mean, std, device: torch.device, batch_size: int, images: int) -> dict[str, float]:
    train_x, train_y = x.to(device), y.to(device)
    normalize = Normalizer(mean, std, device)

    def ours() -> int:
        seen = 0
        for epoch in range(1, 100):
            plan = plan_epoch(len(train_y), 1, epoch, 4, True, device)
            for xb, _ in augmented_batches(train_x, train_y, plan, batch_size, 4, normalize):
                seen += len(xb)
                if seen >= images:
                    return seen
        return seen

    loader = torch.utils.data.DataLoader(PerSampleCifar(x, y, mean, std), batch_size=batch_size, shuffle=True,
                                         num_workers=0)

    def per_sample() -> int:
        seen = 0
        for xb, _ in loader:
            xb = xb.to(device)
            seen += len(xb)
            if seen >= images // 10:  # ten times fewer: it is that much slower
                return seen
        return seen

    ours()  # warm-up (allocations, the device copy)
    return {"ours": time_loop(device, ours), "per_sample": time_loop(device, per_sample)}


# ---------------------------------------------------------------------------------------- models
def bench_model(name: str, spec: ImageSpec, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                precision: str, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_image_model(name, spec, MODELS.get(name, group="image").config()).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train(n: int) -> int:
        for i in range(n):
            x, y = batches[i % len(batches)]
            with autocast(device, precision):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n * len(batches[0][1])

    train(2)  # warm-up: kernels chosen, memory allocated
    return time_loop(device, lambda: train(steps))


def sample_batches(x, y, mean, std, device, batch_size: int, count: int = 4) -> list:
    plan = plan_epoch(len(y), 1, 1, 4, True, device)
    out = []
    for batch in augmented_batches(x.to(device), y.to(device), plan, batch_size, 4, Normalizer(mean, std, device)):
        out.append(batch)
        if len(out) == count:
            break
    return out


def random_batches(spec: ImageSpec, device: torch.device, batch_size: int, count: int = 4) -> list:
    return [(torch.randn(batch_size, spec.channels, spec.height, spec.width, device=device),
             torch.randint(0, spec.num_classes, (batch_size,), device=device)) for _ in range(count)]


# --------------------------------------------------------------------------------------- report
def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{device_name(device)}; host CPU {cpu} ({os.cpu_count()} cores, load average {load} at the end), "
            f"torch intra-op threads: {torch.get_num_threads()}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def write_section(path: Path, section: str) -> None:
    """Put `section` under HEADING in `path`, replacing an older copy, keeping the other sections."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if HEADING in text:
        start = text.index(HEADING)
        rest = text[start + len(HEADING):]
        end = rest.find("\n## ")
        text = text[:start] + section.rstrip("\n") + ("\n" + rest[end:] if end >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="default: 128 on a GPU, 32 on a CPU")
    parser.add_argument("--steps", type=int, default=0, help="steps per timing (median of 3 timings); "
                                                             "default: 20 on a GPU, 3 on a CPU")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--pipeline-images", type=int, default=20_000, help="images our pipeline serves")
    parser.add_argument("--results", type=Path, help="write the section into this Markdown file")
    parser.add_argument("--note", default="", help="a sentence added to the section (e.g. about the machine)")
    args = parser.parse_args()
    device = get_device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.batch_size or (128 if gpu else 32)
    steps = args.steps or (20 if gpu else 3)
    if gpu:
        torch.backends.cudnn.benchmark = True

    x, y, mean, std, source = cifar_train()
    pipe = bench_pipeline(x, y, mean, std, device, 128, args.pipeline_images)
    speedup = pipe["ours"] / pipe["per_sample"]

    cifar = ImageSpec(3, 32, 32, 10)
    batches = sample_batches(x, y, mean, std, device, batch_size)
    rows = []
    cases = [("vgg8", cifar, batches), ("resnet18", cifar, batches)]
    if gpu:  # Tiny-ImageNet-sized: 64x64 (ImageNet stem), 200 classes
        tiny = ImageSpec(3, 64, 64, 200)
        cases.append(("resnet18 @ 64x64, 200 classes", tiny, random_batches(tiny, device, batch_size)))
    for label, spec, data in cases:
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                rate = bench_model(label.split()[0], spec, data, device, precision, channels_last, steps)
                epoch = f"{TINY_EPOCH / rate:.1f} s" if spec.height == 64 else "-"
                rows.append(f"| {label} | {precision} | {'yes' if channels_last else 'no'} | {rate:,.0f} | {epoch} |")
                print(rows[-1], file=sys.stderr, flush=True)

    shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--note" and (i == 0 or sys.argv[i] != "--note")]
    command = "SWEEPLAB_DATA=../shared/data .venv/bin/python benchmarks/image_throughput.py " + shlex.join(shown)
    command += ' --note "..."' if args.note else ""
    section = "\n".join([
        HEADING, "",
        f"Measured {datetime.date.today().isoformat()} on {machine(device)}.",
        f"Command: `{command}`. Data: {source}.", *([args.note] if args.note else []), "",
        f"Training throughput (forward, backward, SGD step; batch {batch_size}; median of 3 timings of {steps} steps, "
        "after 2 warm-up steps; the epoch column is 100,000 Tiny-ImageNet images at that rate):", "",
        "| model | precision | channels_last | train images/s | epoch |", "|---|---|---|---:|---:|", *rows, "",
        "Data pipeline alone (batches of 128: random crop with 4 px padding, horizontal flip, normalisation):", "",
        "| pipeline | images/s |", "|---|---:|",
        f"| ours: uint8 set in memory, batched on the device | {pipe['ours']:,.0f} |",
        f"| per-sample Dataset + DataLoader (PIL transforms, num_workers=0) | {pipe['per_sample']:,.0f} |",
        f"| **speed-up** | **{speedup:.1f}x** (required: at least {REQUIRED_SPEEDUP:.0f}x) |", "",
    ])
    print(section)
    if args.results:
        write_section(args.results, section)
    return 0 if speedup >= REQUIRED_SPEEDUP else 1


if __name__ == "__main__":
    sys.exit(main())
