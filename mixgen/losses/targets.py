"""What both loss families take from the info: the affinity of a batch's rows, the weight
of each row, and the checked choice of targets and mixed weight (:class:`InfoTargets`)."""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
from torch import Tensor

from mixgen.config import LOSS_TARGETS, check_choice, check_mixed_weight
from mixgen.info import MixGenInfo


def affinity(info: MixGenInfo, *, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> Tensor:
    """``[N, N]`` affinity ``A`` of one output batch (``N = info.output_size``): image
    row ``r`` against caption row ``c``; 1 on the diagonal, the shared share on partial
    positives, 0 for negatives (see :mod:`mixgen.losses`). Built on the host, then
    copied to ``device`` without waiting for it."""
    if not isinstance(info, MixGenInfo):
        raise TypeError(f"mixgen_info must be a MixGenInfo, got {type(info).__name__}")
    info = info.to("cpu")  # a host info stays as it is
    weights = torch.eye(info.output_size, dtype=dtype)
    if info.applied:
        lam = info.lam.to(dtype)
        mu = lam if info.text_op == "concat" else info.keep_source_text.to(dtype)
        target, source, partner = info.target, info.source, info.partner
        if info.mode == "append":
            weights[target, source] = lam
            weights[source, target] = mu
        if info.partner_in_batch:  # where row j still holds the original sample j
            original = (torch.ones_like(partner, dtype=torch.bool) if info.mode == "append"
                        else ~torch.isin(partner, source))
            t, j = target[original], partner[original]
            weights[t, j] = 1 - lam[original]
            weights[j, t] = 1 - mu[original]
    return weights.to(device if device is not None else "cpu", non_blocking=True)


def mixed_row_weights(info: MixGenInfo, mixed_weight: float, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """``[N]``: ``mixed_weight`` for each row of the batch that holds a mixed pair, 1 for
    the others; built on the host, then copied to ``device`` without waiting for it."""
    weights = torch.ones(info.output_size, dtype=dtype)
    if info.applied:
        weights[info.to("cpu").target] = mixed_weight
    return weights.to(device if device is not None else "cpu", non_blocking=True)


def has_partial_positives(info: MixGenInfo) -> bool:
    """Whether the info's affinity has an entry off the diagonal (read on the host)."""
    return bool(affinity(info).count_nonzero() > info.output_size)


def check_info(info: object, rows: int, what: str = "image_features") -> None:
    """``info`` is a :class:`MixGenInfo` of a batch of ``rows`` rows (those of ``what``)."""
    if not isinstance(info, MixGenInfo):
        raise TypeError(f"mixgen_info must be a MixGenInfo or None, got {type(info).__name__}")
    if info.output_size != rows:
        raise ValueError(f"mixgen_info describes a batch of {info.output_size} rows but "
                         f"{what} has {rows}")


class InfoTargets:
    """The part of a MixGen loss that both families share, placed before open_clip's loss
    class in the bases: ``targets`` and ``mixed_weight``, checked once, and whether a
    batch needs its info at all. Every other keyword goes to the open_clip loss."""

    def __init__(self, targets: str = "soft", mixed_weight: float = 1.0,
                 **loss_options: Any) -> None:
        check_choice("targets", targets, LOSS_TARGETS)
        check_mixed_weight(mixed_weight)
        super().__init__(**loss_options)
        self.targets = targets
        self.mixed_weight = float(mixed_weight)

    @property
    def weighted(self) -> bool:
        """Whether mixed rows weigh other than 1."""
        return self.mixed_weight != 1.0

    def uses_info(self, info: MixGenInfo | None, rows: int,
                  what: str = "image_features") -> TypeGuard[MixGenInfo]:
        """Whether a batch of ``rows`` rows is scored with ``info``: not without one, nor
        with one-hot targets and every row weighing 1 (then the loss is open_clip's own).
        The info is checked when it is used."""
        if info is None or (self.targets == "onehot" and not self.weighted):
            return False
        check_info(info, rows, what)
        return True
