"""Contrastive targets that know about MixGen's partial positives.

With MixGen's default the partner ``j`` of a mixed pair stays in the batch, so plain CLIP
counts the mixed image against caption ``j`` (and image ``j`` against the mixed caption)
as negatives, although they partly match. :class:`MixGenClipLoss` is open_clip's
``ClipLoss`` with targets built from the :class:`~mixgen.MixGenInfo` that
``MixGen(return_info=True)`` returns.

The targets come from an affinity matrix ``A`` of one rank's output batch, ``A[r, c]``
relating image ``r`` to caption ``c``: 1 on the diagonal (each row's own pair), and for
each pair ``k`` with source ``s``, partner ``j``, output row ``t``, image share ``lam``
of the source and caption share ``mu`` of the source (``mu = lam`` for joined captions;
1 or 0 for ``text_op="select"``):

- ``A[t, j] = 1 - lam`` and ``A[j, t] = 1 - mu``, only where row ``j`` still holds the
  original sample ``j`` (in ``replace`` mode a partner may itself be a mixed row);
- ``append`` mode keeps the source's original row as well: ``A[t, s] = lam``,
  ``A[s, t] = mu``.

Two mixed rows are never related to each other. With ``pairing="previous"`` the partner
is a row of the previous batch (``info.partner_in_batch`` is False): its pair is not in
the batch scored, so it gets no entry; in ``replace`` mode the targets are one-hot.

``targets="soft"`` normalises each row of ``A`` (image to text) and each column (text to
image) to sum to 1; with ``lam = 0.5`` in ``replace`` mode the mixed image puts 2/3 on its
own caption and 1/3 on its partner's, and the partner's image 2/3 on its own caption and
1/3 on the mixed caption.
``targets="mask"`` keeps one-hot targets and removes the off-diagonal entries with
``A > 0`` from the softmax denominators.

``mixed_weight=w`` down-weights (or up-weights) the rows that hold a mixed pair, as the
methods that *add* mixed pairs to the clean loss do (Un-Mix, m²-Mix): the loss is
``sum_i w_i * l_i / sum_i w_i`` over the batch's rows (the global rows when features are
gathered), where ``l_i`` is row ``i``'s (image -> text + text -> image) / 2 cross-entropy
with its targets, and ``w_i = w`` for a mixed row, 1 for the others. ``w = 1`` is exactly
the unweighted loss; it works with every ``targets``, in ``replace`` and ``append`` mode.

The loss needs no MixGen option: the info carries the pairs, lambdas and ops of the batch
it scores. ``A`` is built on the host from the info and copied to the features' device
without waiting for it, so the loss adds no host-device synchronisation to a step.
"""

from __future__ import annotations

import torch
from open_clip.loss import ClipLoss
from torch import Tensor
from torch.nn import functional as F

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


