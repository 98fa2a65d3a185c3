"""A MixGenInfo says everything a replay needs: ops, pairs, lambdas (and boxes, caption
choices); a replay reads only the info, and an inconsistent info is refused."""

import dataclasses

import pytest
import torch
from helpers import captions, image_batch, reference_mix

from mixgen import MixGen, MixGenInfo
from mixgen import functional as F


def drawn(**options):
    mix = MixGen(return_info=True, generator=torch.Generator().manual_seed(2), **options)
    images, texts = image_batch(8, shape=(3, 6, 6)), captions(8)
    return images, texts, *mix(images, texts)


@pytest.mark.parametrize("options", [{"image_op": "cutmix", "alpha": 1.0},
                                     {"image_op": "concat", "text_op": "select", "alpha": 1.0},
                                     {"pairing": "permute", "mode": "append"}])
def test_a_replay_uses_the_ops_the_info_records(options):
    images, texts, mixed, mixed_texts, info = drawn(**options)
    assert (info.image_op, info.text_op) == (options.get("image_op", "mixup"),
                                             options.get("text_op", "concat"))
    # a transform with other options replays the info as it was drawn
    replayed, replayed_texts = MixGen(image_op="mixup", text_op="concat").mix(
        images, texts, info)
    assert torch.equal(replayed, mixed) and replayed_texts == mixed_texts
    called = MixGen(return_info=True)({"image": images, "text": texts}, info=info)
    assert torch.equal(called["image"], mixed) and called["text"] == mixed_texts
    assert called["mixgen"] is info
    assert torch.equal(F.mix_images(images, info), mixed)
    with pytest.raises(ValueError, match=r"op='mixup' but info.image_op='cutmix'"):
        F.mix_images(images, drawn(image_op="cutmix")[-1], op="mixup")


@pytest.mark.parametrize("options", [
    {}, {"image_op": "cutmix", "text_op": "select", "mode": "append", "alpha": 0.5},
    {"pairing": "flip", "ratio": 1.0, "multi_caption": "pick_one", "image_op": "concat"},
    {"p": 0.0}, {"lam": 0.3}, {"lam": 0.7, "mode": "append", "num_pairs": 3}])
def test_drawn_infos_pass_the_checks_they_skip(options):
    """``draw`` makes infos without checking them again; each passes the checks."""
    info = drawn(**options)[-1]
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    checked = MixGenInfo(**fields)
    assert (checked.image_op, checked.text_op, checked.num_pairs) == (
        info.image_op, info.text_op, info.num_pairs)
    assert info.host == checked.host  # rows known when drawn equal rows read back


def test_indices_are_trusted_not_the_pairing_label():
    # labelled "first", but pairs (3, 0) and (1, 6): mixed as the indices say
    info = MixGenInfo(batch_size=8, mode="replace", pairing="first",
                      source=torch.tensor([3, 1]), partner=torch.tensor([0, 6]),
                      lam=torch.tensor([0.25, 0.5]))
    images, texts = image_batch(8), captions(8)
    expected, expected_texts = reference_mix(images, texts, info)
    mixed, mixed_texts = MixGen().mix(images, texts, info)
    torch.testing.assert_close(mixed, expected)
    assert mixed_texts == expected_texts and mixed_texts[3] == "caption 3 caption 0"


def test_ops_default_from_what_the_info_carries():
    boxes = torch.tensor([[0, 0, 2, 2]])
    keep = torch.tensor([True])
    info = MixGenInfo(batch_size=4, mode="replace", pairing="first", source=torch.tensor([0]),
                      partner=torch.tensor([1]), lam=torch.tensor([0.75]), boxes=boxes,
                      keep_source_text=keep)
    assert (info.image_op, info.text_op) == ("cutmix", "select")


def make(**changes):
    fields = {"batch_size": 4, "mode": "replace", "pairing": "first",
              "source": torch.tensor([0, 1]), "partner": torch.tensor([2, 3]),
              "lam": torch.tensor([0.5, 0.5])}
    return MixGenInfo(**{**fields, **changes})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"partner": torch.tensor([2])}, ValueError, r"info.partner must be an integer tensor "
                                                 r"of shape \[2\]"),
    ({"lam": torch.tensor([1, 0])}, ValueError, "info.lam must be a floating point tensor"),
    ({"source": [0, 1]}, TypeError, "info.source must be a 1-d tensor, got list"),
    ({"image_op": "cutmix"}, ValueError, r"info.boxes is None, but image_op='cutmix'"),
    ({"text_op": "select"}, ValueError, r"info.keep_source_text is None, but text_op"),
    ({"boxes": torch.zeros(2, 3, dtype=torch.long)}, ValueError, "info.boxes must be"),
    ({"mode": "grow"}, ValueError, "info.mode must be one of 'replace', 'append'"),
    ({"partner": torch.tensor([2, 4])}, ValueError, r"indices \[4\] outside its batch of 4"),
    ({"source": torch.tensor([1, 1])}, ValueError, "info.source repeats a row"),
    ({"lam": torch.tensor([0.5, 1.5])}, ValueError, r"info.lam must lie in \[0, 1\]"),
    ({"batch_size": 1}, ValueError, "info has 2 pairs for a batch of 1 in replace mode"),
])
def test_an_inconsistent_info_is_refused(changes, error, message):
    with pytest.raises(error, match=message):
        make(**changes)


def test_an_info_that_does_not_fit_the_batch_is_refused():
    images, texts = image_batch(6, shape=(3, 4, 4)), captions(6)
    with pytest.raises(ValueError, match="info describes a batch of 4 samples but images has 6"):
        MixGen().mix(images, texts, make())
    boxes = torch.tensor([[0, 0, 2, 2], [3, 3, 2, 2]])
    outside = make(batch_size=6, image_op="cutmix", boxes=boxes)
    with pytest.raises(ValueError, match=r"info.boxes has boxes outside the 4x4 images: "
                                         r"\[\[3, 3, 2, 2\]\]"):
        MixGen().mix(images, texts, outside)
