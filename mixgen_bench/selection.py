"""Checkpoint selection on validation pairs: each run is judged at its own best point.

A regulariser can peak later than the baseline, and a budget cut at the baseline's peak
judges it before its own, so the harness evaluates every run on the validation pairs
(disjoint from the test pairs) at evenly spaced epochs, keeps that learning curve, and
reports the test metrics at the epoch of the best validation score (``--select
best-val``) or at the last epoch (``--select final``), always both in the report.

The validation score is the mean of image-to-text and text-to-image R@1; a tie goes to the
earlier epoch (fewer steps for the same score).
"""

from __future__ import annotations

from typing import Any

from mixgen_bench.metrics import R_AT_1

SELECT = ("best-val", "final")
"""``--select``: the checkpoint whose test metrics a run reports."""


def eval_epochs(epochs: int, points: int) -> list[int]:
    """The epochs (1-based, as open_clip_train names its checkpoints) at which a run is
    evaluated on the validation pairs: every ``max(1, epochs // points)``-th epoch and the
    last, so at least ``points`` of them, or every epoch when a run has fewer."""
    every = save_every(epochs, points)
    chosen = list(range(every, epochs + 1, every))
    return chosen if chosen[-1] == epochs else [*chosen, epochs]


def save_every(epochs: int, points: int) -> int:
    """open_clip_train's ``--save-frequency`` that saves the checkpoints of
    :func:`eval_epochs` (it always saves the last epoch as well)."""
    return max(1, epochs // points)


def validation_score(metrics: dict[str, float]) -> float:
    """The mean of :data:`R_AT_1`."""
    return sum(metrics[name] for name in R_AT_1) / len(R_AT_1)


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The curve's point of the highest validation score, the earliest of a tie."""
    if not curve:
        raise ValueError("curve must hold at least one evaluated epoch")
    return max(curve, key=lambda point: (point["val_score"], -point["epoch"]))
