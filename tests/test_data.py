"""The procedural shapes set and the CSV, webdataset and Karpathy-JSON readers."""

import gc
import json
import re
import zlib

import pytest
import torch
from PIL import Image

from mixgen_bench.data import COLOURS, HELD_OUT_BUCKETS, POSITIONS, ImagePairs, shapes
from mixgen_bench.readers import csv_pairs, karpathy_pairs, load_image, wds_pairs

OBJECT = r"a (small|large) (\w+) (\w+) (?:at|in) the ([a-z ]+?)"
CAPTION = re.compile(rf"^{OBJECT}(?:(?:, | and ){OBJECT})*$")


def parse(caption):
    """``[(size, colour, shape, position)]`` of a caption, by its grammar."""
    assert CAPTION.match(caption), caption
    return re.findall(r"a (small|large) (\w+) (\w+) (?:at|in) the ([a-z ]+?)(?=,| and|$)",
                      caption)


def test_shapes_items_and_determinism():
    data = shapes(24, "train", 16, seed=3)
    image, caption = data[5]
    assert len(data) == 24 and image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert isinstance(caption, str)
    again = shapes(24, "train", 16, seed=3)
    assert torch.equal(data.images, again.images) and data.captions == again.captions
    other = shapes(24, "train", 16, seed=4)
    assert other.captions != data.captions


def test_shapes_prefixes_and_sizes_share_scenes():
    small, large = shapes(10, "train", 16, 0), shapes(20, "train", 16, 0)
    assert torch.equal(large.images[:10], small.images) and large.captions[:10] == small.captions
    assert shapes(10, "train", 40, 0).captions == small.captions


def test_shapes_splits_are_disjoint_and_follow_the_held_out_rule():
    train, test = shapes(300, "train", 8, 0), shapes(100, "test", 8, 0)
    assert len(set(train.captions)) == 300 and len(set(test.captions)) == 100
    assert not set(train.captions) & set(test.captions)
    for caption in train.captions:
        assert zlib.crc32(caption.encode()) % HELD_OUT_BUCKETS != 0
    for caption in test.captions:
        assert zlib.crc32(caption.encode()) % HELD_OUT_BUCKETS == 0
    counts = {len(parse(c)) for c in train.captions}
    assert counts == {1, 2, 3}


def test_shapes_pixels_match_their_captions():
    """The pixel nearest each named cell's centre has the named colour."""
    size = 96
    data = shapes(30, "train", size, 1)
    for image, caption in data:
        objects = parse(caption)
        positions = [p for *_, p in objects]
        assert positions == sorted(positions, key=POSITIONS.index)  # reading order
        for _, colour, _, position in objects:
            cell = POSITIONS.index(position)
            row, column = ((cell // 3 * 2 + 1) * size) // 6, ((cell % 3 * 2 + 1) * size) // 6
            assert image[:, row, column].tolist() == list(COLOURS[colour]), caption


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"split": "val"}, ValueError, "split must be one of"),
    ({"num_samples": 0}, ValueError, "num_samples must be >= 1"),
    ({"image_size": 2.0}, TypeError, "image_size must be an int"),
    ({"seed": "0"}, TypeError, "seed must be an int"),
])
def test_shapes_bad_arguments(kwargs, error, message):
    arguments = {"num_samples": 4, "split": "train", "image_size": 8, "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        shapes(**arguments)


def solid(path, colour, size=(20, 12)):
    Image.new("RGB", size, colour).save(path)


def test_load_image_resizes_the_shorter_side_and_crops():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 4, 20))  # a red strip, cropped away by the centre crop
    tensor = load_image(image, 10)
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.uint8
    assert int(tensor[0].max()) == 0


def test_csv_pairs(tmp_path):
    (tmp_path / "img").mkdir()
    solid(tmp_path / "img" / "a.png", (10, 20, 30))
    solid(tmp_path / "img" / "b.png", (200, 100, 0))
    (tmp_path / "train.csv").write_text("filepath\ttitle\nimg/a.png\ta dark, blue thing\n"
                                        "img/b.png\t42\n")  # open_clip str()s captions
    pairs = csv_pairs(tmp_path / "train.csv", 8)
    assert pairs.captions == ["a dark, blue thing", "42"] and pairs.skipped == []
    assert pairs.images.shape == (2, 3, 8, 8)
    assert pairs.images[0, :, 3, 3].tolist() == [10, 20, 30]
    assert pairs.images[1, :, 3, 3].tolist() == [200, 100, 0]
    (tmp_path / "comma.csv").write_text('path,caption\nimg/b.png,"orange, bright"\n')
    pairs = csv_pairs(tmp_path / "comma.csv", 8, img_key="path", caption_key="caption", sep=",")
    assert pairs.captions == ["orange, bright"]


