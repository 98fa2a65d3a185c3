"""Speed measurements of the benchmark scripts (``python -m benchmarks.throughput``): timing
cases side by side, and their inputs (captions of a small vocabulary, a folder of JPEGs).

A :class:`Group` times its cases repeat by repeat, each repeat in a shuffled order, so
load from other processes and the state of the caches fall on all cases alike; a
:class:`Target` is a ratio of two cases' medians with a goal. :func:`time_groups` runs
groups and returns the rows of :func:`table` and :func:`target_table`.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import open_clip
import torch
from torch.utils.data import Dataset
from torchvision.io import decode_jpeg, encode_jpeg, read_file, write_file
from torchvision.transforms import v2

SIZE = 224
"""The images' height and width."""
WORDS = ["a", "photo", "of", "the", "small", "red", "dog", "cat", "sitting", "on", "wooden",
         "table", "next", "to", "bright", "window", "with", "green", "plants", "blue", "sky",
         "over", "old", "city", "street", "two", "people", "walking", "along", "beach", "at",
         "sunset"]


def captions(count: int, seed: int) -> list[str]:
    """``count`` captions of 8 to 15 words, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 16)))) for _ in range(count)]


class JpegCaptions(Dataset):
    """(image, caption) from a folder of JPEG files, decoded and normalised per sample."""

    def __init__(self, paths: list[Path], texts: list[str]) -> None:
        self.paths, self.texts = paths, texts
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(open_clip.OPENAI_DATASET_MEAN,
                                                  open_clip.OPENAI_DATASET_STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.transform(decode_jpeg(read_file(str(self.paths[i])))), self.texts[i]


def write_jpegs(folder: Path, count: int) -> list[Path]:
    """Smooth random images with some texture, about the size of photos at 224x224."""
    gen = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        coarse = torch.rand((1, 3, 8, 8), generator=gen)
        image = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic")
        image = image[0] + 0.08 * torch.randn((3, SIZE, SIZE), generator=gen)
        path = folder / f"{i:05d}.jpg"
        write_file(str(path), encode_jpeg((image.clamp(0, 1) * 255).to(torch.uint8),
                                          quality=90))
        paths.append(path)
    return paths



@dataclass
class Group:
    """Cases timed side by side: each repeat runs every case once, in a shuffled order
    (so no case always follows the same one and finds the caches as it left them)."""

    name: str
    cases: dict[str, Callable[[], object]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    bytes_moved: dict[str, int] = field(default_factory=dict)  # read + written, for GB/s

    def add(self, name: str, fn: Callable[[], object]) -> None:
        self.cases[name] = fn

    def run(self, repeats: int, warmup: int = 1, back_to_back: bool = False) -> Group:
        """Time each case ``repeats`` times; with ``back_to_back``, each timed call comes
        right after an untimed call of the same case (warm caches: the steady state of
        calling one op in a loop) instead of after whatever case came before it."""
        names = list(self.cases)
        for _ in range(warmup):
            for name in names:
                self.cases[name]()
        self.times = {name: [] for name in names}
        order = random.Random(0)
        for _ in range(repeats):
            for name in order.sample(names, len(names)):
                if back_to_back:
                    self.cases[name]()  # untimed; its output is freed before the timed call
                start = time.perf_counter()
                result = self.cases[name]()
                self.times[name].append(time.perf_counter() - start)
                del result  # freeing an output is not part of making it
        return self

    def ratio(self, numerator: str, denominator: str) -> tuple[float, float, float]:
        """The ratio of two cases' median times, and the quartiles of the ratio taken
        repeat by repeat (its spread)."""
        ratios = [a / b for a, b in zip(self.times[numerator], self.times[denominator],
                                        strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        return (statistics.median(self.times[numerator])
                / statistics.median(self.times[denominator]), q1, q3)


@dataclass
class Target:
    name: str
    group: Group
    numerator: str
    denominator: str
    limit: float
    at_least: bool = False  # the ratio must be >= limit (a speed-up), not <= limit

    def row(self) -> dict:
        med, q1, q3 = self.group.ratio(self.numerator, self.denominator)
        met = med >= self.limit if self.at_least else med <= self.limit
        return {"target": self.name, "ratio": med, "q1": q1, "q3": q3,
                "goal": f"{'>=' if self.at_least else '<='} {self.limit}", "met": met}


def summarize(group: Group) -> list[dict]:
    rows = []
    for name, times in group.times.items():
        ms = [t * 1e3 for t in times]
        q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else ms * 3
        rows.append({"group": group.name, "case": name, "median_ms": statistics.median(ms),
                     "q1_ms": q1, "q3_ms": q3, "min_ms": min(ms), "repeats": len(ms)})
        if name in group.bytes_moved:
            rows[-1]["gb_per_s"] = group.bytes_moved[name] / statistics.median(times) / 1e9
    return rows


def table(rows: list[dict]) -> str:
    rate = any("gb_per_s" in r for r in rows)
    lines = ["| group | case | median ms | p25-p75 ms |" + (" GB/s |" if rate else ""),
             "|---|---|---:|---:|" + ("---:|" if rate else "")]
    lines += [f"| {r['group']} | {r['case']} | {r['median_ms']:.2f} | "
              f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f} |"
              + ((f" {r['gb_per_s']:.0f} |" if "gb_per_s" in r else " - |") if rate else "")
              for r in rows]
    return "\n".join(lines)


def target_table(rows: list[dict]) -> str:
    lines = ["| target | ratio | p25-p75 | goal | met |", "|---|---:|---:|---|---|"]
    lines += [f"| {r['target']} | {r['ratio']:.2f} | {r['q1']:.2f}-{r['q3']:.2f} | "
              f"{r['goal']} | {'yes' if r['met'] else 'NO'} |" for r in rows]
    return "\n".join(lines)


def time_groups(groups: list[tuple[Group, list[Target]]], repeats: int,
                back_to_back: bool = False) -> tuple[list[dict], list[dict]]:
    """Time each group in turn (releasing its cases after it): the rows of every case
    (:func:`summarize`) and of every target."""
    rows: list[dict] = []
    targets: list[dict] = []
    for group, group_targets in groups:
        print(f"timing {group.name} ...", file=sys.stderr, flush=True)
        rows += summarize(group.run(repeats, back_to_back=back_to_back))
        targets += [t.row() for t in group_targets]
        group.cases.clear()  # release the group's tensors (and stop persistent workers)
    return rows, targets


def synchronized(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` followed by ``torch.cuda.synchronize()``: a CUDA case's time is its kernels'."""
    def run() -> object:
        result = fn()
        torch.cuda.synchronize()
        return result
    return run


def environment(*modules: ModuleType) -> dict:
    """What a timing depends on: the command, the modules' versions, threads and CPUs."""
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            **{module.__name__.split(".")[0]: module.__version__ for module in modules},
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
