"""``python -m mixgen.open_clip_train``: open_clip_train itself without ``--mixgen``, and with
it, batches mixed in the loader workers, the soft/mask loss fed each batch's info, plain
checkpoints, resume, torchrun on CPU, and refusals (moved internals, bad flags)."""

import importlib
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_pairs
from PIL import Image

open_clip = pytest.importorskip("open_clip")
train_main = pytest.importorskip("open_clip_train.main")
wds = pytest.importorskip("webdataset")

train_params = pytest.importorskip("open_clip_train.params")

from open_clip.loss import ClipLoss, CoCaLoss, DistillClipLoss, SigLipLoss  # noqa: E402

from mixgen import MixGenConfig  # noqa: E402
from mixgen import open_clip_train as mixgen_train  # noqa: E402  (needs open_clip)
from mixgen.losses import MixGenClipLoss, MixGenSigLipLoss  # noqa: E402
from mixgen.open_clip_hooks import InfoFedLoss  # noqa: E402
from mixgen.train_options import TrainOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "open_clip_train.md"
NUM_PAIRS = 64
BATCH = 16
PHOTO = open_clip.tokenize(["photo"])[0, 1].item()  # one token of every caption
pytestmark = pytest.mark.filterwarnings(
    "ignore:'pin_memory' argument is set as true:UserWarning",  # open_clip's loaders on CPU
    "ignore::ResourceWarning")


def make_data(root: Path) -> None:
    """``root/data``: 64 random 32 px images with captions "a photo of thing i", as
    ``train.csv`` (open_clip's tab-separated ``filepath``/``title``, paths from ``root``)
    and as two webdataset shards ``shards/0000{0,1}.tar``."""
    rng = np.random.default_rng(0)
    data = root / "data"
    write_pairs(data, NUM_PAIRS, csv="train.csv", prefix="data/",
                caption="a photo of thing {}".format,
                image=lambda i: Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)))
    (data / "shards").mkdir()
    writers = [wds.TarWriter(str(data / "shards" / f"{s:05d}.tar")) for s in range(2)]
    for i in range(NUM_PAIRS):
        writers[i % 2].write({"__key__": f"{i:05d}", "txt": f"a photo of thing {i}",
                              "png": (data / "images" / f"{i}.png").read_bytes()})
    for writer in writers:
        writer.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip_train")
    make_data(root)
    return root


