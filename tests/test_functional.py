import pytest
import torch
import torchvision.transforms.v2.functional as TF
from helpers import captions, image_batch, published_mixgen, reference_mix

from mixgen import functional as F
from mixgen.params import MixGenInfo, sample_params


def info_for(batch, **options):
    return sample_params(batch, (4, 5), generator=torch.Generator().manual_seed(7), **options)


def test_functional_mixgen_reproduces_the_paper_out_of_place():
    images, texts = image_batch(16), captions(16)
    kept_images, kept_texts = images.clone(), list(texts)
    mixed, mixed_texts = F.mixgen(images, texts)
    expected, expected_texts = published_mixgen(images.clone(), list(texts), 4)
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-6)
    assert mixed_texts == expected_texts
    assert torch.equal(images, kept_images) and texts == kept_texts


def test_functional_mixgen_other_lambda_and_count():
    images, texts = image_batch(10), captions(10)
    mixed, mixed_texts = F.mixgen(images, texts, num_pairs=5, lam=0.3)
    expected, expected_texts = published_mixgen(images.clone(), list(texts), 5, lam=0.3)
    torch.testing.assert_close(mixed, expected)
    assert mixed_texts == expected_texts
    with pytest.raises(ValueError, match=r"num_pairs must be in \[0, 5\]"):
        F.mixgen(images, texts, num_pairs=6)


@pytest.mark.parametrize("pairing", ["first", "permute", "roll", "flip"])
@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_mixup_matches_the_reference(pairing, mode, dtype):
    ratio = 1.0 if pairing != "first" else 0.5
    info = info_for(12, pairing=pairing, mode=mode, ratio=ratio, alpha=0.7)
    images, texts = image_batch(12, dtype=dtype), captions(12)
    expected, expected_texts = reference_mix(images, texts, info)
    mixed = F.mix_images(images, info)
    if dtype == torch.uint8:
        assert torch.equal(mixed, expected)
    else:
        torch.testing.assert_close(mixed, expected)
    assert F.mix_texts(texts, info) == expected_texts


def test_uint8_rounds_half_up_exactly():
    a = torch.tensor([0, 1, 254, 255, 255, 3], dtype=torch.uint8).view(6, 1, 1, 1)
    b = torch.tensor([1, 2, 255, 255, 0, 4], dtype=torch.uint8).view(6, 1, 1, 1)
    half = F.blend(a, b, torch.full((6,), 0.5))
    assert half.flatten().tolist() == [1, 2, 255, 255, 128, 4]
    quarter = F.blend(a, b, torch.full((6,), 0.25))  # 0.25*a + 0.75*b, ties go up
    assert quarter.flatten().tolist() == [1, 2, 255, 255, 64, 4]


def test_inplace_writes_into_the_callers_tensor():
    images = image_batch(8)
    expected, _ = reference_mix(images, captions(8), info_for(8))
    out = F.mix_images(images, info_for(8), inplace=True)
    assert out is images
    torch.testing.assert_close(images, expected)


def test_whole_batch_permutation_reads_only_original_rows():
    # the published whole-batch variant reads rows it already overwrote (three-way mixes)
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1) * 10
    info = info_for(6, pairing="permute", ratio=1.0)
    out = F.mix_images(images, info, inplace=True)
    expected = [(10 * s + 10 * p) / 2 for s, p in zip(info.source.tolist(),
                                                      info.partner.tolist(), strict=True)]
    assert out.flatten()[info.source].tolist() == expected


@pytest.mark.parametrize("mode", ["replace", "append"])
@pytest.mark.parametrize("pairing", ["first", "roll"])
def test_channels_last_is_kept(mode, pairing):
    images = image_batch(8, shape=(3, 6, 6)).to(memory_format=torch.channels_last)
    info = info_for(8, mode=mode, pairing=pairing)
    out = F.mix_images(images, info)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference_mix(images, captions(8), info)[0])


