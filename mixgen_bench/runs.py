"""One run: an arm trained on one training-set size with one seed, by one call of
``python -m mixgen.open_clip_train`` (under ``torchrun`` with ``--nproc-per-node`` > 1),
then its checkpoints evaluated: at evenly spaced epochs on the validation pairs (the
run's learning curve, :mod:`mixgen_bench.selection`), and on the held-out test pairs at
the selected epoch and at the last.

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
import contextlib
import math
import os
import queue
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixgen_bench.data import ImagePairs
from mixgen_bench.errors import UsageError
from mixgen_bench.metrics import R_AT_1
from mixgen_bench.models import evaluate, load_model
from mixgen_bench.options import Arm
from mixgen_bench.selection import (
    best_point,
    eval_epochs,
    save_every,
    validation_score,
)
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
    """One arm at one training-set size with one seed, trained for ``epochs`` (0: only
    evaluated). A run of a budget ladder (``--budget auto``) carries its budget in its
    name, ``<arm>-n<size>-s<seed>-e<epochs>``, since one arm and seed train at several."""

    arm: Arm
    size: int
    seed: int
    epochs: int
    on_ladder: bool = False

    @property
    def name(self) -> str:
        name = f"{self.arm.name}-n{self.size}-s{self.seed}"
        return f"{name}-e{self.epochs}" if self.on_ladder else name

    def steps(self, options: argparse.Namespace) -> int:
        return self.epochs * steps_per_epoch(self.size, options) if self.epochs else 0


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
    epochs, steps = run.epochs, run.steps(options)
    argv = ["--train-data", str(train_csv), "--dataset-type", "csv",
            "--csv-separator", CSV_SEPARATOR, "--csv-img-key", IMAGE_KEY,
            "--csv-caption-key", CAPTION_KEY, "--model", model,
            "--force-image-size", str(options.image_size),
            "--batch-size", str(options.batch_size // options.nproc_per_node),
            "--epochs", str(epochs), "--lr", str(options.lr), "--wd", str(options.weight_decay),
            *ADAM,
            "--warmup", str(max(1, int(options.warmup * steps))), "--seed", str(run.seed),
            "--workers", str(options.workers), "--device", device_name(options),
            "--precision", options.precision, "--name", run.name,
            "--save-frequency", str(save_every(epochs, options.eval_points)
                                    if options.val_size else 0)]
    argv += ["--save-most-recent"] * options.checkpoint_every
    if options.context_length is not None:
        argv += ["--force-context-length", str(options.context_length)]
    if options.pretrained is not None and not model.startswith("local-dir:"):
        argv += ["--pretrained", str(options.pretrained.resolve())]
    argv += ["--siglip"] * options.siglip
    argv += ["--local-loss"] * options.local_loss
    argv += ["--gather-with-grad"] * options.gather_with_grad
    argv += ["--resume", "latest"] * resume
    return [*argv, *run.arm.trainer_flags(), *shlex.split(options.trainer_args)]


def device_name(options: argparse.Namespace) -> str:
    return options.device or ("cuda" if torch.cuda.is_available() else "cpu")


class GpuSets:
    """The visible GPUs in sets of ``--nproc-per-node``, one set per running training.

    With G visible GPUs (``CUDA_VISIBLE_DEVICES``, else all) there are ``G //
    nproc_per_node`` sets; a run holds one while it trains and is evaluated, and its
    trainer sees only those GPUs (``CUDA_VISIBLE_DEVICES``), so ``--jobs`` runs train on
    different GPUs. More jobs than sets wait for a free set. On the CPU every run gets
    None and the environment is left alone."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.free: queue.Queue[list[str]] = queue.Queue()
        self.visible: list[str] = []
        if not device_name(options).startswith("cuda"):
            return
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.visible = ([gpu.strip() for gpu in listed.split(",") if gpu.strip()]
                        if listed is not None else
                        [str(index) for index in range(torch.cuda.device_count())])
        per_run = options.nproc_per_node
        if len(self.visible) < per_run:
            raise UsageError(f"--nproc-per-node {per_run} needs {per_run} GPUs per run; "
                             f"{len(self.visible)} are visible")
        for start in range(0, len(self.visible) - per_run + 1, per_run):
            self.free.put(self.visible[start:start + per_run])

    @contextlib.contextmanager
    def hold(self) -> Iterator[list[str] | None]:
        """A free GPU set until the block ends (None on the CPU)."""
        if not self.visible:
            yield None
            return
        gpus = self.free.get()
        try:
            yield gpus
        finally:
            self.free.put(gpus)

    def device(self, gpus: list[str] | None, options: argparse.Namespace) -> torch.device:
        """The harness's device for evaluating on ``gpus`` (their first)."""
        if gpus is None:
            return torch.device(device_name(options))
        return torch.device("cuda", self.visible.index(gpus[0]))


