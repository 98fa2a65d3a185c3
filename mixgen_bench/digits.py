"""Digit scenes: real handwritten strokes, composed into captioned scenes offline.

scikit-learn bundles 1797 handwritten digits of 8 x 8 pixels (``load_digits``, no
download). :func:`digit_scenes` places one or two of them, coloured, on a 3 x 3 grid and
describes the scene: ``"a red 3 at the top left and a blue 7 at the bottom right"``.
Unlike the flat colours of :func:`mixgen_bench.data.shapes`, strokes stay visible when two
such images are blended, so the two sets test MixGen's premise from two sides.
"""

from __future__ import annotations

import functools
import zlib

import torch
from torch import Tensor
from torch.nn import functional as F

from mixgen_bench.data import COLOURS, POSITIONS, SPLITS, ImagePairs, check_positive_int

HELD_OUT_EVERY = 5
"""Every 5th occurrence of each digit class in ``load_digits`` order is a ``test`` sample."""
MIN_IMAGE_SIZE = 12
GRID = 3
_DRAW_CHUNK = 1024
"""Scenes are drawn in chunks of this fixed size, so the stream, and with it every prefix
of the data set, does not depend on ``num_samples``."""


def digit_scenes(num_samples: int, split: str, image_size: int, seed: int) -> ImagePairs:
    """``num_samples`` scenes of one or two coloured handwritten digits on a 3 x 3 grid.

    Items are ``(uint8 image [3, S, S], caption)``. Captions are distinct within a split
    and name the digits in reading order. The ``train`` and ``test`` splits use disjoint
    digit samples (rows of ``load_digits``, the same for every seed; see
    ``HELD_OUT_EVERY``), so held-out handwriting is never trained on. The same arguments
    give the same pixels; a larger ``num_samples`` extends a smaller one, and the scenes
    do not depend on ``image_size``.
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("image_size", image_size)
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE} (a 3 x 3 grid of digits), "
                         f"got {image_size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    strokes, labels, held_out = _load_digits()
    rows_by_label = [torch.nonzero((labels == d) & (held_out == (split == "test"))).flatten()
                     for d in range(10)]
    generator = torch.Generator().manual_seed(zlib.crc32(f"digits/{seed}/{split}".encode()))
    rows, colours, positions, captions = _draw_scenes(num_samples, rows_by_label, generator)
    images = _render(strokes, rows, colours, positions, image_size)
    return ImagePairs(images, captions)


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[Tensor, Tensor, Tensor]:
    """``(strokes [1797, 8, 8] in [0, 1], labels [1797], held_out [1797] bool)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    strokes = torch.from_numpy(bunch.images).float() / 16.0
    labels = torch.from_numpy(bunch.target).long()
    occurrence = torch.zeros_like(labels)
    for digit in range(10):
        members = labels == digit
        occurrence[members] = torch.arange(int(members.sum()))
    return strokes, labels, occurrence % HELD_OUT_EVERY == 0


def _draw_scenes(num_samples: int, rows_by_label: list[Tensor], generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """Distinct scenes as ``(rows [N, 2], colours [N, 2], positions [N, 2], captions)``;
    an absent second digit has row -1. Positions are grid cells in reading order."""
    colour_names = list(COLOURS)
    counts = torch.tensor([len(r) for r in rows_by_label])
    table = torch.nn.utils.rnn.pad_sequence(rows_by_label, batch_first=True)
    kept_rows, kept_colours, kept_positions, captions, seen = [], [], [], [], set()
    while len(captions) < num_samples:
        two = torch.rand(_DRAW_CHUNK, generator=generator) < 0.5
        digits = torch.randint(10, (_DRAW_CHUNK, 2), generator=generator)
        pick = torch.rand((_DRAW_CHUNK, 2), generator=generator)
        rows = table[digits, (pick * counts[digits]).long()]
        colours = torch.randint(len(colour_names), (_DRAW_CHUNK, 2), generator=generator)
        cells = torch.rand((_DRAW_CHUNK, GRID * GRID), generator=generator).argsort(dim=1)
        positions = cells[:, :2].sort(dim=1).values
        rows[:, 1] = torch.where(two, rows[:, 1], -1)
        for k, (pair, colour, cell, both) in enumerate(zip(
                digits.tolist(), colours.tolist(), positions.tolist(), two.tolist(),
                strict=True)):
            parts = [f"a {colour_names[colour[i]]} {pair[i]} at the {POSITIONS[cell[i]]}"
                     for i in range(2 if both else 1)]
            caption = " and ".join(parts)
            if caption in seen:
                continue
            seen.add(caption)
            captions.append(caption)
            kept_rows.append(rows[k])
            kept_colours.append(colours[k])
            kept_positions.append(positions[k])
            if len(captions) == num_samples:
                break
    return (torch.stack(kept_rows), torch.stack(kept_colours), torch.stack(kept_positions),
            captions)


def _render(strokes: Tensor, rows: Tensor, colours: Tensor, positions: Tensor,
            image_size: int) -> Tensor:
    """Black ``[N, 3, S, S]`` uint8 canvases with each digit, resized to its cell less a
    margin and tinted by its colour, in its cell."""
    cell = image_size // GRID
    side = cell - max(1, cell // 8)
    border = (image_size - GRID * cell) // 2 + (cell - side) // 2
    resized = F.interpolate(strokes[:, None], size=(side, side), mode="bilinear",
                            align_corners=False).clamp_(0, 1)[:, 0]
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    images = torch.zeros((rows.shape[0], 3, image_size, image_size), dtype=torch.uint8)
    for slot in range(rows.shape[1]):
        for cell_index in range(GRID * GRID):
            chosen = torch.nonzero((positions[:, slot] == cell_index)
                                   & (rows[:, slot] >= 0)).flatten()
            if not chosen.numel():
                continue
            tint = palette[colours[chosen, slot]][:, :, None, None]
            patch = (resized[rows[chosen, slot]][:, None] * tint).round_().to(torch.uint8)
            top = border + cell_index // GRID * cell
            left = border + cell_index % GRID * cell
            images[chosen, :, top:top + side, left:left + side] = patch
    return images
