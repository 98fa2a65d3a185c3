"""Bad input to the command-line tools (``mixgen-clip-retrieval``, ``python -m
mixgen.open_clip_train``) ends in one line on stderr and exit status 2, with no traceback;
anything else keeps its traceback. Only the undecodable image trains (one step)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_pairs

from mixgen import open_clip_train
from mixgen_bench import clip_retrieval as harness
from mixgen_bench import sources

TINY = ["--sizes", "8", "--epochs", "1", "--batch-size", "4", "--eval-size", "4",
        "--image-size", "16", "--seeds", "0"]


def harness_error(capsys, *argv: str) -> str:
    """The one line ``mixgen-clip-retrieval`` ends with, after checking status 2."""
    with pytest.raises(SystemExit) as stop:
        harness.main([*TINY, *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder with ``pairs.csv`` (tab-separated filepath/title) of 12 images
    in ``images/``; the CSV's paths are relative to its folder."""
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 12)
    return tmp_path


def test_missing_csv(folder, capsys):
    assert harness_error(capsys, "--data", "csv:missing.csv") == (
        "mixgen-clip-retrieval: error: --data csv:missing.csv: no such file")


def test_missing_image_folder(folder, capsys):
    (folder / "images" / "3.png").rename(folder / "3.png")
    assert harness_error(capsys, "--data", "csv:pairs.csv") == (
        "mixgen-clip-retrieval: error: --data csv:pairs.csv, line 5: image 'images/3.png' not "
        "found "
        "(looked for images/3.png; relative paths are taken from the CSV's folder)")


def test_missing_shards(folder, capsys):
    assert harness_error(capsys, "--data", "wds:shards/{0..1}.tar") == (
        "mixgen-clip-retrieval: error: --data wds:shards/{0..1}.tar: no such file shards/0.tar")


def test_csv_without_the_named_columns(folder, capsys):
    (folder / "comma.csv").write_text("filepath,title\nimages/0.png,red\n")
    assert harness_error(capsys, "--data", "csv:comma.csv") == (
        "mixgen-clip-retrieval: error: --data csv:comma.csv has no column 'filepath' "
        "(--csv-img-key); its columns are ['filepath,title']; it looks separated by ',', not '\\t' "
        "(--csv-separator)")
    assert harness_error(capsys, "--data", "csv:pairs.csv", "--csv-caption-key", "text") == (
        "mixgen-clip-retrieval: error: --data csv:pairs.csv has no column 'text' "
        "(--csv-caption-key); its columns are ['filepath', 'title']")


def test_fewer_pairs_than_the_sizes_and_evaluation_need(folder, capsys):
    assert harness_error(capsys, "--data", "csv:pairs.csv", "--sizes", "8,10") == (
        "mixgen-clip-retrieval: error: --data csv:pairs.csv holds 12 pairs: too few for 10 "
        "training pairs (the largest of --sizes), 4 for validation (--val-size) and 4 held "
        "out (--eval-size)")


def test_images_that_do_not_decode_are_skipped_and_counted(folder, capsys):
    (folder / "images" / "5.png").write_bytes(b"not an image")
    assert harness_error(capsys, "--data", "csv:pairs.csv") == (
        "mixgen-clip-retrieval: error: --data csv:pairs.csv holds 11 pairs (1 more skipped: "
        "their image does not decode): too few for 8 training pairs (the largest of --sizes), "
        "4 for validation (--val-size) and 4 held out (--eval-size)")
    options = harness.parse_options([*TINY, "--data", "csv:pairs.csv", "--eval-size", "3",
                                     "--val-size", "0"])
    train, _, held_out = sources.load_data(options, 8)
    assert train.skipped == ["pairs.csv, line 7: images/5.png (not an image)"]
    assert train.captions == [f"red level {i}" for i in (0, 1, 2, 3, 4, 6, 7, 8)]
    assert held_out.captions == [f"red level {i}" for i in (9, 10, 11)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--ratio", "2"], "arm 'mixgen': ratio must be in [0, 1], got 2.0"),
    (["--ratio", "0.75"], "arm 'mixgen': ratio must be in [0, 0.5] with pairing='first', got "
                          "0.75: 'first' pairs sample i with i + M, so at most half the batch"),
    (["--pairing", "random"], "arm 'mixgen': pairing must be one of 'first', 'permute', "
                              "'roll', 'flip', 'previous'; got 'random'"),
    (["--mixgen-off-epoch", "-1"], "arm 'mixgen': off_epoch (--mixgen-off-epoch) must be an "
                                   "int >= 0, got -1"),
    (["--val-size", "0"], "--select best-val needs validation pairs: give --val-size > 0, or "
                          "--select final"),
    (["--eval-points", "0"], "--val-size must be >= 0 and --eval-points >= 1, got 4 and 0"),
    (["--max-epochs", "0"], "--max-epochs 0 must be >= the first rung's 1 epochs (>= 1)"),
    (["--budget-tol", "-0.5"], "--budget-tol must be >= 0, got -0.5"),
    (["--val-size", "0", "--select", "final"], "--budget auto chooses budgets on validation "
                                                "pairs: give --val-size > 0, or --budget fixed"),
    (["--mixed-weight", "0"], "arm 'mixgen': mixed_weight (--mixgen-mixed-weight) must be a "
                             "finite float > 0, got 0.0"),
])
def test_mixgen_option_out_of_range(tmp_path, capsys, argv, message):
    assert harness_error(capsys, "--out", str(tmp_path), *argv) == (
        f"mixgen-clip-retrieval: error: {message}")
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_unknown_arm(tmp_path, capsys):
    assert harness_error(capsys, "--arms", "baseline,nope") == (
        "mixgen-clip-retrieval: error: --arms: unknown arm 'nope'; defined: baseline, mixgen "
        "(more in a --config file)")
    assert harness_error(capsys, "--reference", "base") == (
        "mixgen-clip-retrieval: error: --reference: unknown arm 'base'; defined: baseline, "
        "mixgen (more in a --config file)")
    config = tmp_path / "arms.json"
    config.write_text(json.dumps({"arms": {"half": {"mixgen": {"ratio": 2}}}}))
    assert harness_error(capsys, "--config", str(config), "--arms", "half") == (
        "mixgen-clip-retrieval: error: arm 'half': ratio must be in [0, 1], got 2")


