import pickle

import pytest
import torch
from helpers import captions, image_batch

from mixgen import MixGen, MixGenInfo


def seeded(**options):
    return MixGen(generator=torch.Generator().manual_seed(0), **options)


def test_defaults_are_the_papers():
    images, texts = image_batch(16), captions(16)
    mixed, mixed_texts = MixGen()(images, texts)
    torch.testing.assert_close(mixed[:4], 0.5 * images[:4] + 0.5 * images[4:8])
    assert torch.equal(mixed[4:], images[4:])
    assert mixed_texts[:4] == [f"caption {i} caption {i + 4}" for i in range(4)]
    assert mixed_texts[4:] == texts[4:]


def test_call_styles_return_the_same_structure():
    images, texts = image_batch(8), captions(8)
    as_args = MixGen()(images, texts)
    as_tuple = MixGen()((images, texts))
    as_list = MixGen()([images, texts])
    as_dict = MixGen()({"image": images, "text": texts, "id": torch.arange(8)})
    assert isinstance(as_args, tuple) and len(as_args) == 2
    assert isinstance(as_tuple, tuple) and isinstance(as_list, list)
    assert set(as_dict) == {"image", "text", "id"}
    for out in (as_tuple, as_list, (as_dict["image"], as_dict["text"])):
        assert torch.equal(out[0], as_args[0]) and out[1] == as_args[1]
    assert torch.equal(as_dict["id"], torch.arange(8))


def test_extra_fields_pass_through_and_grow_in_append_mode():
    images, texts = image_batch(8), captions(8)
    keys = [f"key{i}" for i in range(8)]
    out_images, out_texts, out_keys, info = MixGen(mode="append", return_info=True)(
        (images, texts, keys))
    assert out_images.shape[0] == len(out_texts) == len(out_keys) == 10
    assert out_keys[8:] == ["key0", "key1"] and info.target.tolist() == [8, 9]
    assert torch.equal(out_images[:8], images)


def test_return_info_on_dicts_and_custom_keys():
    batch = {"pixels": image_batch(8), "caption": captions(8)}
    out = MixGen(return_info=True, image_key="pixels", text_key="caption")(batch)
    assert isinstance(out["mixgen"], MixGenInfo)
    assert out["mixgen"].source.tolist() == [0, 1]
    assert out["caption"][0] == "caption 0 caption 2"


def test_out_of_place_by_default_inplace_on_request():
    images, texts = image_batch(8), captions(8)
    kept_images, kept_texts = images.clone(), list(texts)
    out, out_texts = MixGen()(images, texts)
    assert torch.equal(images, kept_images) and texts == kept_texts
    assert out.data_ptr() != images.data_ptr() and out_texts is not texts
    out, out_texts = MixGen(inplace=True)(images, texts)
    assert out is images and out_texts is texts
    assert texts[0] == "caption 0 caption 2" and not torch.equal(images, kept_images)


def test_same_seed_same_batch():
    images, texts = image_batch(32), captions(32)
    options = {"pairing": "permute", "alpha": 0.4, "ratio": 0.5, "p": 0.9}
    a = seeded(**options)(images, texts)
    b = seeded(**options)(images, texts)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_replay_saved_params():
    images, texts = image_batch(8), captions(8)
    mix = seeded(pairing="permute", ratio=1.0, return_info=True)
    out, out_texts, info = mix(images, texts)
    replayed, replayed_texts = MixGen(pairing="permute").mix(images, texts, info)
    assert torch.equal(replayed, out) and replayed_texts == out_texts


def test_small_last_batch_passes_through():
    images, texts = image_batch(3), captions(3)
    out, out_texts, info = MixGen(return_info=True)(images, texts)
    assert not info.applied and torch.equal(out, images) and out_texts == texts


def test_repr_is_readable():
    assert repr(MixGen()) == ("MixGen(lam=0.5, ratio=0.25, pairing='first', mode='replace', "
                              "p=1.0, image_op='mixup', text_op='concat', sep=' ', "
                              "inplace=False)")
    assert "alpha=0.4, num_pairs=8" in repr(MixGen(alpha=0.4, num_pairs=8))


