"""An open_clip-style CSV data set (``filepath,title``), read by open_clip's own CsvDataset,
which tokenizes each caption, batched by a DataLoader with MixGenCollate in 2 workers."""

import pytest
import torch
from helpers import write_pairs
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from mixgen import MixGen, MixGenCollate

open_clip_data = pytest.importorskip("open_clip_train.data")
open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")


@pytest.fixture
def csv_file(tmp_path):
    """Twelve 6x6 images of value 20 * i, titled "a photo number i", at absolute paths in
    a comma-separated CSV."""
    return write_pairs(tmp_path, 12, csv="train.csv", images="", sep=",",
                       prefix=f"{tmp_path}/", caption="a photo number {}".format,
                       image=lambda i: Image.new("RGB", (6, 6), (20 * i,) * 3))


def test_dataloader_with_mixgen_collate_over_open_clip_csv_dataset(csv_file):
    tokenizer = open_clip_tokenizer.SimpleTokenizer()
    dataset = open_clip_data.CsvDataset(str(csv_file), T.PILToTensor(), img_key="filepath",
                                        caption_key="title", sep=",", tokenizer=tokenizer)
    collate = MixGenCollate(tokenizer=tokenizer, return_info=True, alpha=0.4,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=6, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2
    for start, (images, ids, info) in zip((0, 6), batches, strict=True):
        assert images.dtype == torch.uint8 and images.shape == (6, 3, 6, 6)
        assert ids.shape == (6, 77) and info.num_pairs == 1
        originals = torch.stack([dataset[start + i][0] for i in range(6)])
        captions = [f"a photo number {start + i}" for i in range(6)]
        expected_images, expected_captions = MixGen().mix(originals, captions, info)
        assert torch.equal(images, expected_images)
        assert torch.equal(ids, tokenizer(expected_captions))
    assert not torch.equal(batches[0][2].lam, batches[1][2].lam)  # workers draw apart
