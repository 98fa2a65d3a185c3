"""``pairing="previous"``: partners are the original rows of the previous batch the same
transform, collate function or webdataset stage saw (each DataLoader worker its own),
checked against a reference of a few lines over consecutive batches."""

import argparse
import logging

import pytest
import torch
from helpers import image_batch
from torch.utils.data import DataLoader, Dataset

from mixgen import MixGen, MixGenCollate, MixGenConfig, MixGenInfo
from mixgen.functional import mix_images
from mixgen.losses import MixGenClipLoss, affinity
from mixgen.viz import gallery

open_clip = pytest.importorskip("open_clip")
wds = pytest.importorskip("webdataset")
mixgen_wds = pytest.importorskip("mixgen.wds")
# the trainer's tests' data and fixtures (autouse: each test runs in the data's folder)
from test_open_clip_train import (  # noqa: E402, F401
    csv_args,
    in_workdir,
    mixgen_lines,
    wds_args,
    weights,
    workdir,
)

from mixgen import open_clip_train  # noqa: E402

# batches of 6, 2 and 6 rows with ratio 0.5: batch 0 passes (no previous batch), batch 1
# mixes its 1 source with batch 0's row 0, batch 2 has 3 sources but batch 1 kept 1 row
SIZES = (6, 2, 6)
EXPECTED_PAIRS = (0, 1, 1)


def words(n: int, batch: int) -> list[str]:
    return [f"w{batch}x{i}" for i in range(n)]


def reference(batches, ratio=0.5, lam=0.5, sep=" "):
    """Plain loops: rows k < M of batch t become ``lam * row k + (1 - lam) * row k of
    batch t - 1`` (its original), captions joined; at most as many pairs as batch t - 1
    has sources; the first batch unmixed. uint8 rounds half up."""
    out, previous = [], None
    for images, texts in batches:
        mixed, joined = images.clone(), list(texts)
        sources = int(ratio * len(texts))
        count = 0 if previous is None else min(sources, len(previous[1]))
        for k in range(count):
            value = lam * images[k].double() + (1 - lam) * previous[0][k].double()
            mixed[k] = (value + 0.5).floor() if images.dtype == torch.uint8 else value
            joined[k] = texts[k] + sep + previous[1][k]
        out.append((mixed, joined, count))
        previous = (images[:sources], texts[:sources])
    return out


def plain_batches(dtype):
    return [(image_batch(n, dtype=dtype, seed=t), words(n, t)) for t, n in enumerate(SIZES)]


def assert_images(images, expected):
    """uint8: exactly; float: within float32 rounding."""
    if images.dtype == torch.uint8:
        assert torch.equal(images, expected)
    torch.testing.assert_close(images, expected)


def copy_captions(texts):
    return texts.clone() if isinstance(texts, torch.Tensor) else list(texts)


def tokenized(texts):
    return open_clip.tokenize(texts, context_length=12)


# ----------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("captions", ["strings", "ids"])
@pytest.mark.parametrize("inplace", [False, True])
def test_transform_pairs_with_the_previous_batch(dtype, captions, inplace):
    batches = plain_batches(dtype)
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True, inplace=inplace)
    for (images, texts), (want_images, want_texts, pairs) in zip(
            batches, reference(batches), strict=True):
        given = texts if captions == "strings" else tokenized(texts)
        before = (images.clone(), copy_captions(given))
        if inplace:  # written into the copies; the next batch pairs with the originals
            out, out_texts, info = mix(before[0].clone(), copy_captions(before[1]))
        else:
            out, out_texts, info = mix(images, given)
        assert_images(out, want_images)
        expected = want_texts if captions == "strings" else tokenized(want_texts)
        assert (out_texts == expected if captions == "strings"
                else torch.equal(out_texts, expected))
        assert (info.pairing, info.partner_in_batch, info.num_pairs) == ("previous", False, pairs)
        assert info.source.tolist() == info.partner.tolist() == list(range(pairs))
        assert torch.equal(images, before[0])  # the caller's batch, as passed
        assert (given == before[1]) if captions == "strings" else torch.equal(given, before[1])


