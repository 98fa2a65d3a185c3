"""Training-step time of ``python -m mixgen.open_clip_train`` with and without ``--mixgen``.

Same model, same data (a generated CSV of random images), same seed; the arms run
interleaved, in one process, ``--repeats`` times, each repeat starting with the next arm.
Each run trains ``--epochs`` epochs and the first is dropped (start-up, caches). A step
is the time between two batches leaving the loader: the forward and backward passes, the
loss, the optimizer, and waiting for the next batch (with its workers' mixing). Each run
gives its median step and its CPU seconds per step (the training process and its loader
workers: the work done, which other processes on a busy machine do not inflate as they
do wall time). Reported: the median, over repeats, of each repeat's ratio to the plain
run of that repeat, and the range of those ratios.

    python benchmarks/train_step.py                       # the table in RESULTS.md
    python benchmarks/train_step.py --model mixgen-small --image-size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip_train.main as train_main
import torch
from PIL import Image

from mixgen import open_clip_train

ARMS = {
    "open_clip_train": [],
    "--mixgen": ["--mixgen"],
    "--mixgen --mixgen-loss soft": ["--mixgen", "--mixgen-loss", "soft"],
}


def make_csv(root: Path, pairs: int, size: int) -> Path:
    """``pairs`` random ``size`` px PNG images with distinct captions, as open_clip's CSV."""
    rng = np.random.default_rng(0)
    rows = ["filepath\ttitle"]
    for i in range(pairs):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        rows.append(f"{path}\ta photo of thing number {i} on a plain background")
    csv = root / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


class StepClock:
    """The training loader, noting the time between the batches it hands out: one
    training step each (the step on a batch, then fetching the next)."""

    def __init__(self, loader, steps: list[float]) -> None:
        self.loader, self.steps = loader, steps

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def __iter__(self):
        last = None
        for batch in self.loader:
            now = time.perf_counter()
            if last is not None:  # the first batch of an epoch waits for worker start-up
                self.steps.append(now - last)
            last = now
            yield batch


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(argv: list[str]) -> tuple[float, float]:
    """Train with ``argv``; after the first epoch, the median wall seconds of a step and
    the CPU seconds per step (training process and loader workers)."""
    steps: list[float] = []
    cpu: list[float] = []
    original = train_main.train_one_epoch

    @functools.wraps(original)
    def timed(model, data, loss, epoch, *args, **kwargs):
        loader = data["train"].dataloader
        data["train"].dataloader = StepClock(loader, steps if epoch > 0 else [])
        start = cpu_seconds()
        try:
            original(model, data, loss, epoch, *args, **kwargs)
        finally:
            data["train"].dataloader = loader
        if epoch > 0:  # the workers of an epoch have ended with it (not persistent)
            cpu.append((cpu_seconds() - start) / loader.num_batches)

    handlers = list(logging.root.handlers)
    train_main.train_one_epoch = timed
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # open_clip_train's log stream
            open_clip_train.main(argv)
    finally:
        train_main.train_one_epoch = original
        for handler in set(logging.root.handlers) - set(handlers):
            logging.root.removeHandler(handler)
            handler.close()
    return statistics.median(steps), statistics.mean(cpu)


def run(options: argparse.Namespace) -> list[str]:
    """The markdown table of one benchmark run."""
    rows = ["| workers | arm | steps/s | step time vs open_clip_train | CPU s per step | "
            "CPU vs open_clip_train |", "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        csv = make_csv(Path(tmp), options.pairs, options.image_size)
        for workers in options.workers:
            wall = {arm: [] for arm in ARMS}
            cpu = {arm: [] for arm in ARMS}
            for repeat in range(options.repeats):
                order = list(ARMS)[repeat % len(ARMS):] + list(ARMS)[:repeat % len(ARMS)]
                for arm in order:  # each arm first in one repeat of three
                    flags = ARMS[arm]
                    argv = ["--dataset-type", "csv", "--train-data", str(csv), "--model",
                            options.model, "--batch-size", str(options.batch_size),
                            "--epochs", str(options.epochs), "--workers", str(workers),
                            "--device", "cpu", "--seed", "0", "--warmup", "1",
                            "--report-to", "none", "--logs", str(Path(tmp) / "logs"),
                            "--name", f"w{workers}-r{repeat}-{len(flags)}",
                            "--save-frequency", "0", *flags]
                    step, cpu_step = measure(argv)
                    wall[arm].append(step)
                    cpu[arm].append(cpu_step)
            for arm in ARMS:
                rows.append(f"| {workers} | `{arm}` | {1 / statistics.median(wall[arm]):.2f} "
                            f"| {_ratios(wall[arm], wall['open_clip_train'])} "
                            f"| {statistics.median(cpu[arm]):.3f} "
                            f"| {_ratios(cpu[arm], cpu['open_clip_train'])} |")
            print("\n".join(rows), flush=True)
    return rows


def _ratios(arm: list[float], plain: list[float]) -> str:
    """Median and range, over repeats, of the arm's time over the plain run's."""
    ratios = [a / p for a, p in zip(arm, plain, strict=True)]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mixgen-tiny")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the "
                        "training process (several threads on a busy machine spin)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {options}")
    run(options)


if __name__ == "__main__":
    main()
