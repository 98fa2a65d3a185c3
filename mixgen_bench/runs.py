"""One run: an arm trained on one training-set size with one seed, by one call of
``python -m mixgen.open_clip_train`` (under ``torchrun`` with ``--nproc-per-node`` > 1),
then its final checkpoint evaluated on the held-out pairs.

Each run is its own process, so ``--jobs`` trains several at once and every run starts
from the same state: open_clip_train seeds the initial weights and the data order from
``--seed`` alone, and MixGen draws from its own generator, so the arms of a seed share
weights and data order and differ only by MixGen. The trainer writes into
``OUT/logs/<run>/`` (open_clip_train's ``out.log``, ``params.txt``, ``checkpoints/``; the
harness adds ``command.txt`` and ``console.txt``), the harness a record of the finished
run to ``OUT/runs/<run>.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixgen_bench.data import ImagePairs
from mixgen_bench.errors import UsageError
from mixgen_bench.models import evaluate, load_model
from mixgen_bench.options import Arm
from mixgen_bench.sources import CAPTION_KEY, CSV_SEPARATOR, IMAGE_KEY

TRAINER = "mixgen.open_clip_train"
USAGE_STATUS = 2
"""The trainer's exit status for a bad flag or file (argparse's)."""
LATEST = "epoch_latest.pt"
ADAM = ("--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6")
"""AdamW as CLIP trains ViTs; open_clip_train picks these only for model names containing
"vit" (``mixgen-tiny`` is a ViT). ``--trainer-args`` can override them."""
LOGS = "logs"
"""open_clip_train's default ``--logs`` is ``./logs``; every run starts in ``--out``. (torchrun
refuses a ``--logs`` flag after the module, so the harness never passes one.)"""


@dataclass(frozen=True)
class Run:
    """One arm at one training-set size with one seed."""

    arm: Arm
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.name}-n{self.size}-s{self.seed}"


def steps_per_epoch(size: int, options: argparse.Namespace) -> int:
    """Optimizer steps in one epoch, as open_clip_train's CSV loader makes them: batches
    of ``--batch-size / --nproc-per-node`` per process, the last partial one dropped;
    under torchrun each process gets ``ceil(size / processes)`` pairs."""
    processes = options.nproc_per_node
    if processes < 1 or options.batch_size % processes:
        raise UsageError(f"--batch-size {options.batch_size} must split evenly over "
                         f"--nproc-per-node {processes} processes")
    steps = math.ceil(size / processes) // (options.batch_size // processes)
    if steps < 1:
        raise UsageError(f"--batch-size {options.batch_size} is larger than {size} "
                         f"training pairs")
    return steps


def budget(size: int, options: argparse.Namespace) -> tuple[int, int]:
    """``(epochs, steps)`` of every run at ``size``: ``--epochs``, or ``--steps`` as the
    whole number of epochs it makes (open_clip_train counts epochs)."""
    per_epoch = steps_per_epoch(size, options)
    if options.steps is None:
        return options.epochs, options.epochs * per_epoch
    if options.steps % per_epoch:
        raise UsageError(f"--steps {options.steps} is not a whole number of epochs at {size} "
                         f"pairs ({per_epoch} steps per epoch of --batch-size "
                         f"{options.batch_size})")
    return options.steps // per_epoch, options.steps


def trainer_argv(run: Run, options: argparse.Namespace, model: str, train_csv: Path,
                 resume: bool) -> list[str]:
    """The trainer's flags for ``run``: open_clip_train's own, then the arm's MixGen flags,
    then ``--trainer-args``."""
    epochs, steps = budget(run.size, options)
    argv = ["--train-data", str(train_csv), "--dataset-type", "csv",
            "--csv-separator", CSV_SEPARATOR, "--csv-img-key", IMAGE_KEY,
            "--csv-caption-key", CAPTION_KEY, "--model", model,
            "--force-image-size", str(options.image_size),
            "--batch-size", str(options.batch_size // options.nproc_per_node),
            "--epochs", str(epochs), "--lr", str(options.lr), "--wd", str(options.weight_decay),
            *ADAM,
            "--warmup", str(max(1, int(options.warmup * steps))), "--seed", str(run.seed),
            "--workers", str(options.workers), "--device", device_name(options),
            "--precision", options.precision, "--name", run.name, "--save-frequency", "0"]
    argv += ["--save-most-recent"] * options.checkpoint_every
    if options.context_length is not None:
        argv += ["--force-context-length", str(options.context_length)]
    if options.pretrained is not None and not model.startswith("local-dir:"):
        argv += ["--pretrained", str(options.pretrained.resolve())]
    argv += ["--local-loss"] * options.local_loss
    argv += ["--gather-with-grad"] * options.gather_with_grad
    argv += ["--resume", "latest"] * resume
    return [*argv, *run.arm.trainer_flags(), *shlex.split(options.trainer_args)]


def device_name(options: argparse.Namespace) -> str:
    return options.device or ("cuda" if torch.cuda.is_available() else "cpu")


def trainer_command(argv: list[str], processes: int) -> list[str]:
    """``python -m mixgen.open_clip_train ARGV``, or the same under torchrun."""
    if processes == 1:
        return [sys.executable, "-m", TRAINER, *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", TRAINER, *argv]


def train(run: Run, options: argparse.Namespace, model: str, train_csv: Path) -> dict[str, Any]:
    """Train ``run``; with ``--resume``, continue it from its last checkpoint. Return
    ``{"final": checkpoint, "resumed_from": epoch, "train_seconds": s}``.

    open_clip_train writes ``epoch_latest.pt`` after every epoch (``--save-most-recent``,
    atomically, so a killed run leaves a whole one) and ``epoch_<epochs>.pt`` at the end,
    before ``epoch_latest.pt``; resuming a finished run only reloads it.
    """
    epochs, _ = budget(run.size, options)
    out = options.out.resolve()
    folder = out / LOGS / run.name
    if not options.resume:
        shutil.rmtree(folder, ignore_errors=True)  # open_clip_train refuses an existing run
    latest = folder / "checkpoints" / LATEST
    resumed_from = (torch.load(latest, map_location="cpu", weights_only=True, mmap=True)["epoch"]
                    if latest.exists() else 0)
    argv = trainer_argv(run, options, model, train_csv, resume=folder.exists())
    command = trainer_command(argv, options.nproc_per_node)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "command.txt").write_text(shlex.join(command) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(options.threads), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    with (folder / "console.txt").open("a") as console:
        completed = subprocess.run(command, cwd=out, env=env, stdout=console,
                                   stderr=subprocess.STDOUT, check=False)
    if completed.returncode == USAGE_STATUS:  # the trainer refused a flag: say why, in one line
        last = (folder / "console.txt").read_text().strip().splitlines()[-1:]
        raise UsageError(f"run {run.name}: the trainer refused its command line: "
                         f"{''.join(last)} (see {folder / 'command.txt'})")
    if completed.returncode != 0:
        tail = (folder / "console.txt").read_text().splitlines()[-20:]
        raise RuntimeError(f"run {run.name} failed (exit {completed.returncode}); "
                           f"{folder / 'console.txt'} ends:\n" + "\n".join(tail))
    final = folder / "checkpoints" / f"epoch_{epochs}.pt"
    if not final.exists():
        raise RuntimeError(f"run {run.name} left no checkpoint of epoch {epochs} in {folder}")
    return {"final": final, "resumed_from": resumed_from,
            "train_seconds": time.perf_counter() - started}


def run_one(run: Run, options: argparse.Namespace, model: str, train_csv: Path,
            held_out: ImagePairs) -> dict[str, Any]:
    """Train and evaluate ``run``; return its record. ``--steps 0`` only evaluates the
    initial (or ``--pretrained``) model."""
    started = time.perf_counter()
    epochs, steps = budget(run.size, options) if options.steps != 0 else (0, 0)
    trained = train(run, options, model, train_csv) if steps else {
        "final": None, "resumed_from": 0, "train_seconds": 0.0}
    device = torch.device(device_name(options))
    network, tokenizer = load_model(model, options, trained["final"], run.seed, device)
    metrics = evaluate(network, tokenizer, held_out, device)
    checkpoint = None
    if trained["final"] is not None:
        (trained["final"].parent / LATEST).unlink(missing_ok=True)
        if options.keep_checkpoints:
            checkpoint = str(trained["final"])
        else:
            trained["final"].unlink()
    return {"arm": run.arm.name, "size": run.size, "seed": run.seed, "epochs": epochs,
            "steps": steps, "resumed_from": trained["resumed_from"],
            "train_seconds": trained["train_seconds"],
            "seconds": time.perf_counter() - started, "checkpoint": checkpoint,
            "metrics": metrics}
