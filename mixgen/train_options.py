"""``TrainOptions``: MixGen's options in a training run, in one frozen, checked class.

A run's options are the augmentation (a :class:`~mixgen.MixGenConfig`) and how training
uses it: the loss that scores the mixed batches, the weight of a mixed pair's row, and
the epoch from which mixing stops. ``python -m mixgen.open_clip_train`` parses them with
:meth:`TrainOptions.add_arguments` and :meth:`TrainOptions.from_namespace`; the harness
turns its arms into the same flags with :meth:`TrainOptions.to_argv`::

    parser = argparse.ArgumentParser()
    TrainOptions.add_arguments(parser)  # --mixgen-lam, ..., --mixgen-loss, --mixgen-off-epoch
    options = TrainOptions.from_namespace(parser.parse_args(["--mixgen-loss", "soft"]))
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mixgen.config import LOSS_TARGETS, MixGenConfig, check_choice, check_mixed_weight

LOSSES = ("clip", *(target for target in LOSS_TARGETS if target != "onehot"))
"""``--mixgen-loss``: ``clip``, the run's own open_clip loss (``ClipLoss``, or
``SigLipLoss`` with ``--siglip``: one-hot targets); else the targets of MixGen's loss of
the same family (:class:`~mixgen.losses.MixGenClipLoss`,
:class:`~mixgen.losses.MixGenSigLipLoss`)."""
PREFIX = "mixgen-"
"""The prefix of the trainer's MixGen flags."""
_HELP = {
    "loss": "clip: the run's open_clip loss (ClipLoss, or SigLipLoss with --siglip); soft / "
            "mask: MixGen's loss of the same family (MixGenClipLoss, MixGenSigLipLoss), which "
            "gives a mixed pair's partner a share of the target (soft) or leaves it out (mask)",
    "mixed_weight": "weight of a mixed pair's row in the loss's mean over rows (mixed_weight "
                    "of MixGenClipLoss or MixGenSigLipLoss; 1: every row the same)",
    "off_epoch": "no mixing from epoch N on (0-based, like open_clip's epochs)",
}


def flag(name: str, prefix: str = PREFIX) -> str:
    """The command-line flag of the field ``name``: ``--{prefix}{name}``, dashed."""
    return f"--{prefix}{name}".replace("_", "-")


@dataclass(frozen=True)
class TrainOptions:
    """MixGen's options in a training run; construction raises ``ValueError`` or
    ``TypeError`` naming the field and its flag.

    Args:
        config: the augmentation (``--mixgen-lam``, ``--mixgen-ratio``, ...).
        loss: ``--mixgen-loss``, one of :data:`LOSSES`: ``clip`` (the run's open_clip
            loss, ``ClipLoss`` or ``SigLipLoss``), ``soft`` or ``mask`` (the targets of
            ``MixGenClipLoss`` or ``MixGenSigLipLoss``).
        mixed_weight: ``--mixgen-mixed-weight``, the MixGen loss's weight of a row that
            holds a mixed pair (1: every row the same).
        off_epoch: ``--mixgen-off-epoch``, no mixing from this (0-based) epoch on; None:
            mixing in every epoch.

    Example:
        >>> from mixgen import MixGenConfig
        >>> from mixgen.train_options import TrainOptions
        >>> options = TrainOptions(MixGenConfig(ratio=0.5), loss="soft", off_epoch=3)
        >>> options.to_argv()
        ['--mixgen-ratio=0.5', '--mixgen-loss=soft', '--mixgen-off-epoch=3']
        >>> options.targets
        'soft'
        >>> TrainOptions(off_epoch=-1)
        Traceback (most recent call last):
        ...
        ValueError: off_epoch (--mixgen-off-epoch) must be an int >= 0, got -1
    """

    config: MixGenConfig = field(default_factory=MixGenConfig)
    loss: str = "clip"
    mixed_weight: float = 1.0
    off_epoch: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, MixGenConfig):
            raise TypeError(f"config must be a MixGenConfig, got {type(self.config).__name__}")
        check_choice(f"loss ({flag('loss')})", self.loss, LOSSES)
        check_mixed_weight(self.mixed_weight, f"mixed_weight ({flag('mixed_weight')})")
        off = self.off_epoch
        if off is not None and (isinstance(off, bool) or not isinstance(off, int) or off < 0):
            raise ValueError(f"off_epoch ({flag('off_epoch')}) must be an int >= 0, "
                             f"got {off!r}")

    @property
    def targets(self) -> str | None:
        """The MixGen loss's targets, or None for open_clip's own loss (``clip`` with
        every row weighing the same)."""
        if self.loss != "clip":
            return self.loss
        return "onehot" if self.mixed_weight != 1.0 else None

    @property
    def loss_flag(self) -> str:
        """The flag that makes the run score with a MixGen loss, as messages name it:
        ``--mixgen-loss soft``, or ``--mixgen-mixed-weight 0.5`` (one-hot targets);
        empty for open_clip's own loss."""
        if self.loss != "clip":
            return f"{flag('loss')} {self.loss}"
        return f"{flag('mixed_weight')} {self.mixed_weight}" if self.targets else ""

    def mixing(self, epoch: int) -> bool:
        """Whether batches of ``epoch`` (0-based) are mixed."""
        return self.off_epoch is None or epoch < self.off_epoch

    # ------------------------------------------------------------------ command lines
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      prefix: str = PREFIX) -> None:
        """Add ``--{prefix}{option}`` for every option of the config
        (:meth:`MixGenConfig.add_arguments`) and of this class, with their defaults; the
        values are checked when the options are built (:meth:`from_namespace`)."""
        MixGenConfig.add_arguments(parser, prefix=prefix)
        parser.add_argument(flag("loss", prefix), default="clip", help=_HELP["loss"],
                            metavar="{" + ",".join(LOSSES) + "}")
        parser.add_argument(flag("mixed_weight", prefix), type=float, default=1.0,
                            metavar="W", help=_HELP["mixed_weight"])
        parser.add_argument(flag("off_epoch", prefix), type=int, default=None, metavar="N",
                            help=_HELP["off_epoch"])

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace,
                       prefix: str = PREFIX) -> TrainOptions:
        """The options of flags parsed with :meth:`add_arguments` and ``prefix``."""
        dest = prefix.replace("-", "_")
        config = MixGenConfig.from_namespace(namespace, prefix=prefix)
        return cls(config, **{f.name: getattr(namespace, dest + f.name)
                              for f in dataclasses.fields(cls) if f.name != "config"})

    def to_argv(self, prefix: str = PREFIX) -> list[str]:
        """The flags that :meth:`from_namespace` parses back into these options: one
        ``--{prefix}{option}=value`` per option that differs from its default."""
        values: list[tuple[str, Any, Any]] = [
            (f.name, getattr(self.config, f.name), f.default)
            for f in dataclasses.fields(MixGenConfig) if f.name in MixGenConfig.flag_fields()]
        values += [(f.name, getattr(self, f.name), f.default)
                   for f in dataclasses.fields(self) if f.name != "config"]
        argv = []
        for name, value, default in values:
            if value == default:
                continue
            if isinstance(value, bool):  # argparse.BooleanOptionalAction's flags
                argv.append(flag(name, prefix if value else f"no-{prefix}"))
            else:
                argv.append(f"{flag(name, prefix)}={value}")
        return argv
