"""A run's input files, checked before ``python -m mixgen.open_clip_train`` trains.

open_clip_train finds a missing CSV, a missing column, a missing image or a checkpoint of
another model only once it reads them, and stops with a traceback; with fewer pairs than
one batch it trains no step and ends as if it had. These checks run first and raise
:class:`InputError`, one line naming the flag and the problem, which the command turns
into exit status 2. The retrieval harness reads its data with the same functions.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError

CSV_SEPARATORS = ("\t", ",", ";", "|")
"""Separators a CSV that does not parse may have instead (for the hint)."""


class InputError(ValueError):
    """A run's input (file, column, data size, checkpoint) is missing or does not fit; the
    message names the flag and the problem in one line."""


def read_csv(path: str | Path, *, img_key: str = "filepath", caption_key: str = "title",
             sep: str = "\t", name: str | None = None) -> tuple[list[str], list[str]]:
    """The image paths and captions of a CSV, read as open_clip_train's ``CsvDataset``
    reads it (``pandas.read_csv(path, sep=sep)``, both columns ``str()``-ed). ``name`` is
    how messages call the file (default ``--train-data PATH``)."""
    import pandas

    name = name or f"--train-data {path}"
    if not Path(path).is_file():
        raise InputError(f"{name}: no such file")
    try:
        frame = pandas.read_csv(path, sep=sep)
    except (pandas.errors.ParserError, pandas.errors.EmptyDataError) as error:
        raise InputError(f"{name} does not parse as a CSV with separator {sep!r} "
                         f"(--csv-separator): {str(error).strip()}") from None
    columns = [str(column) for column in frame.columns]
    for key, flag in ((img_key, "--csv-img-key"), (caption_key, "--csv-caption-key")):
        if key not in columns:
            other = next((s for s in CSV_SEPARATORS if s != sep
                          and any(s in column for column in columns)), None)
            hint = (f"; it looks separated by {other!r}, not {sep!r} (--csv-separator)"
                    if other else "")
            raise InputError(f"{name} has no column {key!r} ({flag}); its columns are "
                             f"{columns}{hint}")
    return [str(v) for v in frame[img_key]], [str(v) for v in frame[caption_key]]


def shard_list(urls: str, name: str | None = None) -> list[str]:
    """The shards of open_clip_train's ``--train-data`` for webdataset: ``::``-separated
    brace patterns (``shards/{000..009}.tar``). Local files must exist; URLs and
    ``pipe:`` commands are left to webdataset."""
    from braceexpand import braceexpand

    shards = [shard for pattern in urls.split("::") for shard in braceexpand(pattern)]
    missing = next((shard for shard in shards if "://" not in shard
                    and not shard.startswith("pipe:") and not Path(shard).is_file()), None)
    if missing is not None:
        raise InputError(f"{name or f'--train-data {urls}'}: no such file {missing}")
    return shards


def check_pretrained(path: str | Path, model_name: str, **create: Any) -> None:
    """Refuse a checkpoint that torch cannot load with ``weights_only=True`` or whose
    tensors do not fit open_clip's ``model_name`` (built with ``create``, the keywords of
    ``open_clip.create_model``): the message counts and names the tensors that differ."""
    import open_clip

    if not Path(path).is_file():
        raise InputError(f"--pretrained {path}: no such file")
    try:
        state = open_clip.factory.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a file of another kind
        reason = (str(error).strip().splitlines() or [""])[0]
        raise InputError(f"--pretrained {path} is not a checkpoint torch loads with "
                         f"weights_only=True ({type(error).__name__}: {reason})") from None
    logging.disable(logging.WARNING)  # open_clip's "initialized randomly": true, beside the point
    try:
        with torch.random.fork_rng(devices=[]):  # the run's own draws stay as they were
            model = open_clip.create_model(model_name, load_weights=False, **create)
    finally:
        logging.disable(logging.NOTSET)
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except RuntimeError as error:  # torch's load_state_dict: names or shapes differ
        expected = model.state_dict()
        missing = [key for key in expected if key not in state]
        unexpected = [key for key in state if key not in expected]
        shapes = [f"{key} {list(state[key].shape)} for {list(expected[key].shape)}"
                  for key in expected if key in state and state[key].shape != expected[key].shape]
        found = [f"{len(items)} {what} (first: {items[0]})" for what, items in (
            ("tensors of other shapes", shapes), ("of the model's tensors missing", missing),
            ("tensors the model does not have", unexpected)) if items]
        raise InputError(f"--pretrained {path} does not fit --model {model_name}: "
                         + ("; ".join(found) or str(error).strip().splitlines()[0])) from None


def siglip_model_options(siglip: bool) -> dict[str, float]:
    """The keywords open_clip_train adds to ``open_clip.create_model`` for ``--siglip``:
    SigLIP's initial logit scale and a logit bias. A SigLIP run's checkpoint holds
    ``logit_bias``, which only a model built with them loads; a CLIP checkpoint loads into
    such a model with the bias at 0 (open_clip's ``load_checkpoint``)."""
    return {"init_logit_scale": math.log(10), "init_logit_bias": -10} if siglip else {}


def check_run_inputs(args: argparse.Namespace) -> None:
    """Check what open_clip_train's parsed ``args`` name before it starts: the CSV files
    (columns, every image, at least one batch per process) or local shards, and a
    ``--pretrained`` file (tags such as ``openai`` are left to open_clip)."""
    for data, train in ((args.train_data, True), (args.val_data, False)):
        if data is None or args.dataset_type == "synthetic":
            continue
        flag = "--train-data" if train else "--val-data"
        kind = args.dataset_type
        if kind == "auto":
            kind = {"csv": "csv", "tsv": "csv", "tar": "webdataset"}.get(data.split(".")[-1])
        if kind == "webdataset":
            shard_list(data, f"{flag} {data}")
        elif kind == "csv":
            _check_csv(data, args, flag, train)
    if args.pretrained and not args.model.startswith(("local-dir:", "hf-hub:")):
        import open_clip

        if Path(args.pretrained).is_file() or not open_clip.get_pretrained_cfg(
                args.model, args.pretrained):
            size = args.force_image_size  # as open_clip_train builds the model
            check_pretrained(args.pretrained, args.model, precision=args.precision,
                             force_quick_gelu=args.force_quick_gelu,
                             force_custom_text=args.force_custom_text,
                             force_image_size=size[0] if size and len(size) == 1 else size,
                             force_context_length=args.force_context_length,
                             **siglip_model_options(args.siglip))


def _check_csv(path: str, args: argparse.Namespace, flag: str, train: bool) -> None:
    images, _ = read_csv(path, img_key=args.csv_img_key, caption_key=args.csv_caption_key,
                         sep=args.csv_separator, name=f"{flag} {path}")
    for line, image in enumerate(images, start=2):
        if not Path(image).is_file():
            raise InputError(f"{flag} {path}, line {line}: image {image!r} not found "
                             f"(open_clip_train opens the CSV's paths from the folder it "
                             f"runs in, {os.getcwd()})")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if train and math.ceil(len(images) / processes) < args.batch_size:
        across = f" in each of {processes} processes" if processes > 1 else ""
        raise InputError(f"{flag} {path} holds {len(images)} pairs: fewer than one batch of "
                         f"--batch-size {args.batch_size}{across}, so no step would train")


def undecodable_image(error: BaseException) -> bool:
    """Whether ``error`` (raised in training, maybe re-raised from a loader worker) is PIL
    refusing an image: not an image it identifies, or a truncated one."""
    return isinstance(error, UnidentifiedImageError) or (
        isinstance(error, OSError) and "image file is truncated" in str(error))
