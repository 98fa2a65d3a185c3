"""Image-caption data sets for retrieval experiments, and a procedural one.

:class:`ImagePairs` holds ``(image, caption)`` items: ``image`` a uint8 tensor
``[3, S, S]``, ``caption`` a str (or a list of str where an image has several captions).
The procedural :func:`shapes` set is made deterministically from a seed and needs no
download; :mod:`mixgen_bench.readers` reads CSV files, webdataset shards and
Karpathy-style JSON into the same class.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

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
    captions per image. Items are ``(images[i], captions[i])``. ``skipped`` describes the
    items of the source left out because their image did not decode."""

    def __init__(self, images: Tensor, captions: Sequence[str | list[str]],
                 skipped: Sequence[str] = ()) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("images must be a uint8 tensor [N, 3, S, S]")
        if len(captions) != images.shape[0]:
            raise ValueError(f"captions has {len(captions)} entries but images has "
                             f"{images.shape[0]}")
        self.images = images
        self.captions = list(captions)
        self.skipped = list(skipped)

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


def _stack(images: list[Tensor], name: str) -> Tensor:
    if not images:
        raise ValueError(f"{name} holds no image-caption pairs")
    return torch.stack(images)