def test_video_clips_mix_every_frame():
    clips = image_batch(8, shape=(4, 3, 5, 5))  # [B, T, C, H, W]
    info = info_for(8)
    out = F.mix_images(clips, info)
    assert out.shape == clips.shape
    torch.testing.assert_close(out[:2], 0.5 * clips[:2] + 0.5 * clips[2:4])


def test_cutmix_pastes_the_partners_box():
    images = image_batch(8, shape=(3, 4, 5))
    info = info_for(8, image_op="cutmix", alpha=1.0, pairing="roll", ratio=1.0)
    out = F.mix_images(images, info, op="cutmix")
    for t, s, p, (top, left, h, w) in zip(info.target.tolist(), info.source.tolist(),
                                          info.partner.tolist(), info.boxes.tolist(),
                                          strict=True):
        expected = images[s].clone()
        expected[:, top:top + h, left:left + w] = images[p][:, top:top + h, left:left + w]
        assert torch.equal(out[t], expected)
    # the share of pixels taken from the source is the recorded lambda
    areas = info.boxes[:, 2] * info.boxes[:, 3]
    torch.testing.assert_close(info.lam, 1 - areas.float() / 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_concat_puts_resized_images_side_by_side(dtype):
    images = image_batch(8, shape=(3, 6, 8), dtype=dtype)
    info = info_for(8, image_op="concat")
    out = F.mix_images(images, info, op="concat")
    assert out.dtype == dtype
    for t, s, p in zip(info.target.tolist(), info.source.tolist(), info.partner.tolist(),
                       strict=True):
        assert torch.equal(out[t, :, :, :4], TF.resize(images[s], [6, 4], antialias=True))
        assert torch.equal(out[t, :, :, 4:], TF.resize(images[p], [6, 4], antialias=True))
    assert torch.equal(out[2:], images[2:])


def test_select_keeps_one_caption():
    info = info_for(8, text_op="select", alpha=1.0, ratio=0.5)
    texts = captions(8)
    out = F.mix_texts(texts, info, op="select")
    for t, s, p, keep in zip(info.target.tolist(), info.source.tolist(),
                             info.partner.tolist(), info.keep_source_text.tolist(),
                             strict=True):
        assert out[t] == (texts[s] if keep else texts[p])


def test_several_captions_by_position_and_pick_one():
    texts = [["a0", "a1"], ["b0"], ["c0", "c1", "c2"], ["d0"]]
    info = MixGenInfo(batch_size=4, mode="replace", pairing="first",
                      source=torch.tensor([0, 1]), partner=torch.tensor([2, 3]),
                      lam=torch.tensor([0.5, 0.5]),
                      caption_choice=torch.tensor([[0.9, 0.4], [0.1, 0.99]]))
    by_position = F.mix_texts(texts, info, sep="|")
    assert by_position == [["a0|c0", "a1|c1", "a0|c2"], ["b0|d0"], texts[2], texts[3]]
    picked = F.mix_texts(texts, info, multi_caption="pick_one")
    assert picked[:2] == [["a1 c1"], ["b0 d0"]]
    assert texts[0] == ["a0", "a1"]  # inner lists untouched


def test_append_rows_carry_the_sources_fields():
    info = info_for(8, mode="append")
    ids = torch.arange(8) * 10
    assert F.append_rows(ids, info).tolist() == [*range(0, 80, 10), 0, 10]
    assert F.append_rows(list("abcdefgh"), info)[-2:] == ["a", "b"]
    assert F.append_rows("not per sample", info) == "not per sample"


def test_stack_mixed_equals_stack_then_mix():
    samples = list(image_batch(10, dtype=torch.uint8))
    for options in ({}, {"pairing": "permute", "ratio": 1.0}, {"mode": "append"}):
        info = info_for(10, **options)
        out = torch.empty((info.output_size, *samples[0].shape), dtype=torch.uint8)
        F.stack_mixed(samples, info, out)
        assert torch.equal(out, F.mix_images(torch.stack(samples), info))
