"""The sweep runner's bookkeeping on a fabricated protocol and fabricated run records:
off-epoch resolution, harness arms, paired differences, the selection rule, tables."""

import json

import pytest

from mixgen_bench import sweep, sweep_report
from mixgen_bench.options import Arm, resolve_arms

PROTOCOL = {
    "reference": "baseline",
    "common": {"steps": 128, "batch_size": 64, "image_size": 16, "eval_size": 24,
               "jobs": 1, "checkpoint_every": 0},
    "arms": {"baseline": {"mixgen": None}, "mixgen": {"mixgen": {}},
             "a": {"mixgen": {"ratio": 0.125}},
             "b": {"mixgen": {}, "off_fraction": 0.75},
             "c": {"mixgen": {}, "loss_targets": "soft"}},
    "always": ["baseline", "mixgen"], "select": 2,
    "score_metric": "i2t_R@1", "tie_metric": "t2i_R@1",
    "settings": {
        "s1": {"options": {"data": "shapes"}, "screen": {"sizes": [256, 2048], "seeds": [0, 1]},
               "final": {"sizes": [256, 512], "seeds": [0, 1]}},
        "s2": {"options": {"data": "digits"}, "screen": {"sizes": [256, 2048], "seeds": [0, 1]},
               "final": {"sizes": [256], "seeds": [0, 1]}},
        "pooled": {"options": {"text_tower": "minilm"}, "screen": None,
                   "final": {"sizes": [256], "seeds": [0]}, "arms_from": ["s1", "s2"],
                   "select": 1}},
}

# (arm, size) -> i2t R@1 and t2i R@1 of seeds 0 and 1 in setting s1
S1 = {("baseline", 256): ([10, 12], [0, 0]), ("baseline", 2048): ([20, 22], [0, 0]),
      ("mixgen", 256): ([20, 22], [0, 0]), ("mixgen", 2048): ([30, 32], [0, 0]),
      ("a", 256): ([12, 14], [1, 1]), ("a", 2048): ([20, 22], [1, 1]),
      ("b", 256): ([14, 14], [2, 2]), ("b", 2048): ([19, 21], [2, 2]),
      ("c", 256): ([9, 11], [0, 0]), ("c", 2048): ([19, 21], [0, 0])}


def records(table):
    return [{"arm": arm, "size": size, "seed": seed,
             "metrics": {"i2t_R@1": i2t[seed], "t2i_R@1": t2i[seed]}}
            for (arm, size), (i2t, t2i) in table.items() for seed in (0, 1)]


def write_runs(folder, runs):
    (folder / "runs").mkdir(parents=True)
    for run in runs:
        name = f"{run['arm']}-n{run['size']}-s{run['seed']}.json"
        (folder / "runs" / name).write_text(json.dumps(run))


def test_off_epoch_stops_mixing_for_the_last_quarter_in_whole_epochs():
    assert [sweep.off_epoch(0.75, n, 128, 64) for n in (256, 512, 1024, 2048, 4096)] == \
        [24, 12, 6, 3, 1]
    assert sweep.off_epoch(0.1, 4096, 128, 64) == 1  # at least one epoch of mixing


def test_harness_options_and_arms():
    options = sweep.harness_options(PROTOCOL, "s2", ["baseline", "b", "c"], 256, [0, 1],
                                    sweep.Path("out"))
    assert (options.data, options.steps, options.batch_size, options.sizes, options.seeds,
            options.out, options.resume) == ("digits", 128, 64, "256", "0,1",
                                             sweep.Path("out/s2"), True)
    arms = {arm.name: arm for arm in resolve_arms(options)}
    assert arms["b"] == Arm("b", {}, off_epoch=24)
    assert arms["c"] == Arm("c", {}, loss_targets="soft")
    assert arms["baseline"] == Arm("baseline")


