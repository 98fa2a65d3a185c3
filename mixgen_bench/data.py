"""Image-caption data sets for retrieval experiments: a procedural set and file readers.

Everything here returns an :class:`ImagePairs` data set whose items are
``(image, caption)``: ``image`` a uint8 tensor ``[3, S, S]``, ``caption`` a str (or a
list of str where an image has several captions). The procedural :func:`shapes` set is
made deterministically from a seed and needs no download; the readers load the formats
open_clip and CLIP_benchmark use (CSV, webdataset shards, Karpathy-style JSON), resized
to one square size and held in memory, which suits the small fine-tuning runs they serve.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

SPLITS = ("train", "test")
SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 70), "blue": (50, 90, 235),
    "yellow": (235, 215, 40), "purple": (160, 60, 210), "white": (245, 245, 245),
}
SIZES = {"small": 0.10, "large": 0.155}
"""Half the extent of a shape, as a fraction of the image side."""
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")
"""Cells of a 3 x 3 grid in reading order."""
HELD_OUT_BUCKETS = 5
"""A scene is held out when the CRC32 of its caption is 0 modulo this (about 1 in 5)."""


class ImagePairs(Dataset):
    """Images held as one uint8 tensor ``[N, 3, S, S]`` with one caption or a list of
    captions per image. Items are ``(images[i], captions[i])``."""

    def __init__(self, images: Tensor, captions: Sequence[str | list[str]]) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("images must be a uint8 tensor [N, 3, S, S]")
        if len(captions) != images.shape[0]:
            raise ValueError(f"captions has {len(captions)} entries but images has "
                             f"{images.shape[0]}")
        self.images = images
        self.captions = list(captions)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> ImagePairs:
        """Hold any sized data set of ``(uint8 image [3, S, S], caption)`` items in memory."""
        if isinstance(dataset, ImagePairs):
            return dataset
        items = [dataset[i] for i in range(len(dataset))]
        return cls(_stack([image for image, _ in items], type(dataset).__name__),
                   [caption for _, caption in items])

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[Tensor, str | list[str]]:
        return self.images[index], self.captions[index]

    def subset(self, size: int) -> ImagePairs:
        """The first ``size`` pairs: nested subsets for a sweep over training-set sizes."""
        if not 0 < size <= len(self):
            raise ValueError(f"size must be in [1, {len(self)}], got {size}")
        return ImagePairs(self.images[:size], self.captions[:size])

    def retrieval_texts(self) -> tuple[list[str], Tensor]:
        """All captions flattened, and for each the index of its image (for evaluation)."""
        texts, owner = [], []
        for index, caption in enumerate(self.captions):
            group = [caption] if isinstance(caption, str) else caption
            texts.extend(group)
            owner.extend([index] * len(group))
        return texts, torch.tensor(owner, dtype=torch.long)


# ---------------------------------------------------------------------- procedural shapes
def shapes(num_samples: int, split: str, image_size: int, seed: int) -> ImagePairs:
    """Scenes of one to three coloured shapes on a 3 x 3 grid, with compositional captions
    such as ``"a large red circle at the top left and a small blue cross in the center"``.

    Every scene is distinct within a split, and the ``train`` and ``test`` splits are
    disjoint: a scene belongs to ``test`` when the CRC32 of its caption is 0 modulo
    ``HELD_OUT_BUCKETS``, whatever the seed, so held-out scenes are never trained on.
    The same arguments always give the same pixels; a larger ``num_samples`` extends a
    smaller one (its first items are the same), and the captions do not depend on
    ``image_size``.
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("image_size", image_size)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    scene_generator = torch.Generator().manual_seed(zlib.crc32(f"shapes/{seed}/{split}".encode()))
    pixel_generator = torch.Generator().manual_seed(zlib.crc32(f"pixels/{seed}/{split}".encode()))
    images = torch.empty((num_samples, 3, image_size, image_size), dtype=torch.uint8)
    captions: list[str] = []
    seen: set[str] = set()
    while len(captions) < num_samples:
        scene = _draw_scene(scene_generator)
        caption = _caption(scene)
        held_out = zlib.crc32(caption.encode()) % HELD_OUT_BUCKETS == 0
        if caption in seen or held_out != (split == "test"):
            continue
        seen.add(caption)
        images[len(captions)] = _render(scene, image_size, pixel_generator)
        captions.append(caption)
    return ImagePairs(images, captions)


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _draw_scene(generator: torch.Generator) -> list[tuple[int, str, str, str]]:
    """``(cell, size, colour, shape)`` per object, in reading order of the cells."""
    count = int(torch.randint(1, 4, (), generator=generator))
    cells = sorted(torch.randperm(len(POSITIONS), generator=generator)[:count].tolist())
    scene = []
    for cell in cells:
        size, colour, shape = (options[int(torch.randint(len(options), (), generator=generator))]
                               for options in (list(SIZES), list(COLOURS), SHAPE_NAMES))
        scene.append((cell, size, colour, shape))
    return scene


