"""The harness's report: per size and arm, each metric's mean with a 95% confidence
interval over seeds and its paired difference (same seed) to the reference arm, as
``results.json``, a Markdown table (``results.md``) and a plot (``results.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixgen_bench.metrics import mean_confidence_interval, paired_difference
from mixgen_bench.options import Arm

METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "i2t_mean_rank", "i2t_median_rank",
           "t2i_R@1", "t2i_R@5", "t2i_R@10", "t2i_mean_rank", "t2i_median_rank")


def summarize(runs: list[dict], arms: list[Arm], sizes: list[int], seeds: list[int],
              reference: str) -> dict[str, Any]:
    """Per size and arm: each metric's mean and 95% CI over seeds, and its paired
    difference (same seed) to the reference arm."""
    by_key = {(r["arm"], r["size"], r["seed"]): r["metrics"] for r in runs}
    summary: dict[str, dict] = {}
    paired: dict[str, dict] = {}
    for size in sizes:
        summary[str(size)], paired[str(size)] = {}, {}
        for arm in arms:
            values = {m: [by_key[(arm.name, size, s)][m] for s in seeds] for m in METRICS}
            summary[str(size)][arm.name] = {m: mean_confidence_interval(v)
                                            for m, v in values.items()}
            if arm.name != reference:
                paired[str(size)][arm.name] = {
                    m: paired_difference(values[m],
                                         [by_key[(reference, size, s)][m] for s in seeds])
                    for m in METRICS}
    return {"reference": reference, "sizes": sizes, "seeds": seeds, "runs": runs,
            "summary": summary, "paired": paired}


def interval(stats: dict) -> str:
    """``mean [low, high]`` to one decimal (no ``-0.0``); the mean alone for one seed."""
    mean, low, high = (None if v is None else round(v, 1) + 0.0
                       for v in (stats["mean"], stats["ci_low"], stats["ci_high"]))
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def markdown_table(results: dict[str, Any]) -> str:
    """Per size: metric means with 95% CIs per arm and paired differences; then every run."""
    reference, lines = results["reference"], []
    arm_names = list(results["arms"])
    others = [name for name in arm_names if name != reference]
    for size in results["sizes"]:
        summary, paired = results["summary"][str(size)], results["paired"][str(size)]
        lines += [f"Training pairs: {size}; held-out pairs: {results['held_out_pairs']}; "
                  f"seeds: {', '.join(map(str, results['seeds']))}. Mean [95% CI] over "
                  f"seeds; R@k in %, ranks lower is better.", "",
                  "| metric | " + " | ".join(arm_names) + " | "
                  + " | ".join(f"{name} - {reference}" for name in others) + " |",
                  "|---" * (1 + len(arm_names) + len(others)) + "|"]
        for metric in METRICS:
            cells = [interval(summary[name][metric]) for name in arm_names]
            cells += [interval(paired[name][metric]) for name in others]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| arm | pairs | seed | " + " | ".join(METRICS) + " | train s |",
              "|---" * (4 + len(METRICS)) + "|"]
    for run in results["runs"]:
        lines.append(f"| {run['arm']} | {run['size']} | {run['seed']} | "
                     + " | ".join(f"{run['metrics'][m]:.1f}" for m in METRICS)
                     + f" | {run['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """R@1 of every arm against training-set size (top) and the paired difference to
    the reference arm (bottom, when there are other arms), with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, reference = results["sizes"], results["reference"]
    others = [name for name in results["arms"] if name != reference]
    panels = [(results["summary"], list(results["arms"]), "{metric} (%)")]
    if others:
        panels.append((results["paired"], others, f"{{metric}} - {reference}"))
    figure, axes = plt.subplots(len(panels), 2, figsize=(10, 3.5 * len(panels)),
                                sharex=True, squeeze=False)
    for row, (table, names, label) in enumerate(panels):
        for column, metric in enumerate(("i2t_R@1", "t2i_R@1")):
            axis = axes[row, column]
            for name in names:
                stats = [table[str(size)][name][metric] for size in sizes]
                means = [s["mean"] for s in stats]
                errors = [[0 if s["ci_low"] is None else s["mean"] - s["ci_low"] for s in stats],
                          [0 if s["ci_high"] is None else s["ci_high"] - s["mean"]
                           for s in stats]]
                axis.errorbar(sizes, means, yerr=errors, marker="o", capsize=4, label=name)
            if row == 1:
                axis.axhline(0, color="grey", linewidth=1)
            axis.set_xscale("log", base=2)
            axis.set_ylabel(label.format(metric=metric))
            axis.legend()
            axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("training pairs")
    figure.suptitle("Held-out retrieval, mean and 95% CI over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_outputs(results: dict[str, Any], out: Path) -> str:
    """``results.json``, ``results.md`` and ``results.png`` in ``out``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(results)
    (out / "results.md").write_text(table)
    plot(results, out / "results.png")
    return table