def test_inplace_batches_keep_their_original_rows_for_the_next():
    """Batch 1 is mixed in place; batch 2's partners are batch 1's rows as they came."""
    first, second, third = (image_batch(4, seed=s) for s in range(3))
    mix = MixGen(pairing="previous", ratio=0.5, inplace=True)
    mix(first, words(4, 0))
    originals = second.clone()
    mix(second, words(4, 1))
    assert not torch.equal(second, originals)
    images, texts = mix(third.clone(), words(4, 2))
    torch.testing.assert_close(images[:2], 0.5 * third[:2] + 0.5 * originals[:2])
    assert texts[:2] == ["w2x0 w1x0", "w2x1 w1x1"]


def test_collate_pairs_with_the_previous_batch_of_samples():
    for dtype in (torch.float32, torch.uint8):
        batches = plain_batches(dtype)
        for captions in ("strings", "ids"):
            collate = MixGenCollate(pairing="previous", ratio=0.5, return_info=True)
            for (images, texts), (want_images, want_texts, pairs) in zip(
                    batches, reference(batches), strict=True):
                ids = tokenized(texts)
                samples = [{"image": images[i], "text": texts[i] if captions == "strings"
                            else ids[i], "n": i} for i in range(len(texts))]
                batch = collate(samples)
                assert_images(batch["image"], want_images)
                assert (batch["text"] == want_texts if captions == "strings"
                        else torch.equal(batch["text"], tokenized(want_texts)))
                assert batch["mixgen"].num_pairs == pairs
                assert batch["n"].tolist() == list(range(len(texts)))


def test_webdataset_stage_and_dict_encodings():
    batches = plain_batches(torch.float32)
    stage = mixgen_wds.mixgen(pairing="previous", ratio=0.5, return_info=True)
    encoded = [[images, {"input_ids": tokenized(texts), "attention_mask":
                         (tokenized(texts) != 0).long()}] for images, texts in batches]
    out = list(stage(iter(encoded)))
    for (images, texts, info), (want_images, want_texts, pairs) in zip(
            out, reference(batches), strict=True):
        torch.testing.assert_close(images, want_images)
        assert torch.equal(texts["input_ids"], tokenized(want_texts))
        assert torch.equal(texts["attention_mask"], (tokenized(want_texts) != 0).long())
        assert info.num_pairs == pairs


def test_append_mode_adds_the_mixed_rows():
    a, b = image_batch(4, seed=0), image_batch(4, seed=1)
    mix = MixGen(pairing="previous", ratio=0.5, mode="append", return_info=True)
    assert mix(a, words(4, 0))[0].shape[0] == 4
    images, texts, info = mix(b, words(4, 1))
    assert info.target.tolist() == [4, 5] and texts[4:] == ["w1x0 w0x0", "w1x1 w0x1"]
    torch.testing.assert_close(images, torch.cat([b, 0.5 * b[:2] + 0.5 * a[:2]]))


@pytest.mark.parametrize("options", [
    {"alpha": 0.4}, {"image_op": "cutmix", "text_op": "select"}, {"image_op": "concat"},
    {"alpha": 0.4, "inplace": True}])
def test_every_op_equals_the_in_batch_mix_of_both_batches_stacked(options):
    """Batch 2 mixed with batch 1's rows is the in-batch mix of ``[batch 2; batch 1's first
    M rows]`` with partners ``B + k``, cut to B rows."""
    a, b = image_batch(6, seed=0), image_batch(6, seed=1)
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True,
                 generator=torch.Generator().manual_seed(0), **options)
    mix(a.clone(), words(6, 0))
    images, texts, info = mix(b.clone(), words(6, 1))
    fields = {f: getattr(info, f) for f in ("source", "lam", "boxes", "keep_source_text",
                                             "image_op", "text_op")}
    stacked = MixGenInfo(batch_size=9, mode="replace", pairing="permute",
                         partner=info.partner + 6, **fields)
    want_images, want_texts = MixGen().mix(torch.cat([b, a[:3]]),
                                           words(6, 1) + words(6, 0)[:3], stacked)
    torch.testing.assert_close(images, want_images[:6])
    assert texts == want_texts[:6] and info.num_pairs == 3


def test_ratio_one_mixes_every_row():
    a, b = image_batch(3, seed=0), image_batch(3, seed=1)
    mix = MixGen(pairing="previous", ratio=1.0)
    mix(a, words(3, 0))
    images, texts = mix(b, words(3, 1))
    torch.testing.assert_close(images, 0.5 * b + 0.5 * a)
    assert texts == ["w1x0 w0x0", "w1x1 w0x1", "w1x2 w0x2"]


