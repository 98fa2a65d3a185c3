"""``inplace=True`` fails cleanly: every check that can fail runs before the first write,
so on any error the caller's tensor and list are as they were."""

import pickle

import pytest
import torch
from helpers import captions, image_batch

from mixgen import MixGen, MixGenInfo

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")


def assert_untouched(call, images, texts, error, message):
    """``call(images, texts)`` raises, and leaves both exactly as they were."""
    kept_images = images.detach().clone()
    kept_texts = pickle.dumps(texts)
    with pytest.raises(error, match=message):
        call(images, texts)
    assert torch.equal(images.detach(), kept_images)
    assert pickle.dumps(texts) == kept_texts


def test_a_tensor_that_requires_grad_is_refused_before_the_captions_are_written():
    images = image_batch(8).requires_grad_()
    assert_untouched(MixGen(inplace=True), images, captions(8), ValueError,
                     "images requires grad, and autograd forbids writing it in place")
    with torch.no_grad():  # allowed there, as an optimizer's update is
        mixed, texts = MixGen(inplace=True)(images, captions(8))
    assert mixed is images and texts[0] == "caption 0 caption 2"


def test_an_expanded_view_is_refused():
    images = image_batch(1).expand(8, -1, -1, -1)  # eight rows, one memory
    assert_untouched(MixGen(inplace=True), images, captions(8), ValueError,
                     r"images has overlapping memory \(an expanded view")


def test_an_inference_tensor_is_refused_outside_inference_mode():
    with torch.inference_mode():
        images = image_batch(8)
    texts = captions(8)
    with pytest.raises(ValueError, match="images is an inference tensor"):
        MixGen(inplace=True)(images, texts)
    assert texts == captions(8)
    with torch.inference_mode():
        mixed, _ = MixGen(inplace=True)(images, texts)
    assert mixed is images


def test_token_ids_that_break_the_layout_leave_images_and_ids_untouched():
    ids = open_clip_tokenizer.SimpleTokenizer()(captions(8), context_length=12)
    ids[0][ids[0] == 49407] = 5  # row 0 loses its end token
    assert_untouched(MixGen(inplace=True), image_batch(8), ids, ValueError,
                     "texts row 0 has no end token")


def test_a_replayed_info_that_needs_what_it_lacks_leaves_the_list_untouched():
    texts = [[f"a{i}", f"b{i}"] for i in range(8)]
    info = MixGenInfo(batch_size=8, mode="replace", pairing="first",
                      source=torch.tensor([0, 1]), partner=torch.tensor([2, 3]),
                      lam=torch.tensor([0.5, 0.5]))
    mix = MixGen(inplace=True, multi_caption="pick_one")
    assert_untouched(lambda i, t: mix.mix(i, t, info), image_batch(8), texts, ValueError,
                     "needs parameters drawn with multi_caption='pick_one'")

