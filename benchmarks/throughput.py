"""Throughput of MixGen, side by side with the published loop, the usual mixing libraries
and the memory bound, in one process.

Every repeat runs each case of a group once, in a shuffled order, so load from other
processes and the state of the caches fall on all cases alike; the table gives the
median, the spread (25th to 75th percentile) and the ratios the targets are stated in
(of the medians; their spread from the ratios repeat by repeat). Timings use one
intra-op thread by default (``--threads``), as DataLoader workers do.

    python benchmarks/throughput.py                     # the full table, about a minute
    python benchmarks/throughput.py --back-to-back      # the same with warm caches
    python benchmarks/throughput.py --repeats 5 --json bench_out/throughput.json

Groups: image mixing on a batch (B in {64, 256}, 3x224x224, float32 and uint8) against
the published per-row loop, torchvision's v2 MixUp, timm's Mixup and a copy of the same
rows; ``MixGenCollate`` against ``default_collate``; joining captions on token ids against
re-tokenizing the joined strings with open_clip's tokenizer; a DataLoader epoch over a
JPEG folder with 2 workers, with and without MixGen; on CUDA (when present) GB/s and a
check that mixing never waits on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import timm.data
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.io import decode_jpeg, encode_jpeg, read_file, write_file
from torchvision.transforms import v2

import mixgen
from mixgen import MixGen, MixGenCollate
from mixgen.functional import mix_images, mix_texts
from mixgen.params import sample_params

# the published loops are the tests' reference code, kept once in tests/helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import published_mixgen, published_mixgen_batch

SIZE = 224
BATCHES = (64, 256)
WORDS = ["a", "photo", "of", "the", "small", "red", "dog", "cat", "sitting", "on", "wooden",
         "table", "next", "to", "bright", "window", "with", "green", "plants", "blue", "sky",
         "over", "old", "city", "street", "two", "people", "walking", "along", "beach", "at",
         "sunset"]


# ----------------------------------------------------------------------------- timing
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


def captions(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 16)))) for _ in range(count)]


# ----------------------------------------------------------------------------- groups
def batch_group(batch: int, dtype: torch.dtype) -> tuple[Group, list[Target]]:
    """MixGen on a collated batch against the published loop, libraries and copies."""
    gen = torch.Generator().manual_seed(batch)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=dtype, generator=gen)
    else:
        images = torch.rand((batch, 3, SIZE, SIZE), dtype=dtype, generator=gen)
    texts = captions(batch, batch)
    labels = torch.arange(batch)
    m = batch // 4
    kind = "uint8" if dtype == torch.uint8 else "float32"
    g = Group(f"batch B={batch} {kind}")
    g.add("copy M rows (in-place bound)", lambda: images[:m].copy_(images[m:2 * m]))
    g.add("copy batch (out-of-place bound)", lambda: images.clone())
    for pairing in ("first", "permute", "roll", "flip"):
        for inplace in (True, False):
            mix = MixGen(pairing=pairing, inplace=inplace,
                         generator=torch.Generator().manual_seed(0))
            where = "in place" if inplace else "out of place"
            g.add(f"MixGen {pairing}, {where}", lambda mix=mix: mix(images, list(texts)))
    whole = MixGen(pairing="permute", ratio=1.0, generator=torch.Generator().manual_seed(0))
    g.add("MixGen whole-batch permute, out of place",
          lambda: whole(images, list(texts)))
    first = sample_params(batch, (SIZE, SIZE))
    g.add("mix_images first, in place (the kernel alone)",
          lambda: mix_images(images, first, inplace=True))
    limit = 1.5 if dtype == torch.uint8 else 1.2
    targets = [
        Target(f"{kind} first in place / copy of the rows, B={batch}", g,
               "MixGen first, in place", "copy M rows (in-place bound)", limit),
        Target(f"{kind} mix_images first in place / copy of the rows, B={batch}", g,
               "mix_images first, in place (the kernel alone)",
               "copy M rows (in-place bound)", limit)]
    if dtype == torch.uint8:
        beta = MixGen(alpha=0.4, inplace=True, generator=torch.Generator().manual_seed(0))
        g.add("MixGen first, in place, Beta lambdas", lambda: beta(images, list(texts)))
        return g, targets
    g.add("published loop (first M, in place)",
          lambda: published_mixgen(images, list(texts), m))
    g.add("published loop (whole batch, in place)",
          lambda: published_mixgen_batch(images, list(texts), m))
    tv_mixup = v2.MixUp(alpha=1.0, num_classes=batch)
    g.add("torchvision v2 MixUp (whole batch)", lambda: tv_mixup(images, labels))
    timm_mixup = timm.data.Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=batch)
    g.add("timm Mixup (whole batch, in place)", lambda: timm_mixup(images, labels))
    targets += [
        Target(f"published loop / float32 first in place, B={batch}", g,
               "published loop (first M, in place)", "MixGen first, in place", 2.5,
               at_least=True),
        Target(f"whole-batch permute out of place / torchvision MixUp, B={batch}", g,
               "MixGen whole-batch permute, out of place",
               "torchvision v2 MixUp (whole batch)", 0.6),
    ]
    return g, targets


def collate_group(batch: int) -> tuple[Group, list[Target]]:
    """``MixGenCollate`` against ``default_collate`` on the same list of samples."""
    gen = torch.Generator().manual_seed(batch)
    texts = captions(batch, batch)
    samples = [(torch.rand((3, SIZE, SIZE), generator=gen), t) for t in texts]
    samples_u8 = [(torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=gen), t)
                  for t in texts]
    g = Group(f"collate B={batch}")
    g.add("default_collate", lambda: default_collate(samples))
    variants = {"first": {}, "permute": {"pairing": "permute"},
                "whole-batch permute": {"pairing": "permute", "ratio": 1.0}}
    for label, options in variants.items():
        collate = MixGenCollate(generator=torch.Generator().manual_seed(0), **options)
        g.add(f"MixGenCollate {label}", lambda collate=collate: collate(samples))
    g.add("default_collate uint8", lambda: default_collate(samples_u8))
    collate_u8 = MixGenCollate(generator=torch.Generator().manual_seed(0))
    g.add("MixGenCollate first uint8", lambda: collate_u8(samples_u8))
    return g, [
        Target(f"MixGenCollate first / default_collate, B={batch}", g,
               "MixGenCollate first", "default_collate", 1.1),
        Target(f"MixGenCollate permute / default_collate, B={batch}", g,
               "MixGenCollate permute", "default_collate", 1.1),
        Target(f"MixGenCollate whole-batch permute / default_collate, B={batch}", g,
               "MixGenCollate whole-batch permute", "default_collate", 1.6),
    ]


def token_group(batch: int) -> tuple[Group, list[Target]]:
    """Joining captions on open_clip ids against tokenizing the joined strings again."""
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = captions(batch, batch)
    ids = tokenizer(texts)
    info = sample_params(batch, (SIZE, SIZE))
    joined = [texts[s] + " " + texts[p]
              for s, p in zip(info.source.tolist(), info.partner.tolist(), strict=True)]
    expected = tokenizer(joined)
    if not torch.equal(mix_texts(ids, info)[info.source], expected):
        raise AssertionError("token concatenation differs from re-tokenizing")
    g = Group(f"tokens B={batch}")
    g.add("token concat (mix_texts on ids)", lambda: mix_texts(ids, info))
    g.add("re-tokenize joined strings (open_clip)", lambda: tokenizer(
        [texts[s] + " " + texts[p]
         for s, p in zip(info.source.tolist(), info.partner.tolist(), strict=True)]))
    g.add("tokenize the whole mixed batch (open_clip)",
          lambda: tokenizer(mix_texts(texts, info)))
    return g, [Target(f"re-tokenize / token concat, B={batch}", g,
                      "re-tokenize joined strings (open_clip)",
                      "token concat (mix_texts on ids)", 20, at_least=True)]


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


def dataloader_group(folder: Path, count: int, batch: int) -> tuple[Group, list[Target]]:
    """One epoch over a JPEG folder, 2 workers, with ``default_collate`` or MixGen."""
    dataset = JpegCaptions(write_jpegs(folder, count), captions(count, 1))
    loaders = {
        "epoch, default_collate": DataLoader(dataset, batch_size=batch, num_workers=2,
                                             persistent_workers=True),
        "epoch, MixGenCollate": DataLoader(dataset, batch_size=batch, num_workers=2,
                                           persistent_workers=True,
                                           collate_fn=MixGenCollate()),
    }
    g = Group(f"DataLoader {count} JPEGs B={batch} 2 workers")
    for name, loader in loaders.items():
        g.add(name, lambda loader=loader: sum(len(images) for images, _ in loader))
    return g, [Target("DataLoader epoch with MixGen / without", g, "epoch, MixGenCollate",
                      "epoch, default_collate", 1.03)]


def cuda_group(batch: int) -> tuple[Group, list[Target]]:
    """On the GPU: mixing against a copy of the same rows (GB/s in the summary)."""
    device = torch.device("cuda")
    images = torch.rand((batch, 3, SIZE, SIZE), device=device)
    gen = torch.Generator().manual_seed(0)  # drawn on the host, copied without waiting
    first = sample_params(batch, (SIZE, SIZE), generator=gen)
    whole = sample_params(batch, (SIZE, SIZE), ratio=1.0, pairing="permute", generator=gen)
    m, row = first.num_pairs, images[0].nbytes

    def timed(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            result = fn()
            torch.cuda.synchronize()
            return result
        return run

    g = Group(f"CUDA B={batch} float32")
    g.add("copy M rows (in-place bound)", timed(lambda: images[:m].copy_(images[m:2 * m])))
    g.add("mix_images first, in place", timed(lambda: mix_images(images, first, inplace=True)))
    g.add("copy batch (out-of-place bound)", timed(lambda: images.clone()))
    g.add("mix_images whole-batch permute, out of place",
          timed(lambda: mix_images(images, whole)))
    g.bytes_moved = {"copy M rows (in-place bound)": 2 * m * row,
               "mix_images first, in place": 3 * m * row,
               "copy batch (out-of-place bound)": 2 * batch * row}
    return g, [Target(f"CUDA first in place / copy of the rows, B={batch}", g,
                      "mix_images first, in place", "copy M rows (in-place bound)", 1.2)]


def cuda_mixing_never_waits(batch: int) -> bool:
    """Mixing on the GPU with params drawn on the host runs with host-device syncs
    forbidden."""
    images = torch.rand((batch, 3, SIZE, SIZE), device="cuda")
    gen = torch.Generator().manual_seed(0)
    infos = [sample_params(batch, (SIZE, SIZE), pairing=p, generator=gen)
             for p in ("first", "permute")]
    torch.cuda.set_sync_debug_mode("error")  # a host-device wait now raises
    try:
        for info in infos:
            mix_images(images, info)
            mix_images(images, info, inplace=True)
    except RuntimeError:
        return False
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return True


def check_uint8_exact(batch: int) -> bool:
    """The uint8 path against ``floor(0.5 * a + 0.5 * b + 0.5)`` computed in float64."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    m = batch // 4
    reference = torch.floor(0.5 * images[:m].double() + 0.5 * images[m:2 * m].double() + 0.5)
    mixed, _ = MixGen(inplace=True)(images.clone(), [""] * batch)
    return torch.equal(mixed[:m], reference.to(torch.uint8))


