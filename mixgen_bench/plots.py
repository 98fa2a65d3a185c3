"""The harness's figures: R@1 of every arm against training-set size with the paired
differences (``results.png``), and each arm's mean validation curve (``validation.png``)."""

from __future__ import annotations

from typing import Any

from mixgen_bench.metrics import MIN_SEEDS, R_AT_1, mean_confidence_interval


def plot(results: dict[str, Any]) -> Any:
    """A matplotlib figure: R@1 of every arm against training-set size (top) and the
    paired difference to the reference arm (bottom, when there are other arms); every seed
    as a dot, the mean as a line, the 95% CI as bars (from :data:`MIN_SEEDS` seeds on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, reference = results["sizes"], results["reference"]
    others = [name for name in results["arms"] if name != reference]
    panels = [(results["summary"], list(results["arms"]), "values", "{metric} (%)")]
    if others:
        panels.append((results["paired"], others, "differences", f"{{metric}} - {reference}"))
    figure, axes = plt.subplots(len(panels), 2, figsize=(10, 3.5 * len(panels)),
                                sharex=True, squeeze=False)
    for row, (table, names, per_seed, label) in enumerate(panels):
        for column, metric in enumerate(R_AT_1):
            axis = axes[row, column]
            for index, name in enumerate(names):
                stats = [table[str(size)][name][metric] for size in sizes]
                shift = 2 ** (0.06 * (index - (len(names) - 1) / 2))  # arms side by side
                xs = [size * shift for size in sizes]
                means = [s["mean"] for s in stats]
                errors = [[0 if s["ci_low"] is None else s["mean"] - s["ci_low"] for s in stats],
                          [0 if s["ci_high"] is None else s["ci_high"] - s["mean"]
                           for s in stats]]
                line = axis.errorbar(xs, means, yerr=errors, marker="_", markersize=12,
                                     capsize=4, label=name)
                dots = [(x, value) for x, s in zip(xs, stats, strict=True) for value in s[per_seed]]
                axis.scatter(*zip(*dots, strict=True), s=12, alpha=0.6,
                             color=line[0].get_color())
            if row == 1:
                axis.axhline(0, color="grey", linewidth=1)
            axis.set_xscale("log", base=2)
            axis.set_ylabel(label.format(metric=metric))
            axis.legend()
            axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("training pairs")
    seeds = len(results["seeds"])
    shown = "95% CI" if seeds >= MIN_SEEDS else f"no CI with {seeds} seed{'s' * (seeds > 1)}"
    figure.suptitle(f"Held-out retrieval: dots are seeds, bars the mean ({shown})")
    figure.tight_layout()
    plt.close(figure)  # drawn and saved by the caller, not shown
    return figure


def curve_plot(results: dict[str, Any]) -> Any:
    """A matplotlib figure, one panel per size: each arm's mean validation score against
    the optimizer step, with a 95% band over seeds (from :data:`MIN_SEEDS` seeds on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.5), squeeze=False)
    for axis, size in zip(axes[0], sizes, strict=True):
        for name in results["arms"]:
            curves = [r["curve"] for r in results["runs"]
                      if r["arm"] == name and r["size"] == size and r["curve"]]
            if not curves:
                continue
            steps = [point["step"] for point in curves[0]]
            stats = [mean_confidence_interval([c[i]["val_score"] for c in curves],
                                              bounds=(0.0, 100.0), min_n=MIN_SEEDS)
                     for i in range(len(steps))]
            line = axis.plot(steps, [s["mean"] for s in stats], marker=".", label=name)
            if stats[0]["ci_low"] is not None:
                axis.fill_between(steps, [s["ci_low"] for s in stats],
                                  [s["ci_high"] for s in stats], alpha=0.2,
                                  color=line[0].get_color())
        axis.set_title(f"{size} training pairs")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("validation score (mean R@1, %)")
        axis.grid(alpha=0.3)
        axis.legend()
    seeds = len(results["seeds"])
    shown = "95% band" if seeds >= MIN_SEEDS else f"no band with {seeds} seed{'s' * (seeds > 1)}"
    figure.suptitle(f"Validation curves: mean over seeds ({shown})")
    figure.tight_layout()
    plt.close(figure)
    return figure
