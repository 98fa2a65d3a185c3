"""open_clip's ``SigLipLoss`` (a binary cross-entropy per image-caption pair) with MixGen's
targets: the affinity itself as each pair's target, or partial positives left out of the
sum."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.loss import SigLipLoss
from torch import Tensor
from torch.nn import functional as F

from mixgen.info import MixGenInfo
from mixgen.losses.targets import InfoTargets, affinity, has_partial_positives, mixed_row_weights


@dataclass(frozen=True)
class _Scoring:
    """How one batch's pairs are scored, on the logits' device and in their dtype."""

    targets: Tensor
    """``[N, N]`` each pair of this rank's block's target (1: matching, 0: not)."""
    kept: Tensor | None
    """``[N, N]`` 1 for a pair in the sum, 0 for a partial positive left out (``mask``)."""
    weights: Tensor | None
    """``[N]`` this rank's row weights; None: every row weighs 1."""
    divisor: Tensor | int
    """What the sum over pairs is divided by: ``N`` as in ``SigLipLoss``, or the rows'
    total weight per rank."""


class MixGenSigLipLoss(InfoTargets, SigLipLoss):
    """open_clip's ``SigLipLoss`` whose targets, and optionally whose row weights, know
    which pairs MixGen mixed.

    Each pair ``(i, j)`` of image ``i`` and caption ``j`` is a binary cross-entropy of
    its logit ``z = logit_scale * img_i . txt_j + logit_bias`` with a target ``t``,
    ``-(t log sigmoid(z) + (1 - t) log sigmoid(-z))``, summed over pairs and divided by
    the batch size, as ``SigLipLoss`` divides.

    Args:
        targets: ``"soft"`` (``t`` is the affinity of the pair: 1 for its own caption,
            the shared share for a partial positive, see :mod:`mixgen.losses`),
            ``"mask"`` (one-hot ``t``, partial positives left out of the sum) or
            ``"onehot"`` (``SigLipLoss``'s targets).
        mixed_weight: weight ``w_i`` of a row that holds a mixed pair (1 for the
            others): the loss is ``sum_i w_i l_i / sum_i w_i``, where ``l_i`` is half the
            sum of image ``i``'s pairs plus half the sum of caption ``i``'s pairs; so pair
            ``(i, j)`` weighs ``(w_i + w_j) / 2``, and 1 is exactly the unweighted loss.
        **loss_options: ``cache_labels``, ``rank``, ``world_size``, ``dist_impl`` as for
            ``SigLipLoss``.

    In distributed training each rank passes the info of its own batch; the captions of
    other ranks, exchanged as ``SigLipLoss`` exchanges them (``dist_impl``), are
    negatives of every image here (MixGen pairs rows of one rank's batch only). With
    ``mixed_weight`` other than 1 their row weights travel with them, and the total
    weight of every rank's rows is all-reduced, so that the ranks' mean is the loss of
    the joined batch.

    Example:
        >>> import torch
        >>> from mixgen import MixGen
        >>> from mixgen.losses import MixGenSigLipLoss
        >>> _, _, info = MixGen(ratio=0.5, return_info=True)(torch.rand(4, 3, 2, 2), list("abcd"))
        >>> features, scale, bias = torch.eye(4), torch.tensor(10.0), torch.tensor(-5.0)
        >>> plain = MixGenSigLipLoss("onehot")(features, features, scale, bias, mixgen_info=info)
        >>> soft = MixGenSigLipLoss("soft")(features, features, scale, bias, mixgen_info=info)
        >>> round(plain.item(), 2), round(soft.item(), 2)  # soft: partners are half positive
        (0.03, 2.53)
    """

    def __init__(self, targets: str = "soft", mixed_weight: float = 1.0,
                 **loss_options: object) -> None:
        super().__init__(targets, mixed_weight, **loss_options)
        self._scoring: _Scoring | None = None  # the batch being scored, for _loss

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                logit_bias: Tensor | None = None, output_dict: bool = False,
                mixgen_info: MixGenInfo | None = None) -> Tensor | dict[str, Tensor]:
        """The sigmoid loss; with ``mixgen_info`` the targets follow ``self.targets``
        and mixed rows weigh ``self.mixed_weight``."""
        if not self.uses_info(mixgen_info, image_features.shape[0]) or (
                not self.weighted and not has_partial_positives(mixgen_info)):
            return super().forward(image_features, text_features, logit_scale, logit_bias,
                                   output_dict=output_dict)
        self._scoring = self.scoring(mixgen_info, image_features, across_ranks=True)
        if self._scoring.weights is not None:  # other ranks' captions carry their weights
            text_features = torch.cat([text_features, self._scoring.weights[:, None]], dim=1)
        try:  # SigLipLoss's own exchange between ranks, each block scored by _loss
            return super().forward(image_features, text_features, logit_scale, logit_bias,
                                   output_dict=output_dict)
        finally:
            self._scoring = None

    def loss_from_logits(self, logits_per_image: Tensor,
                         mixgen_info: MixGenInfo | None = None) -> Tensor:
        """The loss of the ``[N, N]`` logits a model computed itself, bias included, in
        one process: transformers' ``SiglipOutput.logits_per_image``, for example. Without
        ``mixgen_info``, or with ``targets="onehot"`` and ``mixed_weight=1``, it is the
        plain sigmoid loss."""
        rows = logits_per_image.shape[0]
        if not self.uses_info(mixgen_info, rows, "logits_per_image"):
            labels = self.get_ground_truth(logits_per_image.device, logits_per_image.dtype,
                                           rows)
            return -F.logsigmoid(labels * logits_per_image).sum() / rows
        scoring = self.scoring(mixgen_info, logits_per_image, across_ranks=False)
        return _pair_sum(logits_per_image, scoring.targets, scoring.kept, scoring.weights,
                         scoring.weights) / scoring.divisor

    def scoring(self, info: MixGenInfo, like: Tensor, *, across_ranks: bool) -> _Scoring:
        """The targets, kept pairs, row weights and divisor of a batch, in ``like``'s dtype
        and on its device; ``across_ranks``: the divisor counts every rank's rows."""
        block = affinity(info, dtype=like.dtype, device=like.device)
        own = torch.eye(block.shape[0], dtype=like.dtype, device=like.device)
        targets = block if self.targets == "soft" else own
        kept = ((block == 0) | (own == 1)).to(like.dtype) if self.targets == "mask" else None
        if not self.weighted:
            return _Scoring(targets, kept, None, block.shape[0])
        weights = mixed_row_weights(info, self.mixed_weight, dtype=like.dtype,
                                    device=like.device)
        total = weights.sum()
        if across_ranks and self.world_size > 1:
            torch.distributed.all_reduce(total)
        return _Scoring(targets, kept, weights,
                        total / self.world_size if across_ranks else total)

    def _loss(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
              logit_bias: Tensor | None = None, negative_only: bool = False) -> Tensor:
        """One block's loss: this rank's captions (``negative_only=False``) with the
        batch's targets, another rank's as negatives."""
        scoring = self._scoring
        if scoring is None or (negative_only and scoring.weights is None):
            return super()._loss(image_features, text_features, logit_scale, logit_bias,
                                 negative_only=negative_only)
        text_weights = None
        if scoring.weights is not None:
            text_features, text_weights = text_features[:, :-1], text_features[:, -1]
        logits = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        if negative_only:
            return _pair_sum(logits, None, None, scoring.weights, text_weights) / scoring.divisor
        return _pair_sum(logits, scoring.targets, scoring.kept, scoring.weights,
                         text_weights) / scoring.divisor


def _pair_sum(logits: Tensor, targets: Tensor | None, kept: Tensor | None,
              image_weights: Tensor | None, text_weights: Tensor | None) -> Tensor:
    """``sum_ij`` of each pair's binary cross-entropy with its target (None: every pair
    negative), times ``kept`` and the pair's weight ``(w_i + w_j) / 2`` where given."""
    if targets is None:
        terms = -F.logsigmoid(-logits)
    else:
        terms = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    if kept is not None:
        terms = terms * kept
    if image_weights is not None and text_weights is not None:
        terms = terms * (image_weights[:, None] + text_weights[None, :]) / 2
    return terms.sum()