# ----------------------------------------------------------------------------- report
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each case")
    parser.add_argument("--json", type=Path, default=Path("bench_out/throughput.json"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; 1, as in DataLoader workers, keeps "
                             "timings steady on a shared machine (0: torch's own choice)")
    parser.add_argument("--jpegs", type=int, default=512, help="images in the DataLoader set")
    parser.add_argument("--back-to-back", action="store_true",
                        help="time each call right after an untimed call of the same case "
                             "(warm caches) instead of right after another case")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    exact = check_uint8_exact(64)  # also compiles the fused uint8 kernel before timing
    runs = [batch_group(b, dt) for b in BATCHES for dt in (torch.float32, torch.uint8)]
    runs += [collate_group(b) for b in BATCHES]
    runs += [token_group(b) for b in BATCHES]
    if torch.cuda.is_available():
        runs += [cuda_group(b) for b in BATCHES]
    rows, targets = [], []
    for group, group_targets in runs:
        print(f"timing {group.name} ...", file=sys.stderr, flush=True)
        rows += summarize(group.run(args.repeats, back_to_back=args.back_to_back))
        targets += [t.row() for t in group_targets]
        group.cases.clear()  # release the group's tensors
    with tempfile.TemporaryDirectory() as folder:
        print("timing DataLoader epochs ...", file=sys.stderr, flush=True)
        group, group_targets = dataloader_group(Path(folder), args.jpegs, 64)
        rows += summarize(group.run(args.repeats, back_to_back=args.back_to_back))
        targets += [t.row() for t in group_targets]
        group.cases.clear()  # stop the persistent workers
    checks = {"uint8 bit-exact vs float round-half-up": exact}
    if torch.cuda.is_available():
        checks["CUDA mixing without host-device sync"] = cuda_mixing_never_waits(256)
    targets += [{"target": name, "ratio": float(ok), "q1": float(ok), "q3": float(ok),
                 "goal": "== 1 (yes)", "met": ok} for name, ok in checks.items()]
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "open_clip": open_clip.__version__,
            "mixgen": mixgen.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
            "repeats": args.repeats, "back_to_back": args.back_to_back,
            "seconds": round(time.perf_counter() - started, 1)}
    print(table(rows))
    print()
    print(target_table(targets))
    print(f"\n{meta['seconds']} s, {meta['threads']} threads, load average "
          f"{load_before[0]:.1f} before, {meta['load_avg_after'][0]:.1f} after")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "cases": rows, "targets": targets},
                                    indent=1))


if __name__ == "__main__":
    main()
