"""``MixGenConfig``: every option of MixGen in one frozen dataclass, checked once.

The allowed values of each option are declared here and nowhere else; command-line flags
are generated from the fields (:meth:`MixGenConfig.add_arguments`), so a script that
exposes MixGen's options writes none of them by hand::

    parser = argparse.ArgumentParser()
    MixGenConfig.add_arguments(parser.add_argument_group("MixGen"), prefix="mixgen-")
    args = parser.parse_args(["--mixgen-ratio", "0.5", "--mixgen-pairing", "permute"])
    config = MixGenConfig.from_namespace(args, prefix="mixgen-")
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixgen.tokens import TOKEN_FIELDS

PAIRINGS = ("first", "permute", "roll", "flip", "previous")
MODES = ("replace", "append")
IMAGE_OPS = ("mixup", "cutmix", "concat")
TEXT_OPS = ("concat", "select")
MULTI_CAPTIONS = ("by_position", "pick_one")
LOSS_TARGETS = ("onehot", "soft", "mask")
"""The contrastive targets of :class:`mixgen.losses.MixGenClipLoss` and
:class:`mixgen.losses.MixGenSigLipLoss`."""
DEFAULT_RATIO = 0.25


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None, *,
            flag: bool = True) -> Any:
    """A field with its help text and allowed values; ``flag``: exposed on command lines."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


