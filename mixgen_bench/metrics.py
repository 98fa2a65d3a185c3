"""Image-text retrieval metrics and the statistics to compare two training arms.

Retrieval follows CLIP_benchmark: with several captions per image, an image counts as
found within the top k when any of its captions is, and a caption when its own image is.
Ranks are 1-based. Comparisons across seeds use Student's t interval, which suits the
handful of seeds a benchmark can afford, clipped to the range the metric can take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

RECALL_AT = (1, 5, 10)
R_AT_1 = ("i2t_R@1", "t2i_R@1")
"""The two R@1 metrics: the validation score is their mean, and verdicts are taken on them."""
MIN_SEEDS = 3
"""Fewer seeds give no interval: with 2, a 95% t interval spans 12.7 standard errors on
each side of the mean, wider than any difference worth reporting."""


def retrieval_ranks(scores: Tensor, text_to_image: Tensor) -> tuple[Tensor, Tensor]:
    """``(image_to_text, text_to_image)`` ranks from a score matrix ``[images, texts]``.

    An image's rank is that of its best-scoring own caption among all captions; a
    caption's rank is that of its image among all images. A tie with a wrong candidate
    counts in the candidate's favour (rank = 1 + number of wrong candidates scoring at
    least as high), so a constant model scores at chance, not perfectly.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise TypeError("scores must be a 2-D tensor [images, texts]")
    num_images, num_texts = scores.shape
    if not isinstance(text_to_image, Tensor) or text_to_image.shape != (num_texts,):
        raise ValueError(f"text_to_image must be a tensor of {num_texts} image indices")
    if num_texts and (text_to_image.min() < 0 or text_to_image.max() >= num_images):
        raise ValueError(f"text_to_image must hold indices in [0, {num_images})")
    owns = torch.zeros_like(scores, dtype=torch.bool)
    owns[text_to_image, torch.arange(num_texts)] = True
    if not owns.any(dim=1).all():
        raise ValueError("text_to_image leaves an image without a caption")
    best_own = scores.masked_fill(~owns, -math.inf).amax(dim=1, keepdim=True)
    image_ranks = 1 + ((scores >= best_own) & ~owns).sum(dim=1)
    true_scores = scores[text_to_image, torch.arange(num_texts)]
    text_ranks = 1 + ((scores >= true_scores) & ~owns).sum(dim=0)
    return image_ranks, text_ranks


def rank_metrics(ranks: Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 in percent, mean and median rank, with keys like ``i2t_R@1``."""
    ranks = ranks.double()
    metrics = {f"{prefix}_R@{k}": 100.0 * float((ranks <= k).double().mean())
               for k in RECALL_AT}
    metrics[f"{prefix}_mean_rank"] = float(ranks.mean())
    metrics[f"{prefix}_median_rank"] = float(ranks.quantile(0.5))
    return metrics


def retrieval_metrics(image_features: Tensor, text_features: Tensor,
                      text_to_image: Tensor | None = None) -> dict[str, float]:
    """Image-to-text (``i2t_*``) and text-to-image (``t2i_*``) retrieval metrics.

    Features are compared by cosine similarity, in float32 (a 5k x 25k COCO score matrix
    takes 500 MB). ``text_to_image[t]`` is the image of caption ``t``; by default caption
    ``t`` belongs to image ``t``.
    """
    if text_to_image is None:
        text_to_image = torch.arange(text_features.shape[0])
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    image_ranks, text_ranks = retrieval_ranks(image_features @ text_features.T,
                                              text_to_image.cpu())
    return {**rank_metrics(image_ranks.cpu(), "i2t"), **rank_metrics(text_ranks.cpu(), "t2i")}


def student_t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom.

    torch has no t quantile, so this bisects the upper tail ``P(T > x)``, integrated from
    ``torch.distributions.StudentT``'s density by the midpoint rule after substituting
    ``t = 1 / u`` (a finite range however heavy the tail); accurate to about 1e-6.
    """
    if not 0.5 < probability < 1:
        raise ValueError(f"probability must be in (0.5, 1), got {probability}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    density = torch.distributions.StudentT(torch.tensor(float(df), dtype=torch.float64))
    steps = 2000

    def upper_tail(x: float) -> float:
        du = 1.0 / x / steps
        u = (torch.arange(steps, dtype=torch.float64) + 0.5) * du
        return float((density.log_prob(1.0 / u).exp() / u**2).sum() * du)

    tail = 1.0 - probability
    low, high = 0.0, 1.0
    while upper_tail(high) > tail:
        low, high = high, 2 * high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if upper_tail(middle) > tail else (low, middle)
    return (low + high) / 2


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95, *,
                             bounds: tuple[float, float] = (-math.inf, math.inf),
                             min_n: int = 2) -> dict[str, float | None]:
    """Mean, sample standard deviation and the Student t confidence interval of the mean.

    The interval is clipped to ``bounds``, the range the quantity can take (a recall in
    [0, 100]): with few values a t interval can reach past it, and a range no value can
    have says nothing. With fewer than ``min_n`` values (at least 2) the interval is None;
    with one value the spread is None too.
    """
    if len(values) == 0:
        raise ValueError("values must not be empty")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 2:
        raise ValueError(f"min_n must be an int >= 2, got {min_n!r}")
    low_bound, high_bound = bounds
    if not low_bound < high_bound:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    data = torch.tensor([float(v) for v in values], dtype=torch.float64)
    mean = float(data.mean())
    std = float(data.std()) if len(values) > 1 else None
    if len(values) < min_n:
        return {"mean": mean, "std": std, "ci_low": None, "ci_high": None, "n": len(values)}
    half = student_t_quantile(0.5 + confidence / 2, len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci_low": max(mean - half, low_bound),
            "ci_high": min(mean + half, high_bound), "n": len(values)}


def paired_difference(treatment: Sequence[float], control: Sequence[float],
                      confidence: float = 0.95, **interval: Any) -> dict[str, float | None]:
    """Per-pair differences ``treatment - control`` (same seed, same data order) with
    their mean and confidence interval: the comparison that cancels seed-to-seed noise.
    ``interval`` takes :func:`mean_confidence_interval`'s ``bounds`` and ``min_n``."""
    if len(treatment) != len(control):
        raise ValueError(f"treatment has {len(treatment)} values but control has "
                         f"{len(control)}; pairs need one of each")
    differences = [float(t) - float(c) for t, c in zip(treatment, control, strict=True)]
    return {**mean_confidence_interval(differences, confidence, **interval),
            "differences": differences}
