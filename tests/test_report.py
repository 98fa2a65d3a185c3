"""The harness's report at small n: no intervals below three seeds (and why), intervals
kept inside the metric's range, a verdict per arm, every seed in the plot."""

import json
from pathlib import Path

import pytest
from PIL import Image

from mixgen_bench.metrics import mean_confidence_interval, student_t_quantile
from mixgen_bench.options import Arm
from mixgen_bench.plots import curve_plot, plot
from mixgen_bench.report import METRICS, metric_bounds, summarize, write_outputs

ARMS = [Arm("baseline"), Arm("mixgen", {})]


def results_of(recalls: dict[str, list[float]], size: int = 64,
               final: dict[str, list[float]] | None = None,
               curves: dict[str, list[list[float]]] | None = None) -> dict:
    """Harness results whose every metric of an arm takes its per-seed ``recalls`` at the
    selected (best validation) epoch 2 of 4, and ``final`` (default: the same) at the last
    epoch; ``curves`` gives each arm's per-seed validation scores at epochs 1-4."""
    seeds = list(range(len(recalls["baseline"])))
    final = final or recalls
    runs = [{"arm": arm, "size": size, "seed": seed, "epochs": 4, "selected_epoch": 2,
             "train_seconds": 1.0, "eval_seconds": 0.25, "seconds": 1.5,
             "curve": [{"epoch": e + 1, "step": 8 * (e + 1), "val_score": score}
                       for e, score in enumerate(curves[arm][seed])] if curves else [],
             "metrics": dict.fromkeys(METRICS, values[seed]),
             "metrics_best_val": dict.fromkeys(METRICS, values[seed]),
             "metrics_final": dict.fromkeys(METRICS, final[arm][seed])}
            for arm, values in recalls.items() for seed in seeds]
    results = summarize(runs, ARMS, [size], seeds, "baseline", metric_bounds(200, 200))
    results.update(arms={arm.name: {} for arm in ARMS}, held_out_pairs=200,
                   validation_pairs=100)
    return results


def test_report_gives_the_selected_epochs_and_the_last_epoch_too(tmp_path):
    results = results_of({"baseline": [80.0, 81.0, 79.0], "mixgen": [90.0, 92.0, 91.0]},
                         final={"baseline": [70.0, 72.0, 71.0], "mixgen": [70.0, 71.0, 72.0]})
    table = write_and_read(results, tmp_path)
    assert ("Checkpoints: best validation score (mean of i2t and t2i R@1 on 100 validation "
            "pairs); selected epochs, per seed: baseline 2, 2, 2 of 4; mixgen 2, 2, 2 of 4.") \
        in table
    # at the last epoch the difference is 0.0 [-2.5, 2.5]: mixgen's 71.0 against 71.0
    assert ("At the last epoch instead: mixgen - baseline i2t_R@1 0.0 [-2.5, 2.5]; "
            "mixgen - baseline t2i_R@1 0.0 [-2.5, 2.5].") in table
    assert "Evaluations took 17% of the runs' time (2 of 9 s)." in table
    assert results["paired"]["64"]["mixgen"]["i2t_R@1"]["mean"] == 11.0


def test_curve_plot_draws_each_arms_mean_with_a_band():
    curves = {"baseline": [[10.0, 30.0, 20.0, 15.0]] * 2 + [[12.0, 32.0, 22.0, 17.0]],
              "mixgen": [[5.0, 15.0, 25.0, 35.0]] * 3}
    results = results_of({"baseline": [1.0, 2.0, 3.0], "mixgen": [1.0, 2.0, 3.0]},
                         curves=curves)
    axis = curve_plot(results).axes[0]
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert list(lines["baseline"].get_xdata()) == [8, 16, 24, 32]
    assert list(lines["baseline"].get_ydata()) == pytest.approx(
        [32 / 3, 92 / 3, 62 / 3, 47 / 3])
    assert list(lines["mixgen"].get_ydata()) == [5.0, 15.0, 25.0, 35.0]
    bands = axis.collections
    assert len(bands) == 2  # a 95% band per arm (three seeds)
    low = min(bands[0].get_paths()[0].vertices[:, 1])
    assert low < 32 / 3


