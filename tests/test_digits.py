import functools
import re

import pytest
import torch
from sklearn.datasets import load_digits

from mixgen_bench.data import COLOURS, POSITIONS
from mixgen_bench.digits import digit_scenes

PHRASE = re.compile(r"a (\w+) (\d) at the (.+)")


def held_out_rows() -> set[int]:
    """The documented rule: every 5th occurrence of each class, in load_digits order."""
    seen = [0] * 10
    rows = set()
    for row, label in enumerate(load_digits().target.tolist()):
        if seen[label] % 5 == 0:
            rows.add(row)
        seen[label] += 1
    return rows


@functools.lru_cache(maxsize=1)
def tinted_digits() -> tuple[dict[tuple[str, bytes], list[int]], list[int]]:
    """Every load_digits row tinted by every colour, as uint8 bytes -> rows; the labels."""
    bunch = load_digits()
    strokes = torch.from_numpy(bunch.images).float() / 16
    lookup: dict[tuple[str, bytes], list[int]] = {}
    for colour, rgb in COLOURS.items():
        tint = torch.tensor(rgb, dtype=torch.float32)[:, None, None]
        for row, pixels in enumerate((strokes[:, None] * tint).round().to(torch.uint8)):
            lookup.setdefault((colour, pixels.numpy().tobytes()), []).append(row)
    return lookup, bunch.target.tolist()


def source_rows(dataset) -> list[set[int]]:
    """For each scene rendered at 27 x 27 (cells of 9, digits kept at 8 x 8, unresampled),
    the load_digits rows whose pixels, tinted by the caption's colour, match each digit
    exactly; also checks the digit's label and that unnamed cells are black."""
    lookup, labels = tinted_digits()
    found = []
    for image, caption in dataset:
        named = set()
        rows = set()
        for phrase in caption.split(" and "):
            colour, digit, place = PHRASE.fullmatch(phrase).groups()
            cell = POSITIONS.index(place)
            named.add(cell)
            top, left = cell // 3 * 9, cell % 3 * 9
            patch = image[:, top:top + 8, left:left + 8].contiguous()
            matches = lookup.get((colour, patch.numpy().tobytes()), [])
            assert matches, caption
            assert all(labels[m] == int(digit) for m in matches)
            rows.update(matches)
        for cell in set(range(9)) - named:
            top, left = cell // 3 * 9, cell % 3 * 9
            assert image[:, top:top + 9, left:left + 9].sum() == 0
        found.append(rows)
    return found


def test_items_are_uint8_images_with_captions():
    data = digit_scenes(40, "train", 32, seed=0)
    assert len(data) == 40
    image, caption = data[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    phrases = caption.split(" and ")
    assert 1 <= len(phrases) <= 2 and all(PHRASE.fullmatch(p) for p in phrases)
    assert data.images.shape == (40, 3, 32, 32)


def test_pixels_come_from_the_named_digits_and_splits_are_disjoint():
    held_out = held_out_rows()
    train = set().union(*source_rows(digit_scenes(300, "train", 27, seed=1)))
    test = set().union(*source_rows(digit_scenes(300, "test", 27, seed=1)))
    assert train.isdisjoint(held_out) and test <= held_out
    assert train.isdisjoint(test)
    assert len(train) > 200 and len(test) > 150


def test_same_seed_same_data_and_prefixes_extend():
    first = digit_scenes(60, "train", 32, seed=3)
    again = digit_scenes(60, "train", 32, seed=3)
    longer = digit_scenes(1500, "train", 32, seed=3)
    assert torch.equal(first.images, again.images) and first.captions == again.captions
    assert torch.equal(longer.images[:60], first.images) and longer.captions[:60] == first.captions
    assert len(set(longer.captions)) == 1500
    other = digit_scenes(60, "train", 32, seed=4)
    assert other.captions != first.captions
    assert digit_scenes(60, "train", 64, seed=3).captions == first.captions


def test_scenes_hold_one_or_two_digits_in_reading_order():
    counts = {1: 0, 2: 0}
    for caption in digit_scenes(400, "test", 32, seed=0).captions:
        places = [PHRASE.fullmatch(p).group(3) for p in caption.split(" and ")]
        counts[len(places)] += 1
        cells = [POSITIONS.index(p) for p in places]
        assert cells == sorted(cells) and len(set(cells)) == len(cells)
    assert counts[1] > 100 and counts[2] > 100


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"split": "val"}, ValueError, "split must be one of"),
    ({"image_size": 8}, ValueError, "image_size must be >= 12"),
    ({"num_samples": 0}, ValueError, "num_samples must be >= 1"),
    ({"num_samples": 2.0}, TypeError, "num_samples must be an int"),
    ({"seed": "0"}, TypeError, "seed must be an int"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    arguments = {"num_samples": 4, "split": "train", "image_size": 32, "seed": 0} | kwargs
    with pytest.raises(error, match=message):
        digit_scenes(**arguments)