@pytest.mark.parametrize("options", [{}, {"alpha": 0.4, "inplace": True},
                                     {"image_op": "cutmix", "mode": "append"}])
@pytest.mark.parametrize("captions", ["strings", "ids"])
def test_no_value_is_read_from_the_device(options, captions):
    """On ``meta`` tensors (no values) any read back to the host raises: keeping rows and
    mixing with them read none, as in tests/test_sync.py."""
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True, **options)
    collate = MixGenCollate(pairing="previous", ratio=0.5, return_info=True)
    for t in range(2):
        images = image_batch(6, dtype=torch.uint8, seed=t).to("meta")
        texts = words(6, t) if captions == "strings" else tokenized(words(6, t)).to("meta")
        out, _, info = mix(images, texts)
        batch = collate([(images[i], texts[i]) for i in range(6)])
    assert out.device.type == "meta" and info.num_pairs == batch[2].num_pairs == 3


# ----------------------------------------------------------------------------- refusals
def test_bad_input_is_refused_and_leaves_the_state():
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got 1.5"):
        MixGen(pairing="previous", ratio=1.5)
    mix = MixGen(pairing="previous", ratio=0.5, inplace=True)
    first = image_batch(4, seed=0)
    mix(first.clone(), words(4, 0))
    wider, ids = image_batch(4, shape=(3, 4, 6), seed=1), tokenized(words(4, 1))
    for images, texts, what in ((wider, words(4, 1), "images"),
                                (image_batch(4, seed=1), ids, "captions")):
        before = images.clone()
        with pytest.raises(ValueError, match=f"pairing='previous' mixes each batch with rows "
                                             f"of the previous one, but their {what} differ"):
            mix(images, texts)
        assert torch.equal(images, before)
    images, texts = mix(image_batch(4, seed=2), words(4, 2))  # still batch 0's rows
    torch.testing.assert_close(images[:2], 0.5 * image_batch(4, seed=2)[:2] + 0.5 * first[:2])
    assert texts[:2] == ["w2x0 w0x0", "w2x1 w0x1"]


def test_an_info_of_pairing_previous_is_not_replayed():
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True)
    mix(image_batch(4), words(4, 0))
    images, _, info = mix(image_batch(4, seed=1), words(4, 1))
    with pytest.raises(ValueError, match="an info of pairing='previous' cannot be replayed"):
        MixGen().mix(images, words(4, 1), info)
    with pytest.raises(ValueError, match="an info of pairing='previous' cannot be replayed"):
        mix(images, words(4, 1), info=MixGen(return_info=True)(images, words(4, 1))[2])
    with pytest.raises(ValueError, match="must be given as partners="):
        mix_images(images, info)
    with pytest.raises(ValueError, match="info has partner indices up to 1 but partners has 1"):
        mix_images(images, info, partners=images[:1])


def test_hugging_face_transform_and_gallery_refuse_previous():
    hf = pytest.importorskip("mixgen.hf")
    with pytest.raises(ValueError, match="BatchTransform has no pairing='previous'"):
        hf.BatchTransform(pairing="previous")
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True)
    mix(image_batch(4), words(4, 0))
    batch = (image_batch(4, seed=1), words(4, 1))
    with pytest.raises(ValueError, match="the partners are rows of an earlier batch"):
        gallery(*batch, *mix(*batch))


# ----------------------------------------------------------------------------- loss
def test_loss_targets_are_one_hot_for_partners_outside_the_batch():
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True)
    mix(image_batch(4), words(4, 0))
    info = mix(image_batch(4, seed=1), words(4, 1))[2]
    assert info.num_pairs == 2 and torch.equal(affinity(info), torch.eye(4))
    features = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    scale = torch.tensor(10.0)
    plain = MixGenClipLoss("onehot")(*features, scale)
    for targets in ("soft", "mask"):
        assert torch.equal(MixGenClipLoss(targets)(*features, scale, mixgen_info=info), plain)
    appended = MixGen(pairing="previous", ratio=0.5, mode="append", return_info=True)
    appended(image_batch(4), words(4, 0))
    info = appended(image_batch(4, seed=1), words(4, 1))[2]
    expected = torch.eye(6)  # only the source's own row, kept in append mode, is related
    expected[[4, 5], [0, 1]] = expected[[0, 1], [4, 5]] = 0.5
    assert torch.equal(affinity(info), expected)