def test_bounded_interval_is_clipped_and_needs_min_n():
    values = [97.0, 99.0, 100.0]
    free = mean_confidence_interval(values)
    assert free["ci_high"] > 100
    clipped = mean_confidence_interval(values, bounds=(0.0, 100.0))
    assert clipped == {**free, "ci_high": 100.0}
    two = mean_confidence_interval([1.0, 3.0], min_n=3)
    assert two == {"mean": 2.0, "std": pytest.approx(2**0.5), "ci_low": None, "ci_high": None,
                   "n": 2}
    with pytest.raises(ValueError, match="min_n must be an int >= 2"):
        mean_confidence_interval(values, min_n=1)
    with pytest.raises(ValueError, match="bounds must be"):
        mean_confidence_interval(values, bounds=(1.0, 1.0))


def test_metric_bounds():
    bounds = metric_bounds(num_images=50, num_texts=250)
    assert bounds["i2t_R@5"] == bounds["t2i_R@1"] == (0.0, 100.0)
    assert bounds["i2t_mean_rank"] == (1.0, 250.0) and bounds["t2i_median_rank"] == (1.0, 50.0)


def test_two_seeds_give_no_interval_and_say_why(tmp_path):
    results = results_of({"baseline": [54.0, 55.4], "mixgen": [10.0, 99.4]})
    stats = results["summary"]["64"]["mixgen"]["i2t_R@10"]
    assert (stats["mean"], stats["ci_low"], stats["ci_high"]) == (54.7, None, None)
    table = write_and_read(results, tmp_path)
    t = student_t_quantile(0.975, 1)
    assert (f"Means over seeds, no confidence intervals: they need at least 3 seeds: with 2 "
            f"a 95% t interval reaches {t:.1f} standard errors either side of the mean") in table
    assert "| i2t_R@10 | 54.7 | 54.7 | 0.0 |" in table
    assert ("- mixgen - baseline, i2t_R@1: 0.0 points: not enough seeds to tell (give at "
            "least 3).") in table


def test_intervals_stay_inside_the_range_and_verdicts_follow_them(tmp_path):
    results = results_of({"baseline": [80.0, 90.0, 70.0], "mixgen": [99.0, 100.0, 95.0]})
    table = write_and_read(results, tmp_path)
    assert "Mean [95% CI] over seeds (Student t, clipped to the metric's range)" in table
    assert "| i2t_R@1 | 80.0 [55.2, 100.0] | 98.0 [91.4, 100.0] | 18.0 [-0.8, 36.8] |" in table
    assert ("- mixgen - baseline, t2i_R@1: 18.0 [-0.8, 36.8] points: no difference seen (the "
            "95% CI holds 0); more seeds or held-out pairs narrow it.") in table
    better = results_of({"baseline": [80.0, 81.0, 79.0], "mixgen": [90.0, 92.0, 91.0]})
    assert "91.0 [88.5, 93.5] | 11.0 [8.5, 13.5] |" in write_and_read(better, tmp_path)
    assert "mixgen is better (the 95% CI lies above 0)." in write_and_read(better, tmp_path)
    worse = results_of({"baseline": [90.0, 92.0, 91.0], "mixgen": [80.0, 81.0, 79.0]})
    assert "mixgen is worse (the 95% CI lies below 0)." in write_and_read(worse, tmp_path)
    for arms in results["summary"]["64"].values():
        for metric, stats in arms.items():
            low, high = results["interval"]["bounds"][metric]
            assert low <= stats["ci_low"] <= stats["ci_high"] <= high


def test_plot_shows_every_seed():
    results = results_of({"baseline": [54.0, 55.4], "mixgen": [10.0, 99.4]})
    axes = plot(results).axes
    assert [ax.get_ylabel() for ax in axes] == ["i2t_R@1 (%)", "t2i_R@1 (%)",
                                                "i2t_R@1 - baseline", "t2i_R@1 - baseline"]
    seeds = [sorted(float(y) for _, y in collection.get_offsets())
             for collection in axes[0].collections if collection.get_offsets().shape[0] == 2]
    assert seeds == [[54.0, 55.4], [10.0, 99.4]]
    differences = [sorted(float(y) for _, y in collection.get_offsets())
                   for collection in axes[2].collections if collection.get_offsets().shape[0] == 2]
    assert differences == [pytest.approx([-44.0, 44.0])]


def write_and_read(results: dict, folder: Path) -> str:
    """The table ``write_outputs`` prints, after checking the files it writes."""
    table = write_outputs(results, folder)
    assert (folder / "results.md").read_text() == table
    assert json.loads((folder / "results.json").read_text())["interval"]["min_seeds"] == 3
    with Image.open(folder / "results.png") as image:
        assert image.size == (1000, 700)
    return table
