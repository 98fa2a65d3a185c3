import pickle

import pytest
import torch
from helpers import captions, image_batch
from torch.utils.data import DataLoader, Dataset, default_collate

from mixgen import MixGen, MixGenCollate


class CaptionedImages(Dataset):
    def __init__(self, n=64, dtype=torch.uint8):
        self.images, self.texts = image_batch(n, dtype=dtype, shape=(3, 8, 8)), captions(n)

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.images[i], self.texts[i], i


@pytest.mark.parametrize("options", [
    {}, {"pairing": "permute", "ratio": 1.0, "alpha": 0.5}, {"mode": "append"},
    {"pairing": "roll", "ratio": 0.5}, {"image_op": "cutmix", "alpha": 1.0},
    {"image_op": "concat", "mode": "append"}, {"text_op": "select", "pairing": "flip"},
])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_collate_equals_default_collate_then_mixgen(options, dtype):
    data = CaptionedImages(12, dtype)
    samples = [data[i] for i in range(12)]
    images, texts, ids, info = MixGenCollate(
        return_info=True, generator=torch.Generator().manual_seed(1), **options)(samples)
    plain_images, plain_texts, _ = default_collate(samples)
    expected, expected_texts = MixGen(**options).mix(plain_images, plain_texts, info)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert texts == expected_texts
    assert ids.tolist() == [*range(12), *info.source.tolist()][:info.output_size]


def test_dict_samples_keep_their_keys():
    samples = [{"image": torch.full((3, 2, 2), float(i)), "text": f"t{i}", "id": i}
               for i in range(8)]
    out = MixGenCollate()(samples)
    assert set(out) == {"image", "text", "id"}
    assert out["text"][:2] == ["t0 t2", "t1 t3"] and out["id"].tolist() == list(range(8))
    assert out["image"][:, 0, 0, 0].tolist() == [1.0, 2.0, 2, 3, 4, 5, 6, 7]


def test_tokenizer_runs_on_the_mixed_captions():
    samples = [(torch.zeros(3, 2, 2), f"t{i}") for i in range(4)]
    _, tokens = MixGenCollate(tokenizer=lambda texts: [t.split() for t in texts])(samples)
    assert tokens == [["t0", "t1"], ["t1"], ["t2"], ["t3"]]


def test_bad_samples():
    with pytest.raises(TypeError, match="MixGenCollate has no inplace option"):
        MixGenCollate(inplace=True)
    with pytest.raises(TypeError, match="tokenizer must be callable"):
        MixGenCollate(tokenizer="clip")
    with pytest.raises(ValueError, match="images must all have one shape and dtype"):
        MixGenCollate()([(torch.zeros(3, 2, 2), "a"), (torch.zeros(3, 2, 3), "b")])
    with pytest.raises(TypeError, match=r"the image of sample 1 must be a torch\.Tensor"):
        MixGenCollate()([(torch.zeros(3, 2, 2), "a"), ([0], "b")])
    with pytest.raises(ValueError, match="samples must be a non-empty list"):
        MixGenCollate()([])


def test_pickles():
    collate = MixGenCollate(pairing="permute", generator=torch.Generator().manual_seed(3))
    clone = pickle.loads(pickle.dumps(collate))
    samples = [CaptionedImages(8)[i] for i in range(8)]
    assert clone(samples)[1] == collate(samples)[1]
    assert "pairing='permute'" in repr(collate)


def epoch_pairs(collate, seed):
    torch.manual_seed(seed)
    loader = DataLoader(CaptionedImages(64), batch_size=16, num_workers=2,
                        collate_fn=collate)
    batches = list(loader)
    return [(b[2].tolist(), b[3].source.tolist(), b[3].partner.tolist(), b[0]) for b in batches]


@pytest.mark.parametrize("generator", [None, torch.Generator().manual_seed(5)])
def test_workers_are_reproducible_and_draw_different_streams(generator):
    collate = MixGenCollate(pairing="permute", ratio=0.5, return_info=True,
                            generator=generator)
    first, again, other = (epoch_pairs(collate, 0), epoch_pairs(collate, 0),
                           epoch_pairs(collate, 1))
    for a, b in zip(first, again, strict=True):
        assert a[:3] == b[:3] and torch.equal(a[3], b[3])
    # batches 0 and 1 come from workers 0 and 1: their permutations must differ
    assert first[0][1] != first[1][1] and first[2][1] != first[3][1]
    assert [a[1] for a in first] != [a[1] for a in other]
    # every mixed row in the worker-made batch is the mix of the samples it names
    data = CaptionedImages(64)
    ids, source, partner, images = first[0]
    for s, p in zip(source, partner, strict=True):
        expected = (data.images[ids[s]].int() + data.images[ids[p]].int() + 1) // 2
        assert torch.equal(images[s].int(), expected)