@pytest.fixture(autouse=True)
def in_workdir(workdir, monkeypatch):
    """Runs start in the data's folder, on one torch thread (several spin on a busy
    machine); open_clip_train's root log handlers are removed after each test and logger
    levels restored."""
    monkeypatch.chdir(workdir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    handlers, levels = list(logging.root.handlers), {
        name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    root_level = logging.root.level
    yield
    for handler in set(logging.root.handlers) - set(handlers):
        logging.root.removeHandler(handler)
        handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.root.setLevel(root_level)
    torch.set_num_threads(threads)


def csv_args(name: str, *extra: str, epochs: int = 1, workers: int = 0) -> list[str]:
    return ["--dataset-type", "csv", "--train-data", "data/train.csv", "--model",
            "mixgen-tiny", "--batch-size", str(BATCH), "--epochs", str(epochs), "--workers",
            str(workers), "--device", "cpu", "--seed", "0", "--lr", "1e-3", "--warmup", "1",
            "--report-to", "none", "--logs", "logs", "--name", name, *extra]


def wds_args(name: str, *extra: str, epochs: int = 1) -> list[str]:
    return [*csv_args(name, *extra, epochs=epochs, workers=2)[4:], "--dataset-type",
            "webdataset", "--train-data", "data/shards/{00000..00001}.tar",
            "--train-num-samples", str(NUM_PAIRS)]


def weights(name: str, epoch: int = 1) -> dict[str, torch.Tensor]:
    path = Path("logs", name, "checkpoints", f"epoch_{epoch}.pt")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def mixgen_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("MixGen rank")]


# ----------------------------------------------------------------------------- without
@pytest.mark.slow
def test_without_mixgen_it_is_open_clip_train_bit_for_bit():
    train_main.main(csv_args("plain", epochs=2))
    reference_rng = torch.get_rng_state()
    mixgen_train.main(csv_args("passthrough", epochs=2))
    assert torch.equal(torch.get_rng_state(), reference_rng)
    assert same(weights("passthrough", 2), weights("plain", 2))


# ----------------------------------------------------------------------------- with
@pytest.mark.slow
def test_csv_run_mixes_without_touching_order_or_init(caplog):
    """The global RNG (data order, initial weights) ends where the plain run's does:
    MixGen draws from its own generator; the weights differ because batches were mixed."""
    caplog.set_level(logging.INFO)
    train_main.main(csv_args("csv-plain", epochs=2))
    reference_rng = torch.get_rng_state()
    mixgen_train.main(csv_args("csv-mixgen", "--mixgen", "--mixgen-loss", "soft",
                               "--mixgen-pairing", "permute", "--mixgen-alpha", "0.4",
                               epochs=2))
    assert torch.equal(torch.get_rng_state(), reference_rng)
    assert not same(weights("csv-mixgen", 2), weights("csv-plain", 2))
    assert mixgen_lines(caplog) == [  # ratio 0.25 of 16: 4 pairs in each of 4 batches
        f"MixGen rank 0 epoch {e}: 16 pairs mixed in 4 batches, 4 scored with their info"
        for e in (0, 1)]


@pytest.mark.slow
def test_mixed_weight_scores_each_batch_with_its_info_and_changes_training(caplog):
    """--mixgen-mixed-weight with open_clip's targets: MixGenClipLoss("onehot") is fed
    every batch's info, and down-weighting the mixed rows changes the weights trained."""
    caplog.set_level(logging.INFO)
    mixgen_train.main(csv_args("weight-1", "--mixgen", epochs=1))
    mixgen_train.main(csv_args("weight-half", "--mixgen", "--mixgen-mixed-weight", "0.5",
                               epochs=1))
    assert mixgen_lines(caplog) == [
        "MixGen rank 0 epoch 0: 16 pairs mixed in 4 batches",
        "MixGen rank 0 epoch 0: 16 pairs mixed in 4 batches, 4 scored with their info"]
    assert not same(weights("weight-half", 1), weights("weight-1", 1))


@pytest.mark.slow
def test_webdataset_run_with_persistent_workers_and_off_epoch(caplog):
    """Two persistent workers see the switch turn off at epoch 1. (open_clip's webdataset
    sample shuffle is seeded from the clock, so two runs never share an order; that the
    batches are mixed as their info says is checked on the loader below.)"""
    caplog.set_level(logging.INFO)
    train_main.main(wds_args("wds-plain", epochs=2))
    mixgen_train.main(wds_args("wds-mixgen", "--mixgen", "--mixgen-loss", "mask",
                               "--mixgen-off-epoch", "1", epochs=2))
    assert not same(weights("wds-mixgen", 2), weights("wds-plain", 2))
    assert mixgen_lines(caplog) == [
        "MixGen rank 0 epoch 0: 16 pairs mixed in 4 batches, 4 scored with their info",
        "MixGen rank 0 epoch 1: 0 pairs mixed in 4 batches, 0 scored with their info"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["csv", "webdataset"])
def test_worker_batches_are_mixed_as_their_info_says(dataset):
    """Two workers; each batch's info reaches the caller with that batch: its target rows
    hold two captions ("photo" twice), every other row one."""
    argv = (csv_args("unused", workers=2) if dataset == "csv" else wds_args("unused"))
    args = train_params.parse_args(argv)
    args.rank, args.world_size, args.distributed = 0, 1, False
    _, preprocess, _ = open_clip.create_model_and_transforms("mixgen-tiny")
    training = mixgen_train.MixGenTraining(TrainOptions(MixGenConfig(pairing="permute"),
                                                        loss="soft"))
    get_data = training.get_data(train_main.get_data)
    data = get_data(args, (preprocess, preprocess), epoch=0,
                    tokenizer=open_clip.get_tokenizer("mixgen-tiny"))
    loader = data["train"].dataloader
    assert loader.num_batches == NUM_PAIRS // BATCH
    seen = []
    for images, texts in loader:
        info = training.infos.take()
        photos = (texts == PHOTO).sum(dim=1)
        expected = torch.ones(BATCH, dtype=torch.long)
        expected[info.target] = 2
        assert images.shape == (BATCH, 3, 32, 32) and torch.equal(photos, expected)
        seen.append(info.source)
    assert len(seen) == 4 and not all(torch.equal(seen[0], s) for s in seen[1:])


@pytest.mark.slow
def test_killed_run_resumes_and_checkpoints_load_in_open_clip(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    argv = csv_args("resumed", "--mixgen", "--mixgen-loss", "soft", epochs=2, workers=2)
    original = train_main.train_one_epoch

    def killed_in_epoch_1(model, data, loss, epoch, *args, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(model, data, loss, epoch, *args, **kwargs)

    monkeypatch.setattr(train_main, "train_one_epoch", killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        mixgen_train.main(argv)
    monkeypatch.setattr(train_main, "train_one_epoch", original)
    assert not Path("logs/resumed/checkpoints/epoch_2.pt").exists()
    mixgen_train.main([*argv, "--resume", "latest"])
    assert "=> resuming checkpoint 'logs/resumed/checkpoints/epoch_1.pt' (epoch 1)" in (
        caplog.text)
    assert mixgen_lines(caplog)[-1] == ("MixGen rank 0 epoch 1: 16 pairs mixed in 4 batches, "
                                        "4 scored with their info")
    checkpoint = torch.load("logs/resumed/checkpoints/epoch_2.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and not same(checkpoint["state_dict"], weights("resumed"))
    model, _, _ = open_clip.create_model_and_transforms(
        "mixgen-tiny", pretrained="logs/resumed/checkpoints/epoch_2.pt")
    assert same(model.state_dict(), checkpoint["state_dict"])


# ----------------------------------------------------------------------------- the guide
def shell_commands(markdown: str) -> list[str]:
    """The shell commands of the ```bash blocks of a Markdown text, one line each."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    return [block.replace("\\\n", " ").strip() for block in blocks]


def test_the_readme_command_is_one_the_guide_runs():
    """The README's trainer command is one of docs/open_clip_train.md's, which the test
    below runs as written."""
    section = (ROOT / "README.md").read_text().split("## Training with open_clip\n")[1]
    readme = shell_commands(section.split("\n## ")[0])
    assert len(readme) == 1 and readme[0] in shell_commands(GUIDE.read_text())


def expected_lines(argv: list[str], ranks: int) -> list[str]:
    """The MixGen log lines of a run: one per rank and epoch (open_clip's default ratio)."""
    def flag(name, default=None):
        return argv[argv.index(name) + 1] if name in argv else default

    batch, epochs = int(flag("--batch-size")), int(flag("--epochs"))
    off_epoch = int(flag("--mixgen-off-epoch", epochs))
    batches = NUM_PAIRS // (batch * ranks)
    pairs = int(float(flag("--mixgen-ratio", 0.25)) * batch)
    scored = flag("--mixgen-loss", "clip") != "clip"
    return sorted(
        f"MixGen rank {rank} epoch {e}: {pairs * batches * (e < off_epoch)} pairs mixed in "
        f"{batches} batches" + (f", {batches * (e < off_epoch)} scored with their info"
                                if scored else "")
        for rank in range(ranks) for e in range(epochs))


@pytest.mark.slow
@pytest.mark.parametrize("command", shell_commands(GUIDE.read_text()))
def test_guide_training_command_as_written(workdir, caplog, command):
    """Each command of docs/open_clip_train.md runs as written on the tiny data set,
    in-process for ``python -m``, and as two CPU processes for ``torchrun`` (run as
    ``python -m torch.distributed.run``, which is what ``torchrun`` is): every rank mixes
    every batch and its loss scores each batch with that batch's info."""
    caplog.set_level(logging.INFO)
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        assert argv[1:4] == ["--nproc_per_node", "2", "-m"], command
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:]],
                             cwd=workdir, capture_output=True, text=True, timeout=300,
                             env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
        lines, ranks = sorted(set(re.findall(r"MixGen rank .*", run.stderr))), 2
    else:
        assert argv[:3] == ["python", "-m", "mixgen.open_clip_train"], command
        mixgen_train.main(argv[3:])
        lines, ranks = sorted(mixgen_lines(caplog)), 1
    assert lines == expected_lines(argv, ranks)
    epochs = argv[argv.index("--epochs") + 1]
    assert Path("logs", argv[argv.index("--name") + 1], "checkpoints",
                f"epoch_{epochs}.pt").exists()


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("move", ["signature", "missing", "loader"])
def test_moved_internals_are_refused_before_training(monkeypatch, move):
    if move == "signature":
        monkeypatch.setattr(train_main, "get_data", lambda args, preprocess: {})
    elif move == "missing":
        monkeypatch.delattr(train_main, "create_loss")
    else:  # a training loader of a kind MixGen cannot reach into
        original = train_main.get_data

        def get_data(args, preprocess_fns, epoch=0, tokenizer=None):
            data = original(args, preprocess_fns, epoch=epoch, tokenizer=tokenizer)
            data["train"].dataloader = list(data["train"].dataloader)
            return data

        monkeypatch.setattr(train_main, "get_data", get_data)
    with pytest.raises(SystemExit, match=r"works with open_clip_torch 3\.3\.0; this is "
                                         r"open_clip_torch \S+\. Install a supported"):
        mixgen_train.main(csv_args(f"moved-{move}", "--mixgen", "--mixgen-loss", "soft"))
    assert not Path(f"logs/moved-{move}/checkpoints/epoch_1.pt").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--mixgen", "--mixgen-ratio", "0.7"], "--mixgen: ratio must be in [0, 0.5] with "
                                            "pairing='first', got 0.7"),
    (["--mixgen", "--mixgen-lam", "1.5"], "--mixgen: lam must be in [0, 1], got 1.5"),
    (["--mixgen", "--mixgen-ratio", "0.2", "--mixgen-num-pairs", "2"],
     "--mixgen: give either ratio or num_pairs, not both"),
    (["--mixgen", "--mixgen-pairing", "nearest"], "--mixgen: pairing must be one of 'first'"),
    (["--mixgen-ratio", "0.5"], "--mixgen-ratio needs --mixgen"),
    (["--mixgen", "--mixgen-off-epoch", "-1"],
     "--mixgen: off_epoch (--mixgen-off-epoch) must be an int >= 0, got -1"),
    (["--mixgen", "--mixgen-loss", "soft", "--accum-freq", "2"],
     "--mixgen-loss soft needs --accum-freq 1"),
    (["--mixgen", "--mixgen-mixed-weight", "0.5", "--accum-freq", "2"],
     "--mixgen-mixed-weight 0.5 needs --accum-freq 1"),
    (["--mixgen", "--mixgen-mixed-weight", "0"],
     "--mixgen: mixed_weight (--mixgen-mixed-weight) must be a finite float > 0, got 0.0"),
    (["--mixgen-mixed-weight", "0.5"], "--mixgen-mixed-weight needs --mixgen"),
])
def test_bad_flags_are_refused_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        mixgen_train.main(csv_args("bad", *flags))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m mixgen.open_clip_train: error: ") and message in error


@pytest.mark.slow
def test_siglip_run_is_scored_by_mixgen_siglip_loss_with_each_batch_info(monkeypatch, caplog):
    """--siglip with --mixgen-loss soft: the loss open_clip_train trains with is
    MixGenSigLipLoss fed every batch's info; the model keeps its logit bias, and the
    soft targets train other weights than open_clip's SigLipLoss."""
    caplog.set_level(logging.INFO)
    mixgen_train.main(csv_args("siglip-plain", "--siglip", "--mixgen"))
    losses = []
    original = train_main.train_one_epoch

    def recording(model, data, loss, epoch, *args, **kwargs):
        losses.append(loss)
        return original(model, data, loss, epoch, *args, **kwargs)

    monkeypatch.setattr(train_main, "train_one_epoch", recording)
    mixgen_train.main(csv_args("siglip-soft", "--siglip", "--mixgen", "--mixgen-loss", "soft",
                               "--mixgen-mixed-weight", "0.5"))
    (loss,) = losses
    assert isinstance(loss, InfoFedLoss)
    assert isinstance(loss.loss, MixGenSigLipLoss)
    assert (loss.loss.targets, loss.loss.mixed_weight) == ("soft", 0.5)
    assert loss.infos.scored == 4
    assert mixgen_lines(caplog) == [
        "MixGen rank 0 epoch 0: 16 pairs mixed in 4 batches",
        "MixGen rank 0 epoch 0: 16 pairs mixed in 4 batches, 4 scored with their info"]
    trained = weights("siglip-soft")
    assert "logit_bias" in trained  # a SigLIP model
    assert not same(trained, weights("siglip-plain"))


def test_the_hook_builds_the_mixgen_loss_of_the_runs_family():
    """create_loss keeps open_clip's options and gives the run's targets and weight."""
    training = mixgen_train.MixGenTraining(TrainOptions(loss="mask", mixed_weight=0.5))
    siglip = training.create_loss(lambda args: SigLipLoss(rank=1, world_size=2,
                                                          dist_impl="shift"))(None)
    assert type(siglip.loss) is MixGenSigLipLoss and siglip.infos is training.infos
    assert (siglip.loss.targets, siglip.loss.mixed_weight, siglip.loss.rank,
            siglip.loss.world_size, siglip.loss.dist_impl) == ("mask", 0.5, 1, 2, "shift")
    clip = training.create_loss(lambda args: ClipLoss(local_loss=True, rank=1,
                                                      world_size=2))(None)
    assert type(clip.loss) is MixGenClipLoss
    assert (clip.loss.targets, clip.loss.local_loss, clip.loss.rank) == ("mask", True, 1)


@pytest.mark.parametrize(("options", "flag"), [
    (TrainOptions(loss="soft"), "--mixgen-loss soft"),
    (TrainOptions(mixed_weight=0.5), "--mixgen-mixed-weight 0.5")])
@pytest.mark.parametrize("loss", [CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=1.0),
                                  DistillClipLoss()], ids=["coca", "distill"])
def test_mixgen_loss_refuses_coca_and_distillation(options, flag, loss):
    create_loss = mixgen_train.MixGenTraining(options).create_loss(lambda args: loss)
    with pytest.raises(ValueError, match=re.escape(
            f"{flag} needs open_clip's ClipLoss or SigLipLoss (--siglip), which "
            f"MixGenClipLoss and MixGenSigLipLoss replace, but this run uses "
            f"{type(loss).__name__}: train CoCa models and distillation with --mixgen-loss "
            f"clip and --mixgen-mixed-weight 1")):
        create_loss(None)


def test_without_open_clip_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "mixgen.open_clip_train")
    with pytest.raises(ImportError, match=r"needs open_clip_train: pip install 'mixgen\[train\]'"):
        importlib.import_module("mixgen.open_clip_train")


def test_model_configs_are_registered_by_name():
    assert {"mixgen-tiny", "mixgen-small"} <= set(open_clip.list_models())
    assert open_clip.get_model_config("mixgen-small")["vision_cfg"]["image_size"] == 64