def target_weights(info: MixGenInfo, *, rank: int = 0, world_size: int = 1,
                   dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Affinities laid out like ``ClipLoss``'s ``(logits_per_image, logits_per_text)``
    with ``local_loss``: ``[N, world_size * N]`` each, this rank's block at columns
    ``rank * N`` onward (every rank has the same ``N``); zero against other ranks' rows."""
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    block = affinity(info, dtype=dtype)
    size = block.shape[0]
    image_rows = block.new_zeros(size, world_size * size)
    text_rows = block.new_zeros(size, world_size * size)
    image_rows[:, rank * size:(rank + 1) * size] = block
    text_rows[:, rank * size:(rank + 1) * size] = block.T
    device = device if device is not None else "cpu"
    return (image_rows.to(device, non_blocking=True), text_rows.to(device, non_blocking=True))


class MixGenClipLoss(ClipLoss):
    """open_clip's ``ClipLoss`` whose targets, and optionally whose row weights, know which
    pairs MixGen mixed.

    Args:
        targets: ``"soft"`` (partial positives get the shared share, see
            :mod:`mixgen.losses`), ``"mask"`` (partial positives left out of the
            softmax denominators) or ``"onehot"`` (``ClipLoss``'s targets).
        mixed_weight: weight of a row that holds a mixed pair in the mean over rows
            (1: every row counts the same, exactly the unweighted loss).
        **clip_loss_options: ``local_loss``, ``gather_with_grad``, ``cache_labels``,
            ``rank``, ``world_size``, ``use_horovod`` as for ``ClipLoss``.

    In distributed training each rank passes the info of its own batch, and every rank
    must produce the same number of rows (the same batch size, and in ``append`` mode
    the same number of pairs): global row indices are ``rank * N + local row``, as in
    ``ClipLoss``. Without ``local_loss`` the ranks' affinity blocks and row weights are
    all-gathered.

    Example:
        >>> import torch
        >>> from mixgen import MixGen
        >>> from mixgen.losses import MixGenClipLoss
        >>> _, _, info = MixGen(ratio=0.5, return_info=True)(torch.rand(4, 3, 2, 2), list("abcd"))
        >>> features, scale = torch.eye(4), torch.tensor(10.0)  # each pair matches itself
        >>> plain = MixGenClipLoss("onehot")(features, features, scale, mixgen_info=info)
        >>> soft = MixGenClipLoss("soft")(features, features, scale, mixgen_info=info)
        >>> round(plain.item(), 2), round(soft.item(), 2)  # soft: partners share the target
        (0.0, 3.33)
    """

    def __init__(self, targets: str = "soft", mixed_weight: float = 1.0,
                 **clip_loss_options: object) -> None:
        check_choice("targets", targets, LOSS_TARGETS)
        check_mixed_weight(mixed_weight)
        super().__init__(**clip_loss_options)
        self.targets = targets
        self.mixed_weight = float(mixed_weight)

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, output_dict: bool = False,
                mixgen_info: MixGenInfo | None = None) -> Tensor | dict[str, Tensor]:
        """The contrastive loss; with ``mixgen_info`` the targets follow ``self.targets``
        and mixed rows weigh ``self.mixed_weight``."""
        weighted = self.mixed_weight != 1.0
        if mixgen_info is None or (self.targets == "onehot" and not weighted):
            return super().forward(image_features, text_features, logit_scale,
                                   logit_bias=logit_bias, output_dict=output_dict)
        _check_info(mixgen_info, image_features.shape[0])
        local = self.world_size == 1 or self.local_loss
        if not weighted and local and not _has_partial_positives(mixgen_info):
            # only the own pairs here (other ranks' blocks are not known without a gather)
            return super().forward(image_features, text_features, logit_scale,
                                   logit_bias=logit_bias, output_dict=output_dict)
        logits_per_image, logits_per_text = self.get_logits(
            image_features, text_features, logit_scale, logit_bias=logit_bias)
        loss = self.loss_from_logits(logits_per_image, logits_per_text, mixgen_info)
        return {"contrastive_loss": loss} if output_dict else loss

    def loss_from_logits(self, logits_per_image: Tensor, logits_per_text: Tensor,
                         mixgen_info: MixGenInfo | None = None) -> Tensor:
        """The loss of logits a model computed itself, laid out like ``ClipLoss``'s
        (``[N, N]`` in one process): transformers' ``CLIPOutput.logits_per_image`` and
        ``logits_per_text``, for example. Without ``mixgen_info``, or with
        ``targets="onehot"`` and ``mixed_weight=1``, it is the plain contrastive loss."""
        labels = self.get_ground_truth(logits_per_image.device, logits_per_image.shape[0])
        weighted = self.mixed_weight != 1.0
        if mixgen_info is None or (self.targets == "onehot" and not weighted):
            return (F.cross_entropy(logits_per_image, labels)
                    + F.cross_entropy(logits_per_text, labels)) / 2
        gathered = 1 if self.local_loss else self.world_size  # rows of every rank
        _check_info(mixgen_info, logits_per_image.shape[0] // gathered, "logits_per_image")
        reduction = "none" if weighted else "mean"
        if self.targets == "soft":
            image_side, text_side = self.affinity_rows(mixgen_info, logits_per_image)
            image_loss = F.cross_entropy(logits_per_image, _normalise_rows(image_side),
                                         reduction=reduction)
            text_loss = F.cross_entropy(logits_per_text, _normalise_rows(text_side),
                                        reduction=reduction)
        else:
            if self.targets == "mask":
                image_side, text_side = self.affinity_rows(mixgen_info, logits_per_image)
                logits_per_image = _mask_partial(logits_per_image, image_side, labels)
                logits_per_text = _mask_partial(logits_per_text, text_side, labels)
            image_loss = F.cross_entropy(logits_per_image, labels, reduction=reduction)
            text_loss = F.cross_entropy(logits_per_text, labels, reduction=reduction)
        loss = (image_loss + text_loss) / 2
        if weighted:
            weights = self.row_weights(mixgen_info, logits_per_image)
            loss = (weights * loss).sum() / weights.sum()
        return loss

    def row_weights(self, info: MixGenInfo, like: Tensor) -> Tensor:
        """Each scored row's weight, in ``like``'s dtype and on its device:
        ``mixed_weight`` for a row holding a mixed pair, else 1; this rank's rows, or every
        rank's (in rank order) when features are gathered."""
        weights = torch.ones(info.output_size, dtype=like.dtype)
        if info.applied:
            weights[info.to("cpu").target] = self.mixed_weight
        weights = weights.to(like.device, non_blocking=True)
        return weights if self.world_size == 1 or self.local_loss else self._all_gather(weights)

    def affinity_rows(self, info: MixGenInfo, image_features: Tensor) -> tuple[Tensor, Tensor]:
        """Affinities laid out like this loss's ``(logits_per_image, logits_per_text)``, in
        the dtype and on the device of ``image_features`` (or of the logits)."""
        if self.world_size == 1 or self.local_loss:
            return target_weights(info, rank=self.rank, world_size=self.world_size,
                                  dtype=image_features.dtype, device=image_features.device)
        block = affinity(info, dtype=image_features.dtype, device=image_features.device)
        every_block = self._all_gather(block)
        full = torch.block_diag(*every_block.split(block.shape[0]))
        return full, full.T

    def _all_gather(self, block: Tensor) -> Tensor:
        """Every rank's block, stacked in rank order (no gradient: targets are constants)."""
        if self.use_horovod:
            import horovod.torch as hvd
            return hvd.allgather(block)
        parts = [torch.empty_like(block) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, block.contiguous())
        return torch.cat(parts)


def _check_info(info: object, rows: int, what: str = "image_features") -> None:
    """``info`` is a :class:`MixGenInfo` of a batch of ``rows`` rows (those of ``what``)."""
    if not isinstance(info, MixGenInfo):
        raise TypeError(f"mixgen_info must be a MixGenInfo or None, got {type(info).__name__}")
    if info.output_size != rows:
        raise ValueError(f"mixgen_info describes a batch of {info.output_size} rows but "
                         f"{what} has {rows}")


def _has_partial_positives(info: MixGenInfo) -> bool:
    """Whether the info's affinity has an entry off the diagonal (read on the host)."""
    return bool(affinity(info).count_nonzero() > info.output_size)


def _normalise_rows(weights: Tensor) -> Tensor:
    return weights / weights.sum(dim=1, keepdim=True)


def _mask_partial(logits: Tensor, weights: Tensor, labels: Tensor) -> Tensor:
    """``logits`` with every partial positive (``weights > 0`` off the own pair) at -inf."""
    partial = weights > 0
    partial[torch.arange(labels.numel(), device=labels.device), labels] = False
    return logits.masked_fill(partial, -torch.inf)