def trainer_command(argv: list[str], processes: int) -> list[str]:
    """``python -m mixgen.open_clip_train ARGV``, or the same under torchrun."""
    if processes == 1:
        return [sys.executable, "-m", TRAINER, *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", TRAINER, *argv]


def train(run: Run, options: argparse.Namespace, model: str, train_csv: Path,
          gpus: list[str] | None = None) -> dict[str, Any]:
    """Train ``run`` (on ``gpus``, by their ``CUDA_VISIBLE_DEVICES`` ids, when given);
    with ``--resume``, continue it from its last checkpoint. Return
    ``{"final": checkpoint, "resumed_from": epoch, "train_seconds": s}``.

    open_clip_train writes ``epoch_latest.pt`` after every epoch (``--save-most-recent``,
    atomically, so a killed run leaves a whole one) and ``epoch_<epochs>.pt`` at the end,
    before ``epoch_latest.pt``; resuming a finished run only reloads it.
    """
    epochs = run.epochs
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
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
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
            validation: ImagePairs | None, held_out: ImagePairs,
            gpu_sets: GpuSets | None = None) -> dict[str, Any]:
    """Train ``run`` on a free GPU set of ``gpu_sets`` (if any), evaluate its learning
    curve on ``validation`` (None: no curve, the last epoch is selected) and its selected
    and last checkpoints on ``held_out``; return its record. ``--steps 0`` only evaluates
    the initial (or ``--pretrained``) model."""
    sets = gpu_sets if gpu_sets is not None else GpuSets(options)
    with sets.hold() as gpus:
        return _train_and_evaluate(run, options, model, train_csv, validation, held_out,
                                   gpus, sets.device(gpus, options))


def _train_and_evaluate(run: Run, options: argparse.Namespace, model: str, train_csv: Path,
                        validation: ImagePairs | None, held_out: ImagePairs,
                        gpus: list[str] | None, device: torch.device) -> dict[str, Any]:
    started = time.perf_counter()
    epochs, steps = run.epochs, run.steps(options)
    trained = train(run, options, model, train_csv, gpus) if steps else {
        "final": None, "resumed_from": 0, "train_seconds": 0.0}
    evaluating = time.perf_counter()

    def metrics_of(checkpoint: Path | None, pairs: ImagePairs) -> dict[str, float]:
        network, tokenizer = load_model(model, options, checkpoint, run.seed, device)
        return evaluate(network, tokenizer, pairs, device)

    folder = trained["final"].parent if trained["final"] is not None else None
    curve = []
    if folder is not None and validation is not None:
        for epoch in eval_epochs(epochs, options.eval_points):
            metrics = metrics_of(folder / f"epoch_{epoch}.pt", validation)
            curve.append({"epoch": epoch, "step": epoch * steps // epochs,
                          "val_score": validation_score(metrics),
                          **{name: metrics[name] for name in R_AT_1}})
    best_epoch = best_point(curve)["epoch"] if curve else epochs
    final = metrics_of(trained["final"], held_out)
    best = (final if best_epoch == epochs
            else metrics_of(folder / f"epoch_{best_epoch}.pt", held_out))
    selected_epoch = best_epoch if options.select == "best-val" else epochs
    checkpoint = None
    if folder is not None:
        kept = folder / f"epoch_{selected_epoch}.pt"
        for path in folder.glob("epoch_*.pt"):
            if path != kept or not options.keep_checkpoints:
                path.unlink()
        checkpoint = str(kept) if options.keep_checkpoints else None
    return {"arm": run.arm.name, "size": run.size, "seed": run.seed, "epochs": epochs,
            "steps": steps, "resumed_from": trained["resumed_from"],
            "train_seconds": trained["train_seconds"],
            "eval_seconds": time.perf_counter() - evaluating,
            "seconds": time.perf_counter() - started, "checkpoint": checkpoint,
            "select": options.select, "selected_epoch": selected_epoch,
            "best_val_epoch": best_epoch, "curve": curve,
            "metrics": best if options.select == "best-val" else final,
            "metrics_best_val": best, "metrics_final": final}