def test_pickles_with_its_generator():
    mix = seeded(pairing="permute", ratio=1.0)
    clone = pickle.loads(pickle.dumps(mix))
    images, texts = image_batch(8), captions(8)
    assert clone(images, texts)[1] == mix(images, texts)[1]


BAD_BATCHES = [
    ((image_batch(4).numpy(), captions(4)), {}, TypeError, "images must be a torch.Tensor"),
    ((image_batch(4)[0], captions(3)), {}, ValueError, "images must have 4 dimensions"),
    ((torch.zeros(4, 3, 2, 2, dtype=torch.int64), captions(4)), {}, TypeError,
     "images must be a floating point or uint8 tensor, got torch.int64"),
    ((torch.zeros(0, 3, 2, 2), []), {}, ValueError, "images is an empty batch"),
    ((image_batch(4), captions(3)), {}, ValueError,
     "texts has 3 captions but images has 4 images"),
    ((image_batch(4), "one caption"), {}, TypeError, "texts must be a list of str"),
    ((image_batch(4), [1, 2, 3, 4]), {}, TypeError, r"texts\[0\] must be a str or a list"),
    ((image_batch(4), [["a"], [], ["c"], ["d"]]), {}, ValueError, r"texts\[1\] is an empty"),
    ((image_batch(4), captions(4)), {"num_pairs": 3}, ValueError,
     "num_pairs=3 with pairing='first' needs a batch of at least 6 samples"),
    (({"img": image_batch(4), "text": captions(4)},), {}, ValueError,
     r"the dict batch has no key 'image' \(image_key\)"),
    ((image_batch(4),), {}, TypeError, "MixGen expects"),
]


@pytest.mark.parametrize(("args", "options", "error", "message"), BAD_BATCHES)
def test_bad_batches_raise_before_modifying_anything(args, options, error, message):
    kept = [a.clone() if isinstance(a, torch.Tensor) else pickle.dumps(a) for a in args]
    with pytest.raises(error, match=message):
        MixGen(inplace=True, **options)(*args)
    for before, after in zip(kept, args, strict=True):
        if isinstance(after, torch.Tensor):
            assert torch.equal(before, after)
        else:
            assert pickle.dumps(after) == before


def test_a_cpu_generator_draws_for_images_on_any_device():
    """Parameters are drawn on the host: the same pairs whatever device the images are on."""
    _, _, on_cpu = seeded(pairing="permute", return_info=True)(image_batch(8), captions(8))
    images = torch.empty(8, 3, 2, 2, device="meta")
    out, _, on_meta = seeded(pairing="permute", return_info=True)(images, captions(8))
    assert out.device.type == "meta" and on_meta.source.device.type == "cpu"
    assert on_meta.source.tolist() == on_cpu.source.tolist()
    assert on_meta.partner.tolist() == on_cpu.partner.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_generator_on_the_device_is_refused():
    with pytest.raises(ValueError, match=r"generator is on cuda.*, but MixGen draws"):
        MixGen(generator=torch.Generator("cuda"))


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"inplace": True, "mode": "append"}, ValueError, "inplace=True cannot be combined"),
    ({"sep": 1}, TypeError, "sep must be a str"),
    ({"multi_caption": "all"}, ValueError, "multi_caption must be one of"),
    ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
    ({"ratio": 0.75}, ValueError, r"ratio must be in \[0, 0.5\] with pairing='first'"),
])
def test_bad_options(options, error, message):
    with pytest.raises(error, match=message):
        MixGen(**options)


def test_pick_one_caption_per_image():
    texts = [[f"a{i}", f"b{i}", f"c{i}"] for i in range(8)]
    out_texts, info = seeded(multi_caption="pick_one", return_info=True)(
        image_batch(8), texts)[1:]
    for t, s, p in zip(info.target.tolist(), info.source.tolist(), info.partner.tolist(),
                       strict=True):
        (joined,) = out_texts[t]
        first, second = joined.split(" ")
        assert first in texts[s] and second in texts[p]
    assert seeded()(image_batch(8), texts)[1][0] == ["a0 a2", "b0 b2", "c0 c2"]
    with pytest.raises(ValueError, match="needs parameters drawn with multi_caption"):
        MixGen(multi_caption="pick_one").mix(image_batch(8), texts, info=seeded(
            return_info=True)(image_batch(8), texts)[2])
