"""The budget ladder (``--budget auto``): where it stops, the budget it chooses, the
first seed's rung reused, capped arms, resuming a killed ladder, and its report; on
records built to over-fit or to keep improving, then on real tiny runs."""

import json
import threading

import pytest

from mixgen_bench import clip_retrieval as harness
from mixgen_bench.errors import UsageError
from mixgen_bench.ladder import Ladder
from mixgen_bench.options import parse_options
from mixgen_bench.report import budget_lines, capped_lines
from mixgen_bench.runs import Run

OVERFITS = {2: 40.0, 4: 50.0, 8: 46.0, 16: 30.0, 32: 20.0}
"""Best validation score by budget of an arm that over-fits past 4 epochs."""
IMPROVES = {2: 40.0, 4: 45.0, 8: 50.0, 16: 55.0, 32: 60.0}
"""...and of one that keeps improving."""
SCORES = {"baseline": OVERFITS, "mixgen": IMPROVES}


def record(run: Run, best: float) -> dict:
    """A finished run's record whose validation curve peaks at ``best``, at the last
    epoch."""
    curve = [{"epoch": e, "step": 4 * e, "val_score": best * e / run.epochs}
             for e in range(1, run.epochs + 1)]
    return {"arm": run.arm.name, "size": run.size, "seed": run.seed, "epochs": run.epochs,
            "steps": 4 * run.epochs, "curve": curve, "best_val_epoch": run.epochs,
            "selected_epoch": run.epochs, "seconds": 10.0 * run.epochs}


def ladder(scores: dict[int, float], start: int = 2, cap: int = 32, tol: float = 1.0) -> Ladder:
    """A ladder fed rung by rung from ``scores`` until it ends."""
    climb = Ladder("arm", 64, start, cap, tol)
    while not climb.done:
        epochs = climb.next_epochs()
        climb.add({"epochs": epochs, "steps": 4 * epochs, "best_val_epoch": epochs,
                   "seconds": 1.0, "curve": [{"val_score": scores[epochs]}]})
    return climb


def test_the_ladder_stops_after_the_first_rung_without_a_gain_and_chooses_the_best():
    over = ladder(OVERFITS)
    assert [rung["epochs"] for rung in over.rungs] == [2, 4, 8]  # 8 lost: stop
    assert (over.chosen, over.capped) == (4, False)  # the best rung, not the last
    flat = ladder({2: 40.0, 4: 50.0, 8: 50.9, 16: 70.0})  # +0.9 <= tol: stop at 8
    assert [rung["epochs"] for rung in flat.rungs] == [2, 4, 8] and flat.chosen == 8
    assert ladder({2: 40.0, 4: 50.0, 8: 50.0}).chosen == 4  # a tie: the shorter
    assert [r["epochs"] for r in ladder({2: 40.0, 4: 50.0, 8: 51.5, 16: 52.0}).rungs] == [
        2, 4, 8, 16]  # +1.5 > tol climbs on
    summary = over.summary()
    assert (summary["runs"], summary["seconds"], summary["chosen_epochs"]) == (3, 3.0, 4)


def test_an_arm_still_improving_at_the_cap_is_capped():
    up = ladder(IMPROVES, cap=16)
    assert [rung["epochs"] for rung in up.rungs] == [2, 4, 8, 16]
    assert (up.chosen, up.capped) == (16, True)
    assert ladder({**IMPROVES, 12: 58.0}, cap=12).rungs[-1]["epochs"] == 12  # the cap is a rung
    assert ladder(IMPROVES, start=4, cap=4).capped  # one rung: never shown to level off
    assert not ladder({2: 40.0, 4: 50.0, 8: 50.5}, cap=8).capped  # levelled off at the cap


def test_bad_ladders_are_refused():
    with pytest.raises(ValueError, match="--max-epochs 2 must be >= the first rung's 4"):
        Ladder("arm", 64, 4, 2, 1.0)
    with pytest.raises(ValueError, match="--budget-tol must be >= 0"):
        Ladder("arm", 64, 4, 8, -1.0)
    with pytest.raises(ValueError, match="expected a rung of 4 epochs, got 8"):
        Ladder("arm", 64, 4, 8, 1.0).add({"epochs": 8})
    with pytest.raises(ValueError, match="has not ended"):
        _ = Ladder("arm", 64, 4, 8, 1.0).chosen
    for argv, message in [(["--max-epochs", "1"], "--max-epochs 1 must be >= the first"),
                          (["--val-size", "0", "--select", "final"], "--budget auto chooses")]:
        with pytest.raises(UsageError, match=message):
            harness.validate(parse_options(["--epochs", "2", "--sizes", "64", *argv]))


