"""open_clip's ``ClipLoss`` (softmax cross-entropy) with MixGen's targets: soft targets
normalised per row and per column, or partial positives masked out of the softmax."""

from __future__ import annotations

import torch
from open_clip.loss import ClipLoss
from torch import Tensor
from torch.nn import functional as F

from mixgen.info import MixGenInfo
from mixgen.losses.targets import (
    InfoTargets,
    affinity,
    has_partial_positives,
    mixed_row_weights,
)


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


class MixGenClipLoss(InfoTargets, ClipLoss):
    """open_clip's ``ClipLoss`` whose targets, and optionally whose row weights, know which
    pairs MixGen mixed.

    Args:
        targets: ``"soft"`` (partial positives get the shared share, see
            :mod:`mixgen.losses`), ``"mask"`` (partial positives left out of the
            softmax denominators) or ``"onehot"`` (``ClipLoss``'s targets).
        mixed_weight: weight of a row that holds a mixed pair in the mean over rows
            (1: every row counts the same, exactly the unweighted loss).
        **loss_options: ``local_loss``, ``gather_with_grad``, ``cache_labels``,
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

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, output_dict: bool = False,
                mixgen_info: MixGenInfo | None = None) -> Tensor | dict[str, Tensor]:
        """The contrastive loss; with ``mixgen_info`` the targets follow ``self.targets``
        and mixed rows weigh ``self.mixed_weight``."""
        # without partial positives the targets are one-hot, where this rank alone can
        # tell (other ranks' blocks are not known here without a gather)
        local = self.world_size == 1 or self.local_loss
        if not self.uses_info(mixgen_info, image_features.shape[0]) or (
                not self.weighted and local and not has_partial_positives(mixgen_info)):
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
        gathered = 1 if self.local_loss else self.world_size  # rows of every rank
        if not self.uses_info(mixgen_info, logits_per_image.shape[0] // gathered,
                              "logits_per_image"):
            return (F.cross_entropy(logits_per_image, labels)
                    + F.cross_entropy(logits_per_text, labels)) / 2
        reduction = "none" if self.weighted else "mean"
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
        if self.weighted:
            weights = self.row_weights(mixgen_info, logits_per_image)
            loss = (weights * loss).sum() / weights.sum()
        return loss

    def row_weights(self, info: MixGenInfo, like: Tensor) -> Tensor:
        """Each scored row's weight, in ``like``'s dtype and on its device:
        ``mixed_weight`` for a row holding a mixed pair, else 1; this rank's rows, or every
        rank's (in rank order) when features are gathered."""
        weights = mixed_row_weights(info, self.mixed_weight, dtype=like.dtype, device=like.device)
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


def _normalise_rows(weights: Tensor) -> Tensor:
    return weights / weights.sum(dim=1, keepdim=True)


def _mask_partial(logits: Tensor, weights: Tensor, labels: Tensor) -> Tensor:
    """``logits`` with every partial positive (``weights > 0`` off the own pair) at -inf."""
    partial = weights > 0
    partial[torch.arange(labels.numel(), device=labels.device), labels] = False
    return logits.masked_fill(partial, -torch.inf)
