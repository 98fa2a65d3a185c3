"""Properties that hold for every option, checked with hypothesis."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixgen import MixGen

OPTIONS = st.fixed_dictionaries({
    "pairing": st.sampled_from(["first", "permute", "roll", "flip"]),
    "mode": st.sampled_from(["replace", "append"]),
    "image_op": st.sampled_from(["mixup", "cutmix", "concat"]),
    "text_op": st.sampled_from(["concat", "select"]),
    "alpha": st.one_of(st.none(), st.floats(0.1, 2.0)),
    "lam": st.floats(0.0, 1.0),
    "fraction": st.floats(0.0, 1.0),
})


@st.composite
def batches(draw):
    size = draw(st.integers(1, 9))
    shape = draw(st.sampled_from([(3, 4, 4), (1, 3, 5), (2, 3, 4, 4)]))
    dtype = draw(st.sampled_from([torch.float32, torch.uint8]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    images = (torch.randint(0, 256, (size, *shape), generator=gen, dtype=torch.uint8)
              if dtype == torch.uint8 else torch.rand((size, *shape), generator=gen))
    return images, [f"c{i}" for i in range(size)]


def build(options, **overrides):
    options = {**options, **overrides}
    limit = 0.5 if options["pairing"] == "first" else 1.0
    options["ratio"] = options.pop("fraction") * limit
    return MixGen(return_info=True, generator=torch.Generator().manual_seed(0), **options)


@settings(max_examples=150, deadline=None)
@given(batch=batches(), options=OPTIONS)
def test_invariants(batch, options):
    images, texts = batch
    kept_images, kept_texts = images.clone(), list(texts)
    out, out_texts, info = build(options)(images, texts)
    # nothing the caller passed is modified
    assert torch.equal(images, kept_images) and texts == kept_texts
    # shape and dtype kept; the batch grows by M only in append mode
    assert out.dtype == images.dtype and out.shape[1:] == images.shape[1:]
    assert out.shape[0] == len(out_texts) == info.output_size
    # rows that are not targets are untouched
    targets = set(info.target.tolist())
    for row in range(images.shape[0]):
        if row not in targets:
            assert torch.equal(out[row], images[row]) and out_texts[row] == texts[row]
    # no self pairs; the caption of each target comes from its own pair
    for t, s, p, keep in zip(info.target.tolist(), info.source.tolist(),
                             info.partner.tolist(),
                             (info.keep_source_text if info.keep_source_text is not None
                              else info.source >= 0).tolist(), strict=True):
        assert s != p
        if options["text_op"] == "concat":
            assert out_texts[t] == f"{texts[s]} {texts[p]}"
        else:
            assert out_texts[t] == (texts[s] if keep else texts[p])


@settings(max_examples=60, deadline=None)
@given(batch=batches(), options=OPTIONS)
def test_lambda_one_is_identity_of_the_source(batch, options):
    images, texts = batch
    options = {**options, "image_op": "mixup", "alpha": None}
    out, _, info = build(options, lam=1.0)(images, texts)
    for t, s in zip(info.target.tolist(), info.source.tolist(), strict=True):
        assert torch.equal(out[t], images[s])
