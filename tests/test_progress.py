"""Progress lines of long runs: done and left, the run's time, the time left; a bar only on
a terminal outside CI."""

import io

import pytest

from mixgen_bench.progress import Progress, duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration():
    assert [duration(s) for s in (4.4, 59.6, 365, 7500)] == ["4 s", "1 min 0 s", "6 min 5 s",
                                                            "2 h 05 min"]


def test_one_line_per_run_with_the_time_left(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    now = [100.0]
    stream = io.StringIO()
    progress = Progress(5, reused=2, jobs=2, stream=stream, clock=lambda: now[0])
    for name, seconds in [("a", 48.2), ("b", 61), ("c", 40.8), ("d", 50), ("e", 30)]:
        now[0] += 25
        progress.finished(name, seconds)
    progress.close()
    assert stream.getvalue().splitlines() == [  # left: mean run time x rounds of 2 runs
        "5 runs to train, 2 at a time, 2 already done in --out (--resume)",
        "[1/5] a: 48 s; 4 left, about 1 min 36 s more",
        "[2/5] b: 1 min 1 s; 3 left, about 1 min 49 s more",
        "[3/5] c: 41 s; 2 left, about 50 s more",
        "[4/5] d: 50 s; 1 left, about 50 s more",
        "[5/5] e: 30 s; all done in 2 min 5 s"]


@pytest.mark.parametrize(("ci", "bar"), [(None, True), ("true", False), ("1", False)])
def test_bar_only_on_a_terminal_outside_ci(monkeypatch, ci, bar):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    stream = Terminal()
    progress = Progress(2, stream=stream)
    progress.finished("run-a", 1.0)
    progress.close()
    output = stream.getvalue()
    assert ("\r" in output) == bar and "[1/2] run-a: 1 s; 1 left" in output
