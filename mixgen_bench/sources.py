"""The harness's data: training and held-out pairs in memory, and the training pairs
written once as open_clip_train data.

Every source (procedural shapes or digit scenes, a CSV, webdataset shards) is read into
:class:`~mixgen_bench.data.ImagePairs` at one image size. The training pairs are then
written as PNG files with one tab-separated CSV per training-set size (``filepath`` and
``title`` columns, open_clip_train's defaults), which is what every run trains on; the
held-out pairs stay in memory for evaluation.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from torchvision.io import write_png

from mixgen_bench.data import ImagePairs, shapes
from mixgen_bench.errors import UsageError
from mixgen_bench.readers import csv_pairs, karpathy_pairs, wds_pairs

CSV_SEPARATOR = "\t"
IMAGE_KEY, CAPTION_KEY = "filepath", "title"
"""open_clip_train's default ``--csv-img-key`` and ``--csv-caption-key``."""


def load_data(options: argparse.Namespace,
              train_size: int) -> tuple[ImagePairs, ImagePairs | None, ImagePairs]:
    """``(train, validation, held_out)``: at least ``train_size`` training pairs (smaller
    sizes of a sweep use its first pairs), ``--val-size`` validation pairs (None for 0)
    and the held-out test pairs.

    Procedural data draws ``--eval-size + --val-size`` pairs of its held-out split: the
    first ``--eval-size`` are the test pairs, the rest validation. A CSV or shards keep
    their last ``--eval-size`` pairs for testing and the ``--val-size`` before them for
    validation. With ``--eval-json`` the test pairs are the JSON's, and validation comes
    from the held-out split (procedural) or the last pairs (CSV, shards). Pairs skipped
    while reading (images that do not decode) are listed in ``train.skipped`` and
    ``held_out.skipped``."""
    size, kind, val = options.image_size, options.data, options.val_size
    test = 0 if options.eval_json else options.eval_size
    if kind in ("shapes", "digits"):
        if kind == "shapes":
            make = shapes
        else:
            from mixgen_bench.digits import digit_scenes as make
        train = make(train_size, "train", size, options.data_seed)
        tests = validation = None
        if test + val:  # the held-out split's draws: the test pairs first
            held = make(test + val, "test", size, options.data_seed)
            tests, validation = _part(held, 0, test), _part(held, test, test + val)
    elif kind.startswith(("csv:", "wds:")):
        source = kind.split(":", 1)[1]
        pairs = (csv_pairs(source, size, img_key=options.csv_img_key,
                           caption_key=options.csv_caption_key, sep=options.csv_separator,
                           name=f"--data {kind}")
                 if kind.startswith("csv:") else wds_pairs(source, size, f"--data {kind}"))
        if len(pairs) - test - val < train_size:
            skipped = (f" ({len(pairs.skipped)} more skipped: their image does not decode)"
                       if pairs.skipped else "")
            raise UsageError(f"--data {kind} holds {len(pairs)} pairs{skipped}: too few for "
                             f"{train_size} training pairs (the largest of --sizes), {val} "
                             f"for validation (--val-size) and {test} held out "
                             f"(--eval-size)")
        keep = len(pairs) - test - val
        train = ImagePairs(pairs.images[:keep], pairs.captions[:keep], pairs.skipped)
        validation, tests = _part(pairs, keep, keep + val), _part(pairs, keep + val, len(pairs))
    else:
        raise UsageError(f"--data must be shapes, digits, csv:PATH or wds:PATTERN; "
                         f"got {kind!r}")
    held_out = (karpathy_pairs(options.eval_json, size, options.eval_image_root)
                if options.eval_json else tests)
    return train, validation if val else None, held_out


def _part(pairs: ImagePairs, start: int, stop: int) -> ImagePairs:
    """Pairs ``start`` to ``stop`` of ``pairs`` (views of its images, no copy)."""
    return ImagePairs(pairs.images[start:stop], pairs.captions[start:stop])


def write_training_data(train: ImagePairs, sizes: list[int], folder: Path) -> dict[int, Path]:
    """Write ``train``'s first ``max(sizes)`` pairs as ``folder/images/*.png`` and, per size,
    ``folder/train-n{size}.csv`` listing the first ``size`` of them (absolute paths).

    PNG is lossless, so the trainer reads exactly the pixels the harness holds.
    """
    captions = train.captions[:max(sizes)]
    if not all(isinstance(caption, str) for caption in captions):
        raise TypeError("training pairs must have one caption (a str) per image")
    images = folder.resolve() / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = [images / f"{index:06d}.png" for index in range(len(captions))]
    for path, image in zip(paths, train.images, strict=False):
        write_png(image, str(path))
    tables = {}
    for size in sizes:
        tables[size] = folder.resolve() / f"train-n{size}.csv"
        with tables[size].open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=CSV_SEPARATOR)
            writer.writerow([IMAGE_KEY, CAPTION_KEY])
            writer.writerows(zip(map(str, paths[:size]), captions[:size], strict=True))
    return tables
