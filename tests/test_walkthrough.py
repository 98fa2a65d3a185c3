"""The walkthrough "Is MixGen worth it on my data?" of mixgen_bench/README.md, run as written
on a generated folder of images and a tab-separated CSV, with a checkpoint: its command is
read from the README, and only sizes, seeds and the budget are made tiny by flags given
after it."""

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from helpers import write_pairs
from PIL import Image

from mixgen_bench import clip_retrieval as harness

README = Path(__file__).resolve().parents[1] / "mixgen_bench" / "README.md"
IMAGES = 18
TINY = ["--sizes", "8", "--val-size", "4", "--eval-size", "6", "--seeds", "0,1",
        "--epochs", "2", "--max-epochs", "4", "--batch-size", "4", "--image-size", "16"]


def walkthrough_command() -> list[str]:
    """The ``mixgen-clip-retrieval`` command of the walkthrough, as argv."""
    section = README.read_text().split("## Is MixGen worth it on my data?")[1].split("\n## ")[0]
    command = next(block for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                   if "mixgen-clip-retrieval" in block)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == "mixgen-clip-retrieval"
    return argv[1:]


def make_folder(root: Path) -> None:
    """``my-data/`` (images and captions.csv, as the walkthrough describes) and
    ``my-checkpoint.pt``, an open_clip state dict of ``mixgen-tiny`` at 16 px."""
    open_clip = pytest.importorskip("open_clip")
    write_pairs(root / "my-data", IMAGES, csv="captions.csv", name="{:04d}.jpg".format,
                image=lambda i: Image.new("RGB", (24, 20), (14 * i, 255 - 14 * i, 40 * (i % 3))),
                caption=lambda i: f"a photo of colour {i} number {i % 3}")
    torch.manual_seed(0)
    model = open_clip.create_model("mixgen-tiny", force_image_size=16)
    torch.save(model.state_dict(), root / "my-checkpoint.pt")


@pytest.mark.slow
def test_readme_walkthrough_end_to_end(tmp_path, monkeypatch, capsys):
    assert f"walkthrough, with `--pretrained`, on a generated folder of {IMAGES} images" in \
        " ".join(README.read_text().split())
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path)
    argv = walkthrough_command()
    out = tmp_path / argv[argv.index("--out") + 1]
    harness.main([*argv, *TINY, "--pretrained", "my-checkpoint.pt"])

    progress = capsys.readouterr().err
    # each arm's ladder: 2 then 4 epochs (the cap) on seed 0, then seed 1 at its budget
    assert "2 runs to train, 2 at a time; the budget ladders add" in progress
    assert "[6/6] " in progress
    assert "; all done in " in progress and "initialized randomly" not in progress
    results = json.loads((out / "results.json").read_text())
    assert [(run["arm"], run["seed"]) for run in results["runs"]] == [
        ("baseline", 0), ("mixgen", 0), ("baseline", 1), ("mixgen", 1)]
    assert results["held_out_pairs"] == 6 and results["skipped"] == []
    budget = results["budgets"]["8"]["mixgen"]["chosen_epochs"]
    command = (out / "logs" / f"mixgen-n8-s1-e{budget}" / "command.txt").read_text()
    assert f"--pretrained {tmp_path / 'my-checkpoint.pt'}" in command
    table = (out / "results.md").read_text()
    assert "no confidence intervals: they need at least 3 seeds" in table
    assert results["select"] == "best-val" and results["validation_pairs"] == 4
    assert "Checkpoints: best validation score (mean of i2t and t2i R@1 on 4 validation " \
        "pairs); selected epochs, per seed: baseline " in table
    assert "| mixgen | 2 (" in table and "Budgets chosen on validation data" in table
    assert "At the last epoch instead: mixgen - baseline i2t_R@1 " in table
    assert "i2t_R@1: " in table and "not enough seeds to tell (give at least 3)." in table
    with Image.open(out / "results.png") as plot:
        assert plot.size == (1000, 700)
