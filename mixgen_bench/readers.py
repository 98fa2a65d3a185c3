"""Readers of the image-caption formats open_clip_train and CLIP_benchmark use: a CSV,
webdataset shards, a Karpathy-style JSON list. Each returns an
:class:`~mixgen_bench.data.ImagePairs` at one square image size, held in memory, which
suits the small fine-tuning runs of the harness.

Bad files raise :class:`~mixgen_bench.errors.UsageError` (or the trainer's
``InputError``, whose CSV and shard readers these share) naming the file, line or flag: a
missing file (the CSV, the JSON, an image they list, a local shard), a CSV without the
named columns. An image that does not decode is skipped and described in the result's
``skipped`` (open_clip_train's webdataset loader skips such samples too).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from mixgen.open_clip_inputs import read_csv, shard_list
from mixgen_bench.data import ImagePairs
from mixgen_bench.errors import UsageError

IMAGE_EXTENSIONS = ("jpg", "png", "jpeg", "webp")
"""The image entries of a webdataset sample, in open_clip_train's order of preference."""
UNDECODABLE = (OSError, SyntaxError)
"""What PIL raises for data that is not an image it can read (truncated, damaged, other)."""


def load_image(source: str | Path | bytes | Image.Image, image_size: int) -> Tensor:
    """An RGB uint8 tensor ``[3, S, S]``: shorter side resized to S, then centre-cropped.
    ``source`` is a path, the encoded bytes of an image, or a PIL image."""
    if isinstance(source, Image.Image):
        tensor = TF.pil_to_tensor(source.convert("RGB"))
    else:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, [image_size], antialias=True)
    return TF.center_crop(tensor, [image_size, image_size])


class _PairReader:
    """Collects decoded pairs; an image that does not decode is skipped and described."""

    def __init__(self, name: str, image_size: int) -> None:
        self.name, self.image_size = name, image_size
        self.images: list[Tensor] = []
        self.captions: list[str | list[str]] = []
        self.skipped: list[str] = []

    def add(self, image: str | Path | bytes, caption: str | list[str], where: str) -> None:
        try:
            self.images.append(load_image(image, self.image_size))
        except UNDECODABLE as error:
            reason = "not an image" if isinstance(error, UnidentifiedImageError) else error
            self.skipped.append(f"{where} ({reason})")
            return
        self.captions.append(caption)

    def pairs(self) -> ImagePairs:
        if not self.images:
            detail = f"; {len(self.skipped)} skipped: {self.skipped[0]}" if self.skipped else ""
            raise UsageError(f"{self.name} holds no image-caption pairs that decode{detail}")
        return ImagePairs(torch.stack(self.images), self.captions, skipped=self.skipped)


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    return path


def csv_pairs(path: str | Path, image_size: int, *, img_key: str = "filepath",
              caption_key: str = "title", sep: str = "\t",
              name: str | None = None) -> ImagePairs:
    """Pairs from a CSV as open_clip_train reads it (``pandas.read_csv(path, sep=sep)``,
    tab-separated ``filepath`` and ``title`` columns by default, each caption ``str()``-ed);
    relative image paths are taken from the CSV's folder. An image file that is missing
    is refused; one that does not decode is skipped and listed in ``skipped``. ``name``
    is how messages call the file (default: its path)."""
    path = Path(path)
    name = name or str(path)
    images, captions = read_csv(path, img_key=img_key, caption_key=caption_key, sep=sep,
                                name=name)
    reader = _PairReader(name, image_size)
    for line, (image, caption) in enumerate(zip(images, captions, strict=True), start=2):
        image_path = path.parent / image
        if not image_path.is_file():
            raise UsageError(f"{name}, line {line}: image {image!r} not found (looked for "
                             f"{image_path}; relative paths are taken from the CSV's folder)")
        reader.add(image_path, caption, f"{path}, line {line}: {image}")
    return reader.pairs()


def wds_pairs(urls: str, image_size: int, name: str | None = None) -> ImagePairs:
    """Pairs from webdataset shards with open_clip_train's keys: an image (``jpg``,
    ``png``, ``jpeg`` or ``webp``) and a ``txt`` caption. Nothing else is decoded (nothing
    is unpickled). A sample whose image does not decode, or that lacks an image or a
    caption, and a damaged shard are skipped and listed in ``skipped``, as open_clip_train
    skips them. ``urls`` is a brace pattern, or several joined by ``::``, as open_clip's
    ``--train-data``; a missing local shard is refused."""
    import webdataset as wds

    reader = _PairReader(name or urls, image_size)

    def skip(error: Exception) -> bool:
        reader.skipped.append(f"{type(error).__name__}: {error}")
        return True  # go on with the next sample or shard

    for sample in wds.DataPipeline(wds.SimpleShardList(shard_list(urls, name)),
                                   wds.tarfile_to_samples(handler=skip)):
        where = f"{sample.get('__url__', urls)}: sample {sample.get('__key__')!r}"
        image = next((sample[key] for key in IMAGE_EXTENSIONS if key in sample), None)
        if image is None or "txt" not in sample:
            reader.skipped.append(f"{where} (no {'image' if image is None else 'txt'})")
        else:
            reader.add(image, sample["txt"].decode("utf-8"), where)
    return reader.pairs()


def karpathy_pairs(path: str | Path, image_size: int,
                   image_root: str | Path | None = None) -> ImagePairs:
    """Pairs from a COCO/Flickr30K Karpathy-style JSON list
    ``[{"image": path, "caption": [..]}]`` (a str caption is one caption); image paths are
    relative to ``image_root``, by default the JSON's folder. Missing images are refused,
    images that do not decode skipped, as by :func:`csv_pairs`."""
    path = _existing(Path(path), "JSON file")
    root = path.parent if image_root is None else Path(image_root)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(entries, list):
        raise UsageError(f"{path} must hold a JSON list of {{'image', 'caption'}} objects")
    reader = _PairReader(str(path), image_size)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
            raise UsageError(f"{path}: entry {i} needs the keys 'image' and 'caption'")
        caption = entry["caption"]
        image_path = _existing(root / entry["image"], f"{path}, entry {i}: image")
        reader.add(image_path, [caption] if isinstance(caption, str) else list(caption),
                   f"{path}, entry {i}: {entry['image']}")
    return reader.pairs()