def test_pretrained_checkpoint_that_does_not_fit(tmp_path, capsys):
    checkpoint = tmp_path / "other.pt"
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(8, 3, 2, 2),
                               "extra.weight": torch.zeros(1)}}, checkpoint)
    line = harness_error(capsys, "--pretrained", str(checkpoint))
    assert line.startswith(f"mixgen-clip-retrieval: error: --pretrained {checkpoint} does "
                           f"not fit --model mixgen-tiny: 1 tensors of other shapes (first: "
                           f"visual.conv1.weight [8, 3, 2, 2] for [")
    assert "; 1 tensors the model does not have (first: extra.weight)" in line
    assert "of the model's tensors missing (first: " in line
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert harness_error(capsys, "--pretrained", str(tmp_path / "notes.pt")).startswith(
        f"mixgen-clip-retrieval: error: --pretrained {tmp_path / 'notes.pt'} is not a "
        f"checkpoint torch loads with weights_only=True (")
    assert harness_error(capsys, "--pretrained", "nope.pt") == (
        "mixgen-clip-retrieval: error: --pretrained nope.pt: no such file")


@pytest.mark.parametrize(("argv", "message"), [
    (["--sizes", "8,a"], "--sizes must be comma-separated integers, got '8,a'"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--data", "parquet:x"], "--data must be shapes, digits, csv:PATH or wds:PATTERN; got "
                              "'parquet:x'"),
    (["--model", "nope"], "--model 'nope' is not an open_clip model; known: "),
    (["--batch-size", "16"], "--batch-size 16 is larger than 8 training pairs"),
    (["--steps", "3"], "--steps 3 is not a whole number of epochs at 8 pairs (2 steps per "
                       "epoch of --batch-size 4)"),
    (["--config", "missing.json"], "--config missing.json: no such file"),
])
def test_other_bad_options(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert harness_error(capsys, *argv).startswith(f"mixgen-clip-retrieval: error: {message}")


@pytest.mark.parametrize(("text", "message"), [
    ("{'sizes': 1}", "--config {config} is not valid JSON: Expecting property name enclosed "
                     "in double quotes: line 1 column 2 (char 1)"),
    ('{"epochz": 3}', "--config {config}: unknown options ['epochz']"),
    ('{"arms": {"x": {"mixgen": null, "lr": 1}}}', "arm 'x' has unknown keys ['lr']; use "
                                                   "'mixgen' (MixGen options or null), "
                                                   "'off_epoch', 'loss_targets', 'mixed_weight'"),
])
def test_bad_config_files(tmp_path, capsys, text, message):
    config = tmp_path / "bad.json"
    config.write_text(text)
    assert harness_error(capsys, "--config", str(config)) == (
        "mixgen-clip-retrieval: error: " + message.format(config=config))


@pytest.mark.slow  # starts a trainer or harness process
def test_a_flag_the_trainer_refuses(tmp_path, capsys):
    assert harness_error(capsys, "--out", str(tmp_path), "--trainer-args=--nope") == (
        f"mixgen-clip-retrieval: error: run baseline-n8-s0-e1: the trainer refused its command "
        f"line: open_clip_train.py: error: unrecognized arguments: --nope (see "
        f"{tmp_path / 'logs' / 'baseline-n8-s0-e1' / 'command.txt'})")


def test_internal_errors_keep_their_traceback(monkeypatch):
    def broken(*_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(harness, "load_data", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        harness.main([*TINY, "--out", "unused"])


@pytest.mark.slow  # starts a trainer or harness process
def test_command_line_tool_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mixgen_bench", "--data", "csv:gone.csv"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (
        2, "mixgen-clip-retrieval: error: --data csv:gone.csv: no such file\n")
    assert not Path(tmp_path, "bench_out").exists()


# ------------------------------------------------------------ python -m mixgen.open_clip_train
def trainer_error(capsys, *argv: str, data: str = "pairs.csv") -> str:
    """The one line ``python -m mixgen.open_clip_train`` ends with, after status 2."""
    args = ["--dataset-type", "csv", "--train-data", data, "--model", "mixgen-tiny",
            "--force-image-size", "16", "--batch-size", "4", "--epochs", "1", "--workers", "0",
            "--device", "cpu", "--report-to", "none", "--logs", "logs", "--name", "run", *argv]
    with pytest.raises(SystemExit) as stop:
        open_clip_train.main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1].removeprefix("python -m mixgen.open_clip_train: error: ")


def test_trainer_missing_files(folder, capsys):
    assert trainer_error(capsys, data="missing.csv") == "--train-data missing.csv: no such file"
    (folder / "images" / "0.png").unlink()
    assert trainer_error(capsys) == (
        f"--train-data pairs.csv, line 2: image 'images/0.png' not found (open_clip_train "
        f"opens the CSV's paths from the folder it runs in, {folder})")
    assert trainer_error(capsys, "--dataset-type", "webdataset", "--train-num-samples", "8",
                         data="shards/{0..1}.tar") == (
        "--train-data shards/{0..1}.tar: no such file shards/0.tar")
    assert not (folder / "logs").exists()  # refused before open_clip_train starts


def test_trainer_csv_without_the_named_columns(folder, capsys):
    (folder / "comma.csv").write_text("filepath,title\nimages/0.png,red\n")
    assert trainer_error(capsys, data="comma.csv") == (
        "--train-data comma.csv has no column 'filepath' (--csv-img-key); its columns are "
        "['filepath,title']; it looks separated by ',', not '\\t' (--csv-separator)")
    assert trainer_error(capsys, "--val-data", "pairs.csv", "--csv-caption-key", "text") == (
        "--train-data pairs.csv has no column 'text' (--csv-caption-key); its columns are "
        "['filepath', 'title']")


def test_trainer_fewer_pairs_than_one_batch(folder, capsys):
    assert trainer_error(capsys, "--batch-size", "16") == (
        "--train-data pairs.csv holds 12 pairs: fewer than one batch of --batch-size 16, so "
        "no step would train")


@pytest.mark.slow  # starts a trainer or harness process
def test_trainer_stops_at_an_image_that_does_not_decode(folder):
    """A subprocess: open_clip_train has set up its logging by then, and torch logs at exit;
    the reason must still be the last line."""
    (folder / "images" / "5.png").write_bytes(b"not an image")
    done = subprocess.run([sys.executable, "-m", "mixgen.open_clip_train", "--dataset-type",
                           "csv", "--train-data", "pairs.csv", "--model", "mixgen-tiny",
                           "--force-image-size", "16", "--batch-size", "4", "--workers", "1",
                           "--device", "cpu", "--report-to", "none", "--name", "run"],
                          cwd=folder, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "python -m mixgen.open_clip_train: error: an image does not decode (cannot identify "
        "image file 'images/5.png'); open_clip_train's CSV loader stops at such an image: "
        "remove its row (its webdataset loader skips them)")
    assert "| INFO | Start epoch 0" in done.stderr  # stopped in training


def test_trainer_mixgen_option_out_of_range(folder, capsys):
    assert trainer_error(capsys, "--mixgen", "--mixgen-ratio", "2") == (
        "--mixgen: ratio must be in [0, 1], got 2.0")


def test_trainer_pretrained_checkpoint_that_does_not_fit(folder, capsys):
    torch.save({"visual.conv1.weight": torch.zeros(8, 3, 2, 2)}, folder / "other.pt")
    line = trainer_error(capsys, "--pretrained", "other.pt")
    assert line.startswith("--pretrained other.pt does not fit --model mixgen-tiny: 1 tensors "
                           "of other shapes (first: visual.conv1.weight [8, 3, 2, 2] for [")
    assert "of the model's tensors missing (first: " in line
    assert trainer_error(capsys, "--pretrained", "nope.pt") == "--pretrained nope.pt: no such file"
    assert trainer_error(capsys, "--pretrained", "pairs.csv").startswith(
        "--pretrained pairs.csv is not a checkpoint torch loads with weights_only=True (")
