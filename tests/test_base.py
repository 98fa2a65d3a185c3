"""The pretrained base the harness makes: trained once through the trainer, cached by its
settings, reused, and the start of every run as a --pretrained checkpoint would be."""

import json
from pathlib import Path

import pytest
import torch

from mixgen_bench import clip_retrieval as harness
from mixgen_bench.base import base_checkpoint, base_folder
from mixgen_bench.options import parse_options

TINY = ["--sizes", "32", "--batch-size", "16", "--eval-size", "16", "--image-size", "16",
        "--threads", "1", "--data", "digits", "--arms", "baseline", "--seeds", "0",
        "--steps", "0"]
BASE = ["--pretrain-data", "shapes", "--pretrain-size", "32", "--pretrain-epochs", "1"]


def evaluate(out: Path, *extra: str) -> dict:
    harness.main([*TINY, "--out", str(out), *extra])
    return json.loads((out / "results.json").read_text())["runs"][0]["metrics"]


@pytest.mark.slow
def test_base_is_trained_once_cached_by_settings_and_used_like_pretrained(tmp_path):
    cache = ["--cache", str(tmp_path / "cache")]
    with_base = evaluate(tmp_path / "a", *BASE, *cache)
    (folder,) = (tmp_path / "cache").iterdir()
    checkpoint = folder / "base.pt"
    assert json.loads((folder / "settings.json").read_text())["data"] == "shapes"
    made = checkpoint.stat().st_mtime_ns
    # the same settings reuse the cached file; the base is what --pretrained loads
    assert evaluate(tmp_path / "b", *BASE, *cache) == with_base
    assert checkpoint.stat().st_mtime_ns == made
    assert evaluate(tmp_path / "c", "--pretrained", str(checkpoint)) == with_base
    assert evaluate(tmp_path / "d") != with_base  # random weights evaluate differently
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    # another setting of the base is another cache entry
    options = parse_options([*TINY, *BASE, *cache])
    options.image_size = 16
    assert base_folder(options) == folder
    options.pretrain_lr /= 2
    assert base_folder(options) != folder


def test_base_and_pretrained_together_are_refused(tmp_path):
    options = parse_options([*TINY, *BASE, "--pretrained", str(tmp_path / "x.pt")])
    with pytest.raises(ValueError, match="either --pretrained or --pretrain-data"):
        base_checkpoint(options)
