"""Progress of a long set of runs: one line per finished run on stderr, with the runs
done and left, the run's own time and an estimate of the time left.

On a terminal a tqdm bar stays under the lines; in a log (stderr not a terminal, or the
``CI`` environment variable set) only the lines are written, one per run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm


def duration(seconds: float) -> str:
    """``"41 s"``, ``"6 min 5 s"``, ``"2 h 05 min"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Reports ``total`` runs as they finish (``growing``: more are planned as they go,
    :meth:`planned`). The time left is the mean time of the runs finished so far times
    the rounds of ``jobs`` runs side by side still to go."""

    def __init__(self, total: int, *, reused: int = 0, jobs: int = 1, growing: bool = False,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.jobs, self.clock = total, jobs, clock
        self.seconds: list[float] = []
        self.stream = sys.stderr if stream is None else stream
        self.started = clock()
        interactive = self.stream.isatty() and os.environ.get("CI", "").lower() in ("", "0",
                                                                                     "false")
        self.bar = tqdm(total=total, unit="run", file=self.stream, disable=not interactive,
                        leave=False)
        again = f", {reused} already done in --out (--resume)" if reused else ""
        more = "; the budget ladders add rungs and seeds as their rungs end" if growing else ""
        self._write(f"{total} runs to train, {jobs} at a time{again}{more}")

    def finished(self, name: str, seconds: float) -> None:
        """Run ``name`` ended after ``seconds`` of its own."""
        self.seconds.append(seconds)
        done = len(self.seconds)
        left = self.total - done
        line = f"[{done}/{self.total}] {name}: {duration(seconds)}"
        if left:
            rounds = math.ceil(left / self.jobs)
            line += f"; {left} left, about {duration(sum(self.seconds) / done * rounds)} more"
        else:
            line += f"; all done in {duration(self.clock() - self.started)}"
        self._write(line)
        self.bar.update(1)

    def planned(self, count: int) -> None:
        """``count`` more runs to train than first announced (a budget ladder plans its
        next rung, and the other seeds, only as its rungs end)."""
        self.total += count
        self.bar.total = self.total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def _write(self, line: str) -> None:
        tqdm.write(line, file=self.stream)