def test_csv_pairs_skips_and_lists_images_that_do_not_decode(tmp_path):
    solid(tmp_path / "a.png", (10, 20, 30))
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "train.csv").write_text("filepath\ttitle\nb.png\tbroken\na.png\tfine\n")
    pairs = csv_pairs(tmp_path / "train.csv", 8)
    assert pairs.captions == ["fine"] and len(pairs.images) == 1
    assert pairs.skipped == [f"{tmp_path / 'train.csv'}, line 2: b.png (not an image)"]


# webdataset leaves the shard's file to the garbage collector to close
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
def test_wds_pairs_reads_images_and_captions_only(tmp_path):
    wds = pytest.importorskip("webdataset")
    samples = [("png", (0, 255, 0), "green"), ("jpg", (255, 255, 255), "white"),
               ("webp", (0, 0, 255), "blue")]
    with wds.TarWriter(str(tmp_path / "shard-000000.tar")) as sink:
        for i, (ext, colour, text) in enumerate(samples):
            path = tmp_path / f"{i}.{ext}"
            solid(path, colour)
            # a pickle entry that must not be decoded: these bytes would fail to unpickle
            sink.write({"__key__": f"{i:04d}", ext: path.read_bytes(), "txt": text,
                        "pyd": b"not a pickle"})
        sink.write({"__key__": "broken", "png": b"not an image", "txt": "skipped"})
        sink.write({"__key__": "mute", "png": (tmp_path / "0.png").read_bytes()})
    pairs = wds_pairs(str(tmp_path / "shard-{000000..000000}.tar"), 6)
    assert pairs.captions == ["green", "white", "blue"]
    assert pairs.images[0, :, 2, 2].tolist() == [0, 255, 0]
    assert all(abs(v - 255) <= 2 for v in pairs.images[1, :, 2, 2].tolist())  # JPEG
    shard = tmp_path / "shard-000000.tar"
    assert pairs.skipped == [f"{shard}: sample 'broken' (not an image)",
                             f"{shard}: sample 'mute' (no txt)"]
    with pytest.raises(ValueError, match=r": no such file .*shard-000001.tar$"):
        wds_pairs(str(tmp_path / "shard-{000000..000001}.tar"), 6)
    gc.collect()  # the unclosed-file warning fires here, under this test's filter


def test_karpathy_pairs_and_retrieval_texts(tmp_path):
    solid(tmp_path / "x.png", (1, 2, 3))
    solid(tmp_path / "y.png", (4, 5, 6))
    entries = [{"image": "x.png", "caption": ["one", "two"]},
               {"image": "y.png", "caption": "three"}]
    (tmp_path / "test.json").write_text(json.dumps(entries))
    pairs = karpathy_pairs(tmp_path / "test.json", 4)
    assert pairs.captions == [["one", "two"], ["three"]]
    assert pairs.images[1, :, 0, 0].tolist() == [4, 5, 6]
    texts, owner = pairs.retrieval_texts()
    assert texts == ["one", "two", "three"] and owner.tolist() == [0, 0, 1]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test.json").write_text(json.dumps(entries))
    rooted = karpathy_pairs(tmp_path / "sub" / "test.json", 4, image_root=tmp_path)
    assert torch.equal(rooted.images, pairs.images)
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "x.png"}]))
    with pytest.raises(ValueError, match="entry 0 needs the keys"):
        karpathy_pairs(tmp_path / "bad.json", 4)


def test_image_pairs_checks_subset_and_from_dataset():
    pairs = ImagePairs(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), ["a", "b", "c"])
    assert pairs.subset(2).captions == ["a", "b"]
    assert ImagePairs.from_dataset(pairs) is pairs
    items = [(torch.full((3, 2, 2), i, dtype=torch.uint8), f"c{i}") for i in range(2)]
    held = ImagePairs.from_dataset(items)
    assert held.captions == ["c0", "c1"] and held.images[:, 0, 0, 0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="size must be in"):
        pairs.subset(4)
    with pytest.raises(ValueError, match="captions has 2 entries"):
        ImagePairs(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), ["a", "b"])
    with pytest.raises(TypeError, match="uint8"):
        ImagePairs(torch.zeros(3, 3, 2, 2), ["a", "b", "c"])