class FakeTraining:
    """Stands in for training and evaluating a run: records from :data:`SCORES`, every
    call counted; ``fail_at`` makes one run fail, as a killed harness would stop."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def __call__(self, run: Run, gpu_sets) -> dict:
        with self.lock:
            self.calls.append(run.name)
        if run.name == self.fail_at:
            raise RuntimeError(f"run {run.name} killed")
        return record(run, SCORES[run.arm.name][run.epochs])


def execute(tmp_path, training: FakeTraining, *extra: str):
    options = parse_options(["--epochs", "2", "--max-epochs", "16", "--sizes", "64,128",
                             "--seeds", "0,1,2", "--jobs", "2", "--out", str(tmp_path),
                             *extra])
    arms, sizes, seeds = harness.validate(options)
    first, ladders = harness.plan(arms, sizes, seeds, options)
    return harness.execute(first, ladders, seeds, options, training), ladders


def test_each_arm_trains_every_seed_at_its_chosen_budget_and_seed_0_is_reused(tmp_path):
    training = FakeTraining()
    chosen, ladders = execute(tmp_path, training)
    for size in (64, 128):  # a ladder per size and arm
        assert (ladders[("baseline", size)].chosen, ladders[("mixgen", size)].chosen) == (4, 16)
        assert ladders[("mixgen", size)].capped and not ladders[("baseline", size)].capped
        assert [chosen[("baseline", size, seed)]["epochs"] for seed in (0, 1, 2)] == [4, 4, 4]
        assert [chosen[("mixgen", size, seed)]["epochs"] for seed in (0, 1, 2)] == [16] * 3
    expected = {f"{arm}-n{size}-s0-e{epochs}" for size in (64, 128)
                for arm, rungs in (("baseline", (2, 4, 8)), ("mixgen", (2, 4, 8, 16)))
                for epochs in rungs}
    expected |= {f"{arm}-n{size}-s{seed}-e{epochs}" for size in (64, 128) for seed in (1, 2)
                 for arm, epochs in (("baseline", 4), ("mixgen", 16))}
    assert sorted(training.calls) == sorted(expected)  # seed 0's chosen rung not retrained
    assert {path.stem for path in (tmp_path / "runs").glob("*.json")} == expected


def test_a_killed_ladder_resumes_where_it_stopped(tmp_path):
    with pytest.raises(RuntimeError, match="mixgen-n64-s0-e8 killed"):
        execute(tmp_path, FakeTraining(fail_at="mixgen-n64-s0-e8"), "--jobs", "1")
    first = FakeTraining()
    finished = {path.stem for path in (tmp_path / "runs").glob("*.json")}
    assert {"mixgen-n64-s0-e2", "mixgen-n64-s0-e4"} <= finished
    chosen, _ = execute(tmp_path, first, "--resume")
    assert not set(first.calls) & finished  # nothing recorded is trained again
    assert "mixgen-n64-s0-e8" in first.calls
    again = FakeTraining()
    assert execute(tmp_path, again, "--resume")[0] == chosen and again.calls == []


def test_the_report_gives_each_ladder_and_says_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "run_one", lambda run, *args: record(
        run, SCORES[run.arm.name][run.epochs]) | {"metrics": {}})
    monkeypatch.setattr(harness, "summarize", lambda runs, *args: {"runs": runs})
    options = parse_options(["--epochs", "2", "--max-epochs", "8", "--sizes", "64",
                             "--seeds", "0,1,2", "--eval-size", "8", "--image-size", "16",
                             "--out", str(tmp_path)])
    results = harness.run_benchmark(options)
    assert [(r["arm"], r["seed"], r["epochs"]) for r in results["runs"]] == [
        (arm, seed, epochs) for seed in (0, 1, 2) for arm, epochs in (("baseline", 4),
                                                                      ("mixgen", 8))]
    budgets = results["budgets"]["64"]
    assert budgets["mixgen"]["capped"] and budgets["mixgen"]["chosen_epochs"] == 8
    assert [rung["best_val"] for rung in budgets["baseline"]["rungs"]] == [40.0, 50.0, 46.0]
    lines = budget_lines({**results, "seeds": [0, 1, 2]}, 64)
    assert lines[0].startswith("Budgets chosen on validation data (--budget auto): each "
                               "arm's ladder on seed 0, doubling from 2 epochs until a rung "
                               "gains no more than 1 points or reaches 8 epochs.")
    assert "| baseline | 2 (40.0, at 2), 4 (50.0, at 4), 8 (46.0, at 8) | 4 epochs | no | " \
           "3 runs, 140 s |" in lines
    assert "| mixgen | 2 (40.0, at 2), 4 (45.0, at 4), 8 (50.0, at 8) | 8 epochs | yes | " \
           "3 runs, 140 s |" in lines
    assert capped_lines(results, 64) == [
        "- capped: mixgen was still improving at --max-epochs 8; its numbers are taken "
        "before its peak, so the differences it enters may change with a higher cap."]
    assert json.loads(json.dumps(results["budgets"])) == results["budgets"]


TINY = ["--sizes", "64", "--epochs", "1", "--max-epochs", "4", "--batch-size", "16",
        "--eval-size", "24", "--image-size", "16", "--threads", "1", "--seeds", "0,1",
        "--eval-points", "2"]


@pytest.mark.slow
def test_real_runs_climb_their_ladders(tmp_path, capsys):
    harness.main([*TINY, "--out", str(tmp_path), "--jobs", "2"])
    results = json.loads((tmp_path / "results.json").read_text())
    table = (tmp_path / "results.md").read_text()
    for arm in ("baseline", "mixgen"):
        ladder = results["budgets"]["64"][arm]
        epochs = [rung["epochs"] for rung in ladder["rungs"]]
        assert epochs == [1, 2, 4][:len(epochs)] and ladder["chosen_epochs"] in epochs
        scores = [rung["best_val"] for rung in ladder["rungs"]]
        best = max(scores)
        assert ladder["chosen_epochs"] == epochs[scores.index(best)]
        runs = [r for r in results["runs"] if r["arm"] == arm]
        assert [r["epochs"] for r in runs] == [ladder["chosen_epochs"]] * 2
        rung = json.loads((tmp_path / "runs" / f"{arm}-n64-s0-e{ladder['chosen_epochs']}.json")
                          .read_text())
        assert runs[0] == rung  # the first seed's rung is the reported run
        assert f"| {arm} | 1 ({scores[0]:.1f}, at " in table
        command = (tmp_path / "logs" / f"{arm}-n64-s1-e{ladder['chosen_epochs']}" /
                   "command.txt").read_text()
        assert f"--epochs {ladder['chosen_epochs']} " in command
    assert "Budgets chosen on validation data (--budget auto)" in capsys.readouterr().out