# ----------------------------------------------------------------------------- workers
class Numbered(Dataset):
    """Sample i: an image of value i, caption "c{i}"."""

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), f"c{i}"


def worker_batches(seed, collate):
    torch.manual_seed(seed)
    loader = DataLoader(Numbered(), batch_size=4, shuffle=True, num_workers=2,
                        collate_fn=collate)
    return list(loader)


def test_two_workers_pair_with_their_own_previous_batch():
    """Batch t comes from worker t % 2: its partners are batch t - 2's original rows;
    the first batch of each worker passes unmixed; the same seed gives the same batches."""
    collate = MixGenCollate(pairing="previous", ratio=0.5, alpha=0.4, return_info=True,
                            generator=torch.Generator().manual_seed(1))
    collate(list(map(Numbered().__getitem__, range(4))))  # the parent's rows stay there
    batches, again = worker_batches(0, collate), worker_batches(0, collate)
    for batch, same in zip(batches, again, strict=True):
        assert torch.equal(batch[0], same[0]) and batch[1] == same[1]
    own = [[int(text.split()[0][1:]) for text in batch[1]] for batch in batches]
    for t, (images, texts, info) in enumerate(batches):
        assert info.num_pairs == (0 if t < 2 else 2)
        for k in range(info.num_pairs):
            partner = own[t - 2][k]
            assert texts[k] == f"c{own[t][k]} c{partner}"
            lam = float(info.lam[k])
            torch.testing.assert_close(images[k], torch.full((3, 2, 2), lam * own[t][k]
                                                             + (1 - lam) * partner))
    assert [b[1] for b in worker_batches(1, collate)] != [b[1] for b in batches]


def six_batches():
    """Batch t: 4 images of value t, captions "b{t}"."""
    for t in range(6):
        yield [torch.full((4, 1, 1, 1), float(t)), [f"b{t}"] * 4]


def test_webdataset_stage_in_two_workers():
    """Batch t is worker t % 2's: it pairs with batch t - 2."""
    pipeline = wds.DataPipeline(six_batches, wds.split_by_worker,
                                mixgen_wds.mixgen(pairing="previous", ratio=0.5))
    batches = list(wds.WebLoader(pipeline, batch_size=None, num_workers=2))
    assert [texts[0] for _, texts in batches] == ["b0", "b1", "b2 b0", "b3 b1", "b4 b2",
                                                  "b5 b3"]
    assert [float(images[0]) for images, _ in batches] == [0, 1, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- trainer
def test_the_trainer_flags_parse_previous_with_a_ratio_above_one_half():
    """The ``--mixgen-*`` flags, generated from the config as the trainer's are: unlike
    ``first``, ``previous`` takes partners from outside the batch, so any ratio up to 1."""
    parser = argparse.ArgumentParser()
    MixGenConfig.add_arguments(parser, prefix="mixgen-")
    args = parser.parse_args(["--mixgen-pairing", "previous", "--mixgen-ratio", "0.75"])
    config = MixGenConfig.from_namespace(args, prefix="mixgen-")
    assert (config.pairing, config.ratio, config.mode) == ("previous", 0.75, "replace")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning",
                            "ignore::ResourceWarning")
@pytest.mark.parametrize(("dataset", "pairs"), [("csv", 12), ("webdataset", 8)])
def test_open_clip_train_run_with_pairing_previous(caplog, dataset, pairs):
    """One epoch of 4 batches of 16 (4 pairs each once mixed), scored by the soft loss.
    CSV, in the main process: only the first batch passes unmixed. webdataset, two
    workers of one shard each: each worker's first batch passes, its second pairs with
    its first."""
    caplog.set_level(logging.INFO)
    flags = ("--mixgen", "--mixgen-pairing", "previous", "--mixgen-loss", "soft")
    name = f"previous-{dataset}"
    open_clip_train.main(csv_args(name, *flags) if dataset == "csv"
                         else wds_args(name, *flags))
    assert mixgen_lines(caplog) == [
        f"MixGen rank 0 epoch 0: {pairs} pairs mixed in 4 batches, 4 scored with their info"]
    assert len(weights(name)) > 0