def test_paired_differences():
    table = sweep_report.paired(records(S1), "baseline")
    assert sorted(table) == [256, 2048]
    a = table[256]["a"]["i2t_R@1"]
    assert (a["mean"], a["ci_low"], a["ci_high"], a["differences"], a["seeds"]) == \
        (2.0, 2.0, 2.0, [2.0, 2.0], [0, 1])
    b = table[256]["b"]["i2t_R@1"]  # differences 4 and 2: t(0.975, 1) = 12.706
    assert b["mean"] == 3.0
    assert b["ci_low"] == pytest.approx(3 - 12.7062, abs=1e-3)
    assert sweep_report.cell(b) == "+3.0 [-9.7, 15.7]"
    assert sweep_report.cell(None) == "-"
    only_seed_0 = [r for r in records(S1) if r["seed"] == 0 or r["arm"] != "baseline"]
    assert sweep_report.paired(only_seed_0, "baseline")[256]["a"]["i2t_R@1"]["seeds"] == [0]


def test_selection_rule_scores_ties_and_pooling(tmp_path):
    scores = sweep_report.screen_scores(PROTOCOL, "s1", records(S1))
    # mean over the two sizes of the mean paired difference; mixgen is always in
    assert scores == {"a": (1.0, 1.0), "b": (1.0, 2.0), "c": (-1.0, 0.0)}
    assert sweep_report.select_arms(scores, 2) == ["b", "a"]  # tie on i2t, b wins on t2i
    assert sweep_report.select_arms({"x": (1.0, 0.0), "w": (1.0, 0.0)}, 1) == ["w"]
    unfinished = [r for r in records(S1) if (r["arm"], r["size"], r["seed"]) != ("c", 2048, 1)]
    with pytest.raises(ValueError, match="lacks runs of c@2048"):
        sweep_report.screen_scores(PROTOCOL, "s1", unfinished)
    s2 = {key: ([i2t[0] - (5 if key[0] == "b" else 0)] * 2, t2i) for key, (i2t, t2i)
          in S1.items()}  # in s2, b loses 5 points more than in s1
    write_runs(tmp_path / "s1", records(S1))
    write_runs(tmp_path / "s2", records(s2))
    assert sweep.stage_arms(PROTOCOL, "s1", "final", tmp_path) == ["baseline", "mixgen", "b", "a"]
    assert sweep.stage_arms(PROTOCOL, "s1", "screen", tmp_path) == list(PROTOCOL["arms"])
    # pooled: a scores (1 + 1) / 2 = 1, b (1 - 3.5) / 2 on i2t
    assert sweep.stage_arms(PROTOCOL, "pooled", "final", tmp_path) == ["baseline", "mixgen", "a"]


def test_report_writes_tables_plot_and_json(tmp_path):
    write_runs(tmp_path / "out" / "s1", records(S1))
    text = sweep_report.report(PROTOCOL, tmp_path / "out", tmp_path / "sweep" / "results")
    assert "| baseline (R@1, n seeds) | 11.0 (2) | 21.0 (2) |" in text
    assert "| a | +2.0 [2.0, 2.0] | +0.0 [0.0, 0.0] |" in text
    assert "**s2**: no run finished." in text
    saved = json.loads((tmp_path / "sweep" / "results" / "s1.json").read_text())
    assert saved["selected"] == ["b", "a"]
    assert saved["paired"]["256"]["b"]["t2i_R@1"]["mean"] == 2.0
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    assert (tmp_path / "sweep" / "results" / "sweep.md").read_text() == text
    assert "| a | s1 | 2 | +1.0 | +0.0 |" in text  # a: t2i +1 at 256; i2t +0 [0, 0] at 2048


def test_target_check_over_settings():
    s1 = sweep_report.paired(records(S1), "baseline")
    s2 = sweep_report.paired([r for r in records(S1) if r["size"] == 2048], "baseline")
    check = sweep_report.target_check({"s1": s1, "s2": s2})
    # a: smallest sizes are 256 in s1 (i2t +2, t2i +1) and 2048 in s2 (i2t 0, t2i +1)
    assert check["a"] == {"smallest_mean": 0.0, "lowest_ci": 0.0, "settings": ["s1", "s2"],
                          "cells": 3}
    assert check["b"]["smallest_mean"] == -1.0
    assert check["b"]["lowest_ci"] == pytest.approx(3 - 12.7062, abs=1e-3)
