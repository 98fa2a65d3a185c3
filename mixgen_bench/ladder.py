"""The budget ladder: each arm's training length chosen on validation data.

A training length is a hyperparameter, and a verdict taken at one length can flip at
another (a regulariser peaks later than the baseline it regularises). With ``--budget
auto`` each arm climbs a ladder on the first seed: its first rung trains for the starting
budget (``--epochs``, or ``--steps`` in whole epochs), every next rung for twice as many
epochs, each rung a whole run with its own full schedule (warm-up and cosine), so no run
is a long schedule stopped early. A rung's score is its best validation score (mean of
i2t and t2i R@1, :mod:`mixgen_bench.selection`). The arm stops climbing when a rung beats
the previous one by no more than ``--budget-tol`` points, or when a rung reaches
``--max-epochs``. Its budget is its best rung; every other seed then trains at that
budget, and the first seed's run at that rung is reused, not trained again.

An arm whose last rung hit the cap while still improving by more than the tolerance is
**capped**: its verdict is taken before its peak, and the report says so.

Successive halving and Hyperband pick among budgets the same way (rungs B, 2B, 4B, ...);
transformers' and Lightning's early stopping stop one run and cannot compare two recipes
each at its own best length, which is the point here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUDGETS = ("auto", "fixed")
"""``--budget``: each arm's training length chosen on validation data, or ``--epochs``."""
BUDGET_TOL = 1.0
"""Default ``--budget-tol``, in validation-score points. In study v2 the seed-to-seed
standard deviation of an arm's best validation score (500 validation pairs) was 0.4-1.2
points, median 0.9: a rung that gains no more than about one such deviation has not
shown that the longer schedule helps."""
CAP_FACTOR = 8
"""Default ``--max-epochs``: this many times the first rung (three doublings)."""


@dataclass
class Ladder:
    """One arm's ladder at one training-set size: the rungs run so far and the rule that
    picks the next one, the chosen budget and whether the cap cut it short."""

    arm: str
    size: int
    start: int
    """Epochs of the first rung."""
    cap: int
    """``--max-epochs``: no rung trains longer."""
    tol: float
    """``--budget-tol``: the validation points a rung must gain over the previous one."""
    rungs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start < 1 or self.cap < self.start:
            raise ValueError(f"--max-epochs {self.cap} must be >= the first rung's "
                             f"{self.start} epochs (>= 1)")
        if self.tol < 0:
            raise ValueError(f"--budget-tol must be >= 0, got {self.tol}")

    def add(self, record: dict[str, Any]) -> None:
        """Enter a finished rung run's record (rungs arrive in order)."""
        expected = self.next_epochs()
        if record["epochs"] != expected:
            raise ValueError(f"ladder {self.arm} at {self.size} pairs expected a rung of "
                             f"{expected} epochs, got {record['epochs']}")
        self.rungs.append({"epochs": record["epochs"], "steps": record["steps"],
                           "best_val": max(p["val_score"] for p in record["curve"]),
                           "best_val_epoch": record["best_val_epoch"],
                           "seconds": record["seconds"]})

    def improved(self) -> bool:
        """Whether the last rung beats the one before it by more than the tolerance (the
        first rung has nothing to beat and counts as improving)."""
        if len(self.rungs) < 2:
            return bool(self.rungs)
        return self.rungs[-1]["best_val"] > self.rungs[-2]["best_val"] + self.tol

    def next_epochs(self) -> int | None:
        """The epochs of the next rung, or None when the ladder has ended."""
        if not self.rungs:
            return self.start
        last = self.rungs[-1]["epochs"]
        if last >= self.cap or not self.improved():
            return None
        return min(2 * last, self.cap)

    @property
    def done(self) -> bool:
        return bool(self.rungs) and self.next_epochs() is None

    @property
    def chosen(self) -> int:
        """The budget, in epochs: the rung of the best validation score, the shorter of a
        tie."""
        if not self.done:
            raise ValueError(f"ladder {self.arm} at {self.size} pairs has not ended")
        return max(self.rungs, key=lambda rung: (rung["best_val"], -rung["epochs"]))["epochs"]

    @property
    def capped(self) -> bool:
        """Whether the ladder ended at the cap still improving (see :meth:`improved`)."""
        return self.done and self.rungs[-1]["epochs"] >= self.cap and self.improved()

    def summary(self) -> dict[str, Any]:
        """The ladder for ``results.json``: its rungs, the chosen budget, whether it was
        capped, and what it cost in runs and seconds."""
        return {"arm": self.arm, "size": self.size, "start": self.start, "cap": self.cap,
                "tol": self.tol, "rungs": self.rungs, "chosen_epochs": self.chosen,
                "capped": self.capped, "runs": len(self.rungs),
                "seconds": sum(rung["seconds"] for rung in self.rungs)}
