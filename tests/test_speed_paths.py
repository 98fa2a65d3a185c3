"""The fast paths give the same values as plain reference code.

- ``uint8`` mixup at lambda 0.5, eager and through the fused kernel compiled for large
  CPU tensors, against ``floor(0.5 * a + 0.5 * b + 0.5)`` in float64, for every byte pair;
- mixup pair by pair on the CPU (no gathered copies), in place too, against a loop over
  the pairs that reads only the original batch;
- the fused collate against ``default_collate`` followed by MixGen.
"""

import json
import math

import pytest
import torch
from helpers import captions, image_batch, reference_mix
from torch.utils.data import default_collate

from mixgen import MixGen, MixGenCollate
from mixgen import functional as F
from mixgen.params import sample_params
from mixgen.uint8 import FUSED_MIDPOINT, word_midpoint, word_views


def every_byte_pair(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[rows, 1, 256, 256]`` uint8 pairs covering all 65536 (a, b) combinations per row,
    ``b`` shifted by one column per row so each value sits at every byte of a word."""
    index = torch.arange(256)
    a = index.view(1, 1, 256, 1).expand(rows, 1, 256, 256)
    b = (index.view(1, 1, 1, 256) - torch.arange(rows).view(rows, 1, 1, 1)) % 256
    return (a.to(torch.uint8).contiguous(),
            b.expand(rows, 1, 256, 256).to(torch.uint8).contiguous())


def round_half_up_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.floor(0.5 * a.double() + 0.5 * b.double() + 0.5).to(torch.uint8)


def test_uint8_midpoint_eager_is_exact_for_every_byte_pair():
    a, b = every_byte_pair(2)  # 128 KiB: below the fused kernel's size
    assert torch.equal(F.blend(a, b, torch.full((2,), 0.5)), round_half_up_mean(a, b))
    assert torch.equal(F.blend(a, b, 0.5), round_half_up_mean(a, b))


@pytest.fixture
def fused_kernel(monkeypatch):
    """The compiled kernel, built once (a few seconds); skip where torch.compile fails.
    Whatever a test swaps in, the kernel is back afterwards."""
    a, b = every_byte_pair(16)
    F.blend(a, b, 0.5)
    if FUSED_MIDPOINT.kernel is None:
        pytest.skip("torch.compile cannot build the fused uint8 kernel here")
    monkeypatch.setattr(FUSED_MIDPOINT, "kernel", FUSED_MIDPOINT.kernel)
    monkeypatch.setattr(FUSED_MIDPOINT, "failed", False)
    return FUSED_MIDPOINT.kernel


@pytest.mark.parametrize("where", ["new", "into a", "into b"])
def test_fused_uint8_midpoint_is_exact_for_every_byte_pair(fused_kernel, where):
    a, b = every_byte_pair(16)  # exactly 1 MiB: the fused path
    expected = round_half_up_mean(a, b)
    calls = []

    def counting_kernel(*words):
        calls.append(len(words))
        fused_kernel(*words)

    FUSED_MIDPOINT.kernel = counting_kernel
    out = {"new": None, "into a": a, "into b": b}[where]
    mixed = F.blend(a, b, torch.full((16,), 0.5), out=out)
    assert calls == [3]
    assert torch.equal(mixed, expected)
    if out is not None:
        assert mixed is out


def test_mixgen_inplace_uint8_batch_goes_through_the_fused_kernel(fused_kernel):
    a, b = every_byte_pair(16)
    images = torch.cat([a, b])
    mixed, texts = MixGen(ratio=0.5, inplace=True)(images, captions(32))
    assert mixed is images
    assert torch.equal(mixed[:16], round_half_up_mean(a, b))
    assert torch.equal(mixed[16:], b)
    assert texts[0] == "caption 0 caption 16"


def test_a_failing_compiler_falls_back_to_the_same_bytes(fused_kernel):
    calls = []

    def broken_kernel(*words):
        calls.append(len(words))
        raise RuntimeError("no C++ compiler")

    FUSED_MIDPOINT.kernel = broken_kernel
    a, b = every_byte_pair(16)
    assert torch.equal(F.blend(a, b, 0.5), round_half_up_mean(a, b))
    assert FUSED_MIDPOINT.failed and FUSED_MIDPOINT.kernel is None
    assert torch.equal(F.blend(a, b, 0.5), round_half_up_mean(a, b))
    assert calls == [3]  # never tried again in this process


def test_the_word_formula_run_eagerly_is_exact_in_place(fused_kernel):
    # what runs when dynamo is disabled (TORCH_COMPILE_DISABLE=1)
    FUSED_MIDPOINT.kernel = word_midpoint
    a, b = every_byte_pair(16)
    expected = round_half_up_mean(a, b)
    assert torch.equal(F.blend(a, b, 0.5, out=a), expected)
    assert torch.equal(a, expected)


def test_layouts_the_kernel_cannot_view_as_words_stay_exact():
    a, b = every_byte_pair(16)
    a_cl = a.expand(16, 3, 256, 256)[:, :, :128].contiguous(memory_format=torch.channels_last)
    b_cl = b.expand(16, 3, 256, 256)[:, :, :128].contiguous(memory_format=torch.channels_last)
    assert word_views(F.new_batch_like(a_cl, 16), a_cl, b_cl) is None
    assert torch.equal(F.blend(a_cl, b_cl, 0.5), round_half_up_mean(a_cl, b_cl))
    flat = a.view(-1)
    assert word_views(flat[8:1032], flat[:1024], flat[2048:3072]) is None  # overlap


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("pairing", ["permute", "roll", "flip"])
@pytest.mark.parametrize(("mode", "inplace"),
                         [("replace", False), ("replace", True), ("append", False)])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_mixup_by_row_reads_only_the_original_batch(dtype, pairing, mode, inplace, ratio):
    images = image_batch(12, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    info = sample_params(12, (4, 5), ratio=ratio, pairing=pairing, mode=mode, alpha=0.7,
                         generator=gen)
    expected, _ = reference_mix(images, None, info)
    given = images.clone()
    mixed = F.mix_images(given, info, inplace=inplace)
    assert (mixed is given) == inplace
    if not inplace:
        assert torch.equal(given, images)
    if dtype == torch.uint8:
        assert torch.equal(mixed, expected)
    else:
        torch.testing.assert_close(mixed, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("options", [
    {}, {"pairing": "permute"}, {"pairing": "permute", "ratio": 1.0}, {"pairing": "roll"},
    {"pairing": "flip", "mode": "append"}, {"alpha": 0.4}])
def test_fused_collate_equals_default_collate_then_mixgen(dtype, options):
    images = image_batch(16, dtype=dtype)
    samples = list(zip(images, captions(16), range(16), strict=True))
    fused = MixGenCollate(generator=torch.Generator().manual_seed(5), **options)(samples)
    mix = MixGen(generator=torch.Generator().manual_seed(5), **options)
    expected = mix(default_collate(samples))
    assert fused[1] == expected[1]
    assert torch.equal(fused[2], expected[2])
    if dtype == torch.uint8:
        assert torch.equal(fused[0], expected[0])
    else:
        torch.testing.assert_close(fused[0], expected[0], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_throughput_script_runs_every_group_and_writes_its_targets(tmp_path):
    """The speed benchmark itself (one repeat, a small JPEG set): every case is timed,
    every target gets a positive ratio, and its correctness checks hold."""
    from benchmarks import throughput
    threads = torch.get_num_threads()
    try:
        throughput.main(["--repeats", "1", "--jpegs", "16", "--back-to-back",
                         "--json", str(tmp_path / "throughput.json")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "throughput.json").read_text())
    groups = {row["group"] for row in report["cases"]}
    assert {"batch B=64 float32", "batch B=256 uint8", "collate B=64", "tokens B=256",
            "DataLoader 16 JPEGs B=64 2 workers"} <= groups
    for row in report["cases"]:
        assert row["repeats"] == 1 and row["min_ms"] == row["median_ms"]
    targets = {row["target"]: row for row in report["targets"]}
    for batch in throughput.BATCHES:
        assert {f"float32 first in place / copy of the rows, B={batch}",
                f"uint8 first in place / copy of the rows, B={batch}",
                f"MixGenCollate first / default_collate, B={batch}",
                f"re-tokenize / token concat, B={batch}"} <= set(targets)
    for row in targets.values():
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
    checks = {name: row["met"] for name, row in targets.items() if row["goal"] == "== 1 (yes)"}
    assert checks == {"uint8 bit-exact vs float round-half-up": True,
                      **({"CUDA mixing without host-device sync": True}
                         if torch.cuda.is_available() else {})}
    assert report["meta"]["back_to_back"] is True
