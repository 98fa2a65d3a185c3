"""A pretrained base to fine-tune from, made here: no weights can be downloaded.

``--pretrain-data shapes`` (or ``digits``) trains the harness's model once on
``--pretrain-size`` procedural pairs for ``--pretrain-epochs`` epochs, through
``mixgen.open_clip_train`` with open_clip's plain ``ClipLoss`` and no MixGen (also for
``--siglip`` runs, which then start from a CLIP checkpoint, its logit bias 0), and keeps
the final checkpoint in ``--cache``, in a folder named by a hash of every setting that
shapes it. Later calls with the same settings reuse it, so a study pays for its base once;
every run then starts from it as from a ``--pretrained`` checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from mixgen_bench.errors import UsageError
from mixgen_bench.models import prepare_model
from mixgen_bench.options import Arm
from mixgen_bench.runs import Run, train
from mixgen_bench.sources import load_data, write_training_data

SHARED_SETTINGS = ("model", "image_size", "context_length", "text_tower", "batch_size",
                   "weight_decay", "warmup", "precision", "data_seed")
"""Harness options the base is trained with, as the runs that start from it are."""
BASE_FILE = "base.pt"


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/mixgen_bench``, else ``~/.cache/mixgen_bench``."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "mixgen_bench"


def base_settings(options: argparse.Namespace) -> dict:
    """Every setting that changes the base's weights (its cache key)."""
    settings = {name: getattr(options, name) for name in SHARED_SETTINGS}
    settings.update(data=options.pretrain_data, size=options.pretrain_size,
                    epochs=options.pretrain_epochs, lr=options.pretrain_lr,
                    seed=options.pretrain_seed)
    return settings


def base_folder(options: argparse.Namespace) -> Path:
    """The cache folder of these options' base: ``base-<hash of its settings>``."""
    settings = json.dumps(base_settings(options), sort_keys=True)
    key = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return (options.cache or default_cache()).resolve() / f"base-{key}"


def base_checkpoint(options: argparse.Namespace) -> Path:
    """The cached base of these options' settings, trained first if it is not cached."""
    if options.pretrained is not None:
        raise UsageError("give either --pretrained or --pretrain-data, not both")
    folder = base_folder(options)
    final = folder / BASE_FILE
    if final.exists():
        return final
    base = argparse.Namespace(**{
        **vars(options), "data": options.pretrain_data, "eval_json": None, "eval_size": 1,
        "epochs": options.pretrain_epochs, "steps": None, "lr": options.pretrain_lr,
        "out": folder, "resume": True, "checkpoint_every": 1, "pretrained": None,
        "val_size": 0, "select": "final", "siglip": False})
    pairs, _, _ = load_data(base, options.pretrain_size)
    table = write_training_data(pairs, [options.pretrain_size], folder / "data")
    trained = train(Run(Arm("base"), options.pretrain_size, options.pretrain_seed,
                        options.pretrain_epochs), base,
                    prepare_model(base, folder / "model"), table[options.pretrain_size])
    os.replace(trained["final"], final)
    (folder / "settings.json").write_text(json.dumps(base_settings(options), indent=1) + "\n")
    shutil.rmtree(folder / "data")
    return final
