"""open_clip_train with MixGen: ``python -m mixgen.open_clip_train [open_clip_train flags]
[--mixgen ...]``.

Every flag of open_clip_train is passed through unchanged. Without ``--mixgen`` this is
open_clip_train itself, bit for bit. With it, the training batches are mixed in the
DataLoader workers and, with ``--mixgen-loss soft`` or ``mask``, scored by
:class:`~mixgen.losses.MixGenClipLoss` (:class:`~mixgen.losses.MixGenSigLipLoss` with
``--siglip``) with the info of exactly that batch; checkpoints
stay plain open_clip checkpoints.

MixGen reaches into open_clip_train only through the attributes named in :data:`HOOKS`,
checked against the installed version before training starts. Importing this module
registers the model configs ``mixgen-tiny`` and ``mixgen-small`` with open_clip
(:func:`register_model_configs`, which other tools call).

Bad input ends in one line on stderr and exit status 2 (argparse's): bad flags, and the
input files checked before training by :mod:`mixgen.open_clip_inputs` (:class:`InputError`,
whose readers this module exports for other tools); an image that does not decode stops
training the same way.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.nn.parallel

try:
    import open_clip
    import open_clip_train.main
    import open_clip_train.params
except ImportError as error:
    raise ImportError("mixgen.open_clip_train needs open_clip_train: "
                      "pip install 'mixgen[train]'") from error

from mixgen.open_clip_hooks import (
    CpuDistributedDataParallel,
    MixGenTraining,
    UnsupportedInternalsError,
)
from mixgen.open_clip_inputs import (
    InputError,
    check_pretrained,
    check_run_inputs,
    read_csv,
    shard_list,
    undecodable_image,
)
from mixgen.train_options import TrainOptions

__all__ = ["HOOKS", "MODEL_CONFIGS", "InputError", "check_pretrained", "main", "mixgen_parser",
           "read_csv", "register_model_configs", "shard_list"]

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"


def register_model_configs() -> None:
    """Make the model configs ``mixgen-tiny`` and ``mixgen-small`` (:data:`MODEL_CONFIGS`)
    known to open_clip by name; calling it again changes nothing."""
    open_clip.add_model_config(MODEL_CONFIGS)


register_model_configs()  # the trainer's command line takes them by name

TESTED_OPEN_CLIP = ("3.3.0",)

HOOKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (module, attribute, leading parameters it must have)
    ("open_clip_train.params", "parse_args", ("args",)),
    ("open_clip_train.main", "get_data", ("args", "preprocess_fns", "epoch", "tokenizer")),
    ("open_clip_train.main", "create_loss", ("args",)),
    ("open_clip_train.main", "train_one_epoch", ("model", "data", "loss", "epoch")),
    ("open_clip_train.data", "DataInfo", ("dataloader",)),
    ("torch.nn.parallel", "DistributedDataParallel", ("module", "device_ids")),
)
"""Every attribute of open_clip_train (and torch) that ``--mixgen`` replaces or relies on:
``get_data`` and ``create_loss`` are wrapped, ``train_one_epoch`` must unpack ``images,
texts = batch`` and call the loss once per batch, ``DataInfo.dataloader`` is replaced by
the mixing loader, ``DistributedDataParallel`` by one that also runs on CPU."""


def mixgen_parser() -> argparse.ArgumentParser:
    """The MixGen flags: ``--mixgen``, and one flag per option of
    :class:`~mixgen.train_options.TrainOptions` (generated from it, with its defaults: the
    augmentation, the loss, the mixed weight and the off epoch); every other flag goes to
    open_clip_train."""
    parser = argparse.ArgumentParser(prog="python -m mixgen.open_clip_train", add_help=False,
                                     allow_abbrev=False,
                                     description="open_clip_train with MixGen; every "
                                     "open_clip_train flag is accepted as well.")
    flags = parser.add_argument_group("MixGen")
    flags.add_argument("--mixgen", action="store_true",
                       help="mix pairs inside each training batch (off: plain open_clip_train)")
    TrainOptions.add_arguments(flags)  # --mixgen-lam, ..., --mixgen-loss, --mixgen-off-epoch
    return parser


def check_hooks() -> None:
    """Stop (``SystemExit``) unless every attribute in :data:`HOOKS` is where, and what,
    MixGen expects: never train without MixGen when it was asked for."""
    for module_name, attribute, parameters in HOOKS:
        target = getattr(importlib.import_module(module_name), attribute, None)
        found = (tuple(inspect.signature(target).parameters)[:len(parameters)]
                 if callable(target) else None)
        if found != parameters:
            _refuse(f"{module_name}.{attribute} is missing or its parameters moved "
                    f"(expected {parameters}, found {found})")


def _refuse(reason: str) -> None:
    raise SystemExit(f"mixgen.open_clip_train: {reason}. --mixgen works with open_clip_torch "
                     f"{', '.join(TESTED_OPEN_CLIP)}; this is open_clip_torch "
                     f"{open_clip.__version__}. Install a supported version, or train "
                     f"without --mixgen.")


def _check(parser: argparse.ArgumentParser, options: argparse.Namespace,
           train_args: argparse.Namespace) -> TrainOptions | None:
    """The run's :class:`TrainOptions` (None without ``--mixgen``); one-line errors for
    MixGen flags that cannot work together or with this run."""
    given = [dest for dest, value in vars(options).items()
             if dest != "mixgen" and value != parser.get_default(dest)]
    if not options.mixgen:
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --mixgen")
        return None
    try:
        train_options = TrainOptions.from_namespace(options)
    except (TypeError, ValueError) as error:
        parser.error(f"--mixgen: {error}")
    if train_options.targets is not None and train_args.accum_freq > 1:
        parser.error(f"{train_options.loss_flag} needs --accum-freq 1: with gradient "
                     f"accumulation open_clip_train scores several batches at once")
    return train_options


@contextlib.contextmanager
def _patched(replacements: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set ``module.attribute = value`` for each replacement; restore them on exit."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in replacements]
    try:
        for module, name, value in replacements:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def main(argv: list[str] | None = None) -> None:
    """Run open_clip_train with ``argv`` (default ``sys.argv[1:]``), MixGen flags included."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = mixgen_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
    options, train_argv = parser.parse_known_args(argv)
    train_args = open_clip_train.params.parse_args(train_argv)  # its errors come first
    train_options = _check(parser, options, train_args)
    try:
        check_run_inputs(train_args)
    except InputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    replacements: list[tuple[Any, str, Any]] = [
        (torch.nn.parallel, "DistributedDataParallel", CpuDistributedDataParallel)]
    if train_options is not None:
        check_hooks()
        training = MixGenTraining(train_options)
        train_main = open_clip_train.main
        replacements.append((train_main, "get_data", training.get_data(train_main.get_data)))
        if train_options.targets is not None:
            replacements.append((train_main, "create_loss",
                                 training.create_loss(train_main.create_loss)))
    with _patched(replacements):
        try:
            status = open_clip_train.main.main(train_argv)
        except UnsupportedInternalsError as error:
            _refuse(str(error))
        except OSError as error:  # PIL's errors are OSErrors
            if not undecodable_image(error):
                raise
            atexit.register(logging.disable, logging.CRITICAL)  # the reason stays last
            reason = re.sub(r"^[\w.]+: ", "", str(error).strip().splitlines()[-1])
            parser.exit(2, f"{parser.prog}: error: an image does not decode ({reason}); "
                        f"open_clip_train's CSV loader stops at such an image: remove its "
                        f"row (its webdataset loader skips them)\n")
    if status == -1:  # open_clip_train printed why (for example: the run name exists)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