@dataclass(frozen=True)
class MixGenConfig:
    """Every option of MixGen; each field's help is in :func:`dataclasses.fields` metadata.

    The defaults are the paper's: ``lam = 0.5``, the first quarter of the batch replaced by
    mixes of sample ``i`` with sample ``i + B/4``, on every batch. Construction raises
    ``ValueError``/``TypeError`` naming the first bad option. ``dataclasses.replace``
    gives a changed copy (checked again).

    Command lines: :meth:`add_arguments` adds one flag per augmentation option (``--lam``,
    ``--ratio``, ``--image-op``, ...; with ``prefix="mixgen-"``: ``--mixgen-lam``, ...),
    with the field's default, type, allowed values and help; :meth:`from_namespace`
    builds the config from the parsed namespace. The plumbing fields (``inplace``,
    ``return_info``, ``image_key``, ``text_key``) belong to the code calling MixGen and
    get no flag.

    Args:
        lam: the source image's weight (the partner gets ``1 - lam``).
        alpha: if set, one lambda per pair drawn from ``Beta(alpha, alpha)``.
        ratio: the fraction of the batch that becomes new pairs, rounded down (0.25 when
            neither ``ratio`` nor ``num_pairs`` is given).
        num_pairs: an absolute number of pairs instead of ``ratio``.
        pairing: ``first``, ``permute``, ``roll``, ``flip`` or ``previous``.
        mode: ``replace`` keeps the batch size; ``append`` adds the new pairs.
        p: the probability of mixing a batch at all.
        image_op: ``mixup``, ``cutmix`` or ``concat``.
        text_op: ``concat`` (join with ``sep``) or ``select``.
        sep: the separator of joined captions.
        multi_caption: ``by_position`` or ``pick_one``, for several captions per image.
        inplace: write into the caller's tensor and list.
        return_info: also return the :class:`~mixgen.MixGenInfo`.
        image_key, text_key: where a dict batch keeps its images and captions.

    Example:
        >>> from mixgen import MixGenConfig
        >>> config = MixGenConfig(ratio=0.5, pairing="permute")
        >>> config.lam, config.mode
        (0.5, 'replace')
        >>> MixGenConfig(lam=2.0)
        Traceback (most recent call last):
        ...
        ValueError: lam must be in [0, 1], got 2.0
    """

    lam: float = _option(0.5, "the source image's weight when alpha is None")
    alpha: float | None = _option(None, "draw one lambda per pair from Beta(alpha, alpha)")
    ratio: float | None = _option(
        None, "fraction of the batch that becomes new pairs, rounded down (0.25 when neither "
        "ratio nor num_pairs is given; at most 0.5 with pairing 'first')")
    num_pairs: int | None = _option(None, "an absolute number of pairs instead of ratio")
    pairing: str = _option(
        "first", "first: i with i + M; permute: a random cycle, no self-pairs; roll: i with "
        "i - 1; flip: i with B - 1 - i; previous: i with the original row i of the previous "
        "batch this transform, collate function or stage saw (per DataLoader worker), so "
        "the partner's own pair is not in the batch; the first batch passes unmixed",
        PAIRINGS)
    mode: str = _option("replace", "replace keeps the batch size (the paper); append adds "
                        "the M new pairs", MODES)
    p: float = _option(1.0, "probability of mixing a batch at all")
    image_op: str = _option("mixup", "mixup (interpolate), cutmix (a box of area 1 - lam "
                            "from the partner) or concat (side by side)", IMAGE_OPS)
    text_op: str = _option("concat", "concat (join with sep) or select (the caption of the "
                           "larger weight)", TEXT_OPS)
    sep: str = _option(" ", "the separator of joined captions")
    multi_caption: str = _option("by_position", "with several captions per image: join "
                                 "caption k with caption k, or one picked of each",
                                 MULTI_CAPTIONS)
    inplace: bool = _option(False, "write into the caller's tensor and list", flag=False)
    return_info: bool = _option(False, "also return the MixGenInfo", flag=False)
    image_key: str = _option("image", "where a dict batch keeps its images", flag=False)
    text_key: str = _option(
        "text", "where a dict batch keeps its captions; 'input_ids' (or a batch without this "
        "key that has input_ids) is transformers' flat layout: input_ids with the "
        "attention_mask and token_type_ids beside it, mixed together", flag=False)

    def __post_init__(self) -> None:
        for name in ("pairing", "mode", "image_op", "text_op", "multi_caption"):
            check_choice(name, getattr(self, name), _choices(name))
        check_unit_interval("lam", self.lam)
        check_unit_interval("p", self.p)
        if self.alpha is not None:
            if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
                raise TypeError(f"alpha must be a positive float or None, "
                                f"got {type(self.alpha).__name__}")
            if not self.alpha > 0 or math.isinf(self.alpha):
                raise ValueError(f"alpha must be a positive finite float or None, "
                                 f"got {self.alpha}")
        if self.ratio is not None and self.num_pairs is not None:
            raise ValueError("give either ratio or num_pairs, not both "
                             f"(got ratio={self.ratio}, num_pairs={self.num_pairs})")
        if self.ratio is not None:
            check_unit_interval("ratio", self.ratio)
            limit = 0.5 if self.pairing == "first" else 1.0
            if self.ratio > limit:
                raise ValueError(
                    f"ratio must be in [0, {limit}] with pairing={self.pairing!r}, got "
                    f"{self.ratio}" + (": 'first' pairs sample i with i + M, so at most half "
                                       "the batch" if self.pairing == "first" else ""))
        if self.num_pairs is not None:
            if isinstance(self.num_pairs, bool) or not isinstance(self.num_pairs, int):
                raise TypeError(f"num_pairs must be an int or None, "
                                f"got {type(self.num_pairs).__name__}")
            if self.num_pairs < 0:
                raise ValueError(f"num_pairs must be >= 0, got {self.num_pairs}")
        for name in ("sep", "image_key", "text_key"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(self, name)).__name__}")
        if self.text_key in TOKEN_FIELDS[1:]:
            raise ValueError(f"text_key={self.text_key!r} names a field that goes with "
                             f"input_ids: text_key='input_ids' selects the flat token layout, "
                             f"mixed with its {list(TOKEN_FIELDS[1:])}")
        if self.image_key in (self.text_key, *TOKEN_FIELDS):
            raise ValueError(f"image_key={self.image_key!r} must differ from text_key and "
                             f"from the token fields {list(TOKEN_FIELDS)}")
        for name in ("inplace", "return_info"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        check_inplace_mode(self.inplace, self.mode)

    # ------------------------------------------------------------------ building
    @classmethod
    def resolve(cls, config: MixGenConfig | None = None,
                options: Mapping[str, Any] | None = None) -> MixGenConfig:
        """The config of an adapter called with a config, keyword options, or both (the
        options then replace the config's fields)."""
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be a MixGenConfig, got {type(config).__name__}")
        unknown = sorted(set(options or ()) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown MixGen options {unknown}; the options are "
                            f"{[f.name for f in dataclasses.fields(cls)]}")
        if config is None:
            return cls(**(options or {}))
        return dataclasses.replace(config, **options) if options else config

    @classmethod
    def flag_fields(cls) -> tuple[str, ...]:
        """The fields that command lines expose (the augmentation options)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["flag"])

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      prefix: str = "", fields: Iterable[str] | None = None) -> None:
        """Add ``--{prefix}{field}`` (underscores as dashes) for each flag field, or for
        ``fields``, to an ``argparse`` parser or argument group: the field's default, type
        and help, its allowed values as the metavar. Values are checked when the config
        is built (:meth:`from_namespace`), with the same messages as everywhere."""
        hints = typing.get_type_hints(cls)
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for name in cls.flag_fields() if fields is None else fields:
            spec = by_name[name]
            value_type = next(t for t in typing.get_args(hints[name]) or (hints[name],)
                              if t is not type(None))
            choices = spec.metadata["choices"]
            kind = ({"action": argparse.BooleanOptionalAction} if value_type is bool
                    else {"type": value_type})
            if choices:  # listed here, checked by the config (one place, one message)
                kind["metavar"] = "{" + ",".join(choices) + "}"
            parser.add_argument(f"--{prefix}{name}".replace("_", "-"), default=spec.default,
                                help=spec.metadata["help"], **kind)

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace, prefix: str = "",
                       **overrides: Any) -> MixGenConfig:
        """The config of parsed flags added by :meth:`add_arguments` with ``prefix``;
        ``overrides`` set other fields (for example ``return_info=True``)."""
        values = cls.namespace_options(namespace, prefix)
        return cls(**{**values, **overrides})

    @classmethod
    def namespace_options(cls, namespace: argparse.Namespace,
                          prefix: str = "") -> dict[str, Any]:
        """The flag fields' values in a parsed namespace, as keyword options."""
        dest = prefix.replace("-", "_")
        return {name: getattr(namespace, dest + name) for name in cls.flag_fields()
                if hasattr(namespace, dest + name)}

    # ------------------------------------------------------------------ reading
    def summary(self) -> str:
        """The options that shape the mix, as in ``repr(MixGen(...))``."""
        weight = f"lam={self.lam}" if self.alpha is None else f"alpha={self.alpha}"
        size = (f"num_pairs={self.num_pairs}" if self.num_pairs is not None
                else f"ratio={DEFAULT_RATIO if self.ratio is None else self.ratio}")
        return (f"{weight}, {size}, pairing={self.pairing!r}, mode={self.mode!r}, "
                f"p={self.p}, image_op={self.image_op!r}, text_op={self.text_op!r}, "
                f"sep={self.sep!r}, inplace={self.inplace}")


def _choices(name: str) -> tuple[str, ...]:
    return next(f.metadata["choices"] for f in dataclasses.fields(MixGenConfig)
                if f.name == name)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_mixed_weight(value: object, name: str = "mixed_weight") -> None:
    """``mixed_weight`` (of the losses in :mod:`mixgen.losses`) is a finite float > 0
    (0 would leave a batch of only mixed rows with no weight at all); errors name it
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float > 0, got {type(value).__name__}")
    if not 0.0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite float > 0, got {value}")


def check_unit_interval(name: str, value: object) -> None:
    """``TypeError``/``ValueError`` naming ``name`` unless ``value`` is a float in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_inplace_mode(inplace: bool, mode: str) -> None:
    """``inplace`` writes into the caller's batch, which ``append`` mode cannot: it grows."""
    if inplace and mode == "append":
        raise ValueError("inplace=True cannot be combined with mode='append': the batch "
                         "grows, so a new tensor is returned")
