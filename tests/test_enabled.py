"""The ``enabled`` switch: mixing off and on, in this process and in DataLoader workers."""

import copy
import pickle

import pytest
import torch
from helpers import captions, image_batch
from torch.utils.data import DataLoader, default_collate

from mixgen import MixGen, MixGenCollate
from mixgen.batch import BatchMixer
from mixgen.config import MixGenConfig
from mixgen.hf import BatchTransform


def samples(n: int) -> list[tuple[torch.Tensor, str]]:
    images = image_batch(n)
    return [(images[i], f"caption {i}") for i in range(n)]


def test_switched_off_a_batch_passes_through_and_nothing_is_drawn():
    gen = torch.Generator().manual_seed(0)
    mix = MixGen(ratio=0.5, return_info=True, generator=gen)
    images, texts = image_batch(8), captions(8)
    assert mix.enabled
    mix.enabled = False
    state = gen.get_state()
    out_images, out_texts, info = mix(images, texts)
    assert out_images is images and out_texts is texts and info is None
    assert torch.equal(gen.get_state(), state)
    assert mix({"image": images, "text": texts, "id": list(range(8))}) == {
        "image": images, "text": texts, "id": list(range(8)), "mixgen": None}
    mix.enabled = True
    _, mixed_texts, info = mix(images, texts)
    assert info.num_pairs == 4 and mixed_texts[0] == "caption 0 caption 4"


def test_switched_back_on_it_mixes_as_if_never_off():
    images, texts = image_batch(8), captions(8)
    on = MixGen(pairing="permute", generator=torch.Generator().manual_seed(3))
    toggled = MixGen(pairing="permute", generator=torch.Generator().manual_seed(3))
    toggled.enabled = False
    toggled(images, texts)
    toggled.enabled = True
    expected, got = on(images, texts), toggled(images, texts)
    assert torch.equal(expected[0], got[0]) and expected[1] == got[1]


def test_switched_off_collate_is_default_collate():
    batch = samples(6)
    collate = MixGenCollate(ratio=0.5, return_info=True)
    collate.enabled = False
    images, texts, info = collate(batch)
    expected_images, expected_texts = default_collate(batch)
    assert torch.equal(images, expected_images) and texts == list(expected_texts)
    assert info is None
    dicts = [{"image": image, "text": text, "label": i} for i, (image, text) in enumerate(batch)]
    out = collate(dicts)
    assert torch.equal(out["image"], expected_images) and out["mixgen"] is None
    assert out["label"].tolist() == list(range(6))


def test_switched_off_previous_pairing_keeps_the_last_mixed_rows():
    mix = MixGen(pairing="previous", ratio=0.5, return_info=True)
    first, second = image_batch(4, seed=1), image_batch(4, seed=2)
    mix(first, captions(4))
    mix.enabled = False
    mix(second, [f"other {i}" for i in range(4)])
    mix.enabled = True
    _, texts, info = mix(image_batch(4, seed=3), [f"third {i}" for i in range(4)])
    assert info.num_pairs == 2 and texts[0] == "third 0 caption 0"


def test_copies_have_their_own_switch_with_the_same_value():
    collate = MixGenCollate()
    collate.enabled = False
    for clone in (pickle.loads(pickle.dumps(collate)), copy.deepcopy(collate)):
        assert clone.enabled is False
        clone.enabled = True
        assert collate.enabled is False


def test_enabled_must_be_a_bool():
    for adapter in (MixGen(), MixGenCollate(), BatchTransform(), BatchMixer(MixGenConfig())):
        with pytest.raises(TypeError, match="enabled must be a bool, got int"):
            adapter.enabled = 1
        assert adapter.enabled is True


def test_the_batch_transform_and_the_wds_stage_switch_off():
    transform = BatchTransform(ratio=0.5)
    transform.enabled = False
    batch = {"image": list(image_batch(4)), "text": captions(4)}
    assert transform(batch)["text"] == captions(4)
    wds = pytest.importorskip("mixgen.wds")
    mixer = BatchMixer(MixGenConfig(ratio=0.5))
    stage = wds.stage(mixer)
    batches = [(image_batch(4), captions(4))]
    assert next(texts for _, texts in stage(iter(batches)))[0] == "caption 0 caption 2"
    mixer.enabled = False
    assert next(texts for _, texts in stage(iter(batches))) == captions(4)


def epochs_of_infos(context: str | None) -> list[list[bool]]:
    """Two epochs over 2 persistent workers; the switch turned off between them."""
    collate = MixGenCollate(ratio=0.5, return_info=True)
    loader = DataLoader(samples(16), batch_size=4, num_workers=2, persistent_workers=True,
                        collate_fn=collate, multiprocessing_context=context)
    seen = []
    for on in (True, False, True):
        collate.enabled = on
        seen.append([info is not None for _, _, info in loader])
    return seen


def test_the_switch_reaches_persistent_forked_workers():
    assert epochs_of_infos("fork") == [[True] * 4, [False] * 4, [True] * 4]


@pytest.mark.slow
def test_the_switch_reaches_persistent_spawned_workers():
    assert epochs_of_infos("spawn") == [[True] * 4, [False] * 4, [True] * 4]
