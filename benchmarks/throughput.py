"""Throughput of MixGen, side by side with the published loop, the usual mixing libraries
and the memory bound, in one process.

Cases are timed side by side (:mod:`benchmarks.speed`): the table gives the median,
the spread (25th to 75th percentile) and the ratios the targets are stated in. Timings
use one intra-op thread by default (``--threads``), as DataLoader workers do.

    python -m benchmarks.throughput                     # the full table, about a minute
    python -m benchmarks.throughput --back-to-back      # the same with warm caches
    python -m benchmarks.throughput --repeats 5 --json bench_out/throughput.json

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
import tempfile
import time
from pathlib import Path

import open_clip
import timm.data
import torch
import torchvision
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

import mixgen
from benchmarks.reference import published_mixgen, published_mixgen_batch
from benchmarks.speed import (
    SIZE,
    Group,
    JpegCaptions,
    Target,
    captions,
    environment,
    synchronized,
    table,
    target_table,
    time_groups,
    write_jpegs,
)
from mixgen import MixGen, MixGenCollate
from mixgen.draw import sample_params
from mixgen.functional import mix_images, mix_texts

BATCHES = (64, 256)
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

    g = Group(f"CUDA B={batch} float32")
    g.add("copy M rows (in-place bound)",
          synchronized(lambda: images[:m].copy_(images[m:2 * m])))
    g.add("mix_images first, in place",
          synchronized(lambda: mix_images(images, first, inplace=True)))
    g.add("copy batch (out-of-place bound)", synchronized(lambda: images.clone()))
    g.add("mix_images whole-batch permute, out of place",
          synchronized(lambda: mix_images(images, whole)))
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
    rows, targets = time_groups(runs, args.repeats, args.back_to_back)
    with tempfile.TemporaryDirectory() as folder:
        more_rows, more_targets = time_groups([dataloader_group(Path(folder), args.jpegs, 64)],
                                              args.repeats, args.back_to_back)
    rows, targets = rows + more_rows, targets + more_targets
    checks = {"uint8 bit-exact vs float round-half-up": exact}
    if torch.cuda.is_available():
        checks["CUDA mixing without host-device sync"] = cuda_mixing_never_waits(256)
    targets += [{"target": name, "ratio": float(ok), "q1": float(ok), "q3": float(ok),
                 "goal": "== 1 (yes)", "met": ok} for name, ok in checks.items()]
    meta = {**environment(torch, torchvision, timm, open_clip, mixgen),
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
