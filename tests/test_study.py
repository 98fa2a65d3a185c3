"""The study v2 runner: harness options from the registered protocol, and the report's
cells (paired differences at best-val and at the last epoch, detectable difference,
selected steps, late peaks) on synthetic run records."""

import json
from pathlib import Path

import pytest

from mixgen_bench import study, study_report
from mixgen_bench.metrics import R_AT_1

PROTOCOL = json.loads((Path(__file__).resolve().parents[1] / study.PROTOCOL).read_text())


def test_harness_options_follow_the_protocol(tmp_path):
    options = study.harness_options(PROTOCOL, "finetune", 512, [0, 1], ["baseline", "clip_c"],
                                    tmp_path)
    assert (options.steps, options.lr, options.select, options.val_size,
            options.eval_points) == (768, 0.0005, "best-val", 500, 16)
    assert (options.data, options.pretrain_data, options.sizes, options.seeds,
            options.arms) == ("digits", "shapes", "512", "0,1", "baseline,clip_c")
    assert options.arm_specs["clip_c"] == {"mixgen": {"image_op": "concat", "sep": " and "}}
    assert options.resume and not options.keep_checkpoints
    pre = study.harness_options(PROTOCOL, "pretrain", 16384, [2], ["default"], tmp_path)
    assert pre.keep_checkpoints and pre.steps == 2048 and pre.pretrain_data is None
    after = study.harness_options(PROTOCOL, "after_pretrain", 1024, [1], ["baseline"],
                                  tmp_path, jobs=1, pretrained="base.pt")
    assert (after.steps, after.jobs, str(after.pretrained)) == (512, 1, "base.pt")


def record(arm, seed, best, final, best_step, steps=384):
    curve = [{"epoch": e, "step": 2 * e, "val_score": 1.0} for e in range(1, steps // 2 + 1)]
    return {"arm": arm, "seed": seed, "steps": steps, "epochs": steps // 2,
            "selected_epoch": best_step // 2, "best_val_epoch": best_step // 2,
            "curve": curve, "metrics": dict.fromkeys(R_AT_1, best),
            "metrics_final": dict.fromkeys(R_AT_1, final)}


def test_cell_table_reports_both_checkpoints_the_detectable_difference_and_late_peaks():
    runs = [record("baseline", s, 50.0 + s, 40.0 + s, 96) for s in range(3)]
    runs += [record("default", s, 53.0 + s + (s == 1), 45.0 + s, 300) for s in range(3)]
    lines = study_report.cell_table(runs, "baseline", "128 pairs")
    assert lines[2] == ("baseline, R@1 at best-val (mean [95% CI] over 3 seeds): i2t_R@1 "
                        "51.0 [48.5, 53.5]; t2i_R@1 51.0 [48.5, 53.5].")
    # differences +3, +4, +3 at best-val: mean 3.3, t(0.975, 2) * 0.577 / sqrt(3) = 1.43
    row = next(line for line in lines if line.startswith("| default"))
    assert row == ("| default | 3 | +3.3 [1.9, 4.8] | +3.3 [1.9, 4.8] | +5.0 [5.0, 5.0] | "
                   "+5.0 [5.0, 5.0] | 1.4 / 1.4 "
                   "| 300, 300, 300 of 384 | 3 of 3 (0) |")
    baseline_row = next(line for line in lines if line.startswith("| baseline"))
    assert baseline_row.endswith("| 96, 96, 96 of 384 | 0 of 3 (0) |")
    two = study_report.cell_table([r for r in runs if r["seed"] < 2], "baseline", "two seeds")
    assert "| default | 2 | +3.5 | +3.5 | +5.0 | +5.0 | - / - |" in "\n".join(two)
    assert study_report.cell_table([], "baseline", "2048 pairs") == ["### 2048 pairs", "",
                                                               "Not run.", ""]


def test_still_rising_needs_a_gain_of_more_than_a_point_in_the_last_quarter():
    run = record("default", 0, 1.0, 1.0, 384, steps=8)
    scores = {1: 10.0, 2: 20.0, 3: 30.0, 4: 30.5}  # steps 2, 4, 6, 8: flat at the end
    run["curve"] = [{"epoch": e, "step": 2 * e, "val_score": v} for e, v in scores.items()]
    assert not study_report.still_rising(run)
    run["curve"][-1]["val_score"] = 31.5
    assert study_report.still_rising(run)


def test_cell_of_equal_differences_has_no_spread():
    assert study_report.cell({"mean": 5.0, "ci_low": None, "ci_high": None}) == "+5.0"
    with pytest.raises(StopIteration):
        study_report.peak_share({"curve": [], "best_val_epoch": 1, "steps": 2})