def _caption(scene: list[tuple[int, str, str, str]]) -> str:
    phrases = [f"a {size} {colour} {shape} "
               f"{'in the' if POSITIONS[cell] == 'center' else 'at the'} {POSITIONS[cell]}"
               for cell, size, colour, shape in scene]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _render(scene: list[tuple[int, str, str, str]], image_size: int,
            generator: torch.Generator) -> Tensor:
    """Draw a scene: a dark noisy background, each shape jittered inside its cell."""
    side = image_size
    background = torch.randint(10, 70, (3, 1, 1), generator=generator).float()
    noise = torch.rand((3, side, side), generator=generator) * 16 - 8
    image = background + noise
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = coords[:, None], coords[None, :]
    for cell, size, colour, shape in scene:
        jitter = (torch.rand(2, generator=generator) - 0.5) * 0.05
        cy = (cell // 3 * 2 + 1) / 6 + float(jitter[0])
        cx = (cell % 3 * 2 + 1) / 6 + float(jitter[1])
        mask = _shape_mask(shape, y - cy, x - cx, SIZES[size])
        image = torch.where(mask, torch.tensor(COLOURS[colour], dtype=torch.float32)[:, None, None],
                            image)
    return image.round().clamp(0, 255).to(torch.uint8)


def _shape_mask(shape: str, dy: Tensor, dx: Tensor, r: float) -> Tensor:
    """Pixels inside a shape centred at offset 0 with half-extent ``r``."""
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (dy.abs() <= 0.85 * r) & (dx.abs() <= 0.85 * r)
    if shape == "triangle":
        return (dy <= r) & (dx.abs() <= (dy + r) / 2)
    if shape == "diamond":
        return dy.abs() + dx.abs() <= r
    if shape == "cross":
        thin = 0.35 * r
        return ((dy.abs() <= thin) & (dx.abs() <= r)) | ((dx.abs() <= thin) & (dy.abs() <= r))
    raise ValueError(f"shape must be one of {SHAPE_NAMES}, got {shape!r}")


# ---------------------------------------------------------------------- file formats
def load_image(source: str | Path | Image.Image, image_size: int) -> Tensor:
    """An RGB uint8 tensor ``[3, S, S]``: shorter side resized to S, then centre-cropped."""
    image = source if isinstance(source, Image.Image) else Image.open(source)
    tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, [image_size], antialias=True)
    return TF.center_crop(tensor, [image_size, image_size])


def _stack(images: list[Tensor], name: str) -> Tensor:
    if not images:
        raise ValueError(f"{name} holds no image-caption pairs")
    return torch.stack(images)


def csv_pairs(path: str | Path, image_size: int, *, image_key: str = "filepath",
              caption_key: str = "title", delimiter: str = ",") -> ImagePairs:
    """Pairs from an open_clip-style CSV with a header (``filepath,title``); relative
    image paths are resolved against the CSV's folder."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    for key, name in ((image_key, "image_key"), (caption_key, "caption_key")):
        if rows and key not in rows[0]:
            raise ValueError(f"{path} has no column {key!r} ({name}); columns are "
                             f"{list(rows[0])}")
    images = [load_image(path.parent / row[image_key], image_size) for row in rows]
    return ImagePairs(_stack(images, str(path)), [row[caption_key] for row in rows])


def wds_pairs(urls: str | list[str], image_size: int) -> ImagePairs:
    """Pairs from webdataset shards whose samples hold an image (``jpg``, ``jpeg`` or
    ``png``) and a ``txt`` caption. Only those two entries are decoded; nothing is
    unpickled."""
    import webdataset as wds

    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(),
                                wds.rename(jpg="jpg;jpeg;png", txt="txt", keep=False),
                                wds.decode("pil"), wds.to_tuple("jpg", "txt"))
    images, captions = [], []
    for image, caption in pipeline:
        images.append(load_image(image, image_size))
        captions.append(caption)
    return ImagePairs(_stack(images, str(urls)), captions)


def karpathy_pairs(path: str | Path, image_size: int,
                   image_root: str | Path | None = None) -> ImagePairs:
    """Pairs from a COCO/Flickr30K Karpathy-style JSON list
    ``[{"image": path, "caption": [..]}]`` (a str caption is one caption); image paths are
    relative to ``image_root``, by default the JSON's folder."""
    path = Path(path)
    root = path.parent if image_root is None else Path(image_root)
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of {{'image', 'caption'}} objects")
    images, captions = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
            raise ValueError(f"{path}: entry {i} needs the keys 'image' and 'caption'")
        caption = entry["caption"]
        images.append(load_image(root / entry["image"], image_size))
        captions.append([caption] if isinstance(caption, str) else list(caption))
    return ImagePairs(_stack(images, str(path)), captions)
