"""The analysis and report of the registered sweep (:mod:`mixgen_bench.sweep`): paired
differences to the reference, the screens' scores and selection, the Markdown tables, the
plot and the target check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mixgen_bench.metrics import R_AT_1, mean_confidence_interval, paired_difference
from mixgen_bench.report import load_runs


def paired(runs: list[dict], reference: str) -> dict[int, dict[str, dict]]:
    """``{size: {arm: {metric: paired difference to reference}}}`` over the seeds both
    the arm and the reference finished, for R@1 in both directions."""
    metrics = {(r["arm"], r["size"], r["seed"]): r["metrics"] for r in runs}
    table: dict[int, dict[str, dict]] = {}
    for arm, size in sorted({(r["arm"], r["size"]) for r in runs if r["arm"] != reference},
                            key=lambda key: (key[1], key[0])):
        seeds = sorted(s for a, n, s in metrics if a == arm and n == size
                       and (reference, size, s) in metrics)
        if seeds:
            table.setdefault(size, {})[arm] = {
                m: {**paired_difference([metrics[(arm, size, s)][m] for s in seeds],
                                        [metrics[(reference, size, s)][m] for s in seeds]),
                    "seeds": seeds}
                for m in R_AT_1}
    return table


def screen_scores(protocol: dict, setting: str, runs: list[dict]) -> dict[str, tuple]:
    """Each candidate arm's score: the mean paired difference of ``score_metric`` to the
    reference, averaged over the screen sizes; then the same for ``tie_metric``."""
    screen = protocol["settings"][setting]["screen"]
    table = paired([r for r in runs if r["size"] in screen["sizes"]
                    and r["seed"] in screen["seeds"]], protocol["reference"])
    candidates = [arm for arm in protocol["arms"] if arm not in protocol["always"]]
    missing = [f"{arm}@{size}" for arm in candidates for size in screen["sizes"]
               if len(table.get(size, {}).get(arm, {"i2t_R@1": {"seeds": []}})["i2t_R@1"]
                      ["seeds"]) < len(screen["seeds"])]
    if missing:
        raise ValueError(f"the screen of {setting!r} lacks runs of {', '.join(missing)}")
    scores = {}
    for arm in candidates:
        means = [[table[size][arm][m]["mean"] for size in screen["sizes"]]
                 for m in (protocol["score_metric"], protocol["tie_metric"])]
        scores[arm] = tuple(sum(values) / len(values) for values in means)
    return scores


def select_arms(scores: dict[str, tuple], count: int) -> list[str]:
    """The ``count`` arms of highest score (ties broken by the next entry, then name)."""
    return sorted(scores, key=lambda arm: (*(-s for s in scores[arm]), arm))[:count]


def reference_r1(runs: list[dict], reference: str) -> dict[int, dict[str, dict]]:
    """The reference arm's R@1 (mean and CI over seeds) at each size."""
    sizes = sorted({r["size"] for r in runs if r["arm"] == reference})
    return {size: {m: mean_confidence_interval([r["metrics"][m] for r in runs
                                                if r["arm"] == reference and r["size"] == size])
                   for m in R_AT_1} for size in sizes}


def cell(stats: dict | None) -> str:
    """``+1.2 [-0.3, 2.7]``; a dash where the run did not happen."""
    if stats is None:
        return "-"
    if stats["ci_low"] is None:
        return f"{stats['mean']:+.1f}"
    low, high = (round(stats[k], 1) + 0.0 for k in ("ci_low", "ci_high"))
    return f"{round(stats['mean'], 1) + 0.0:+.1f} [{low:.1f}, {high:.1f}]"


def markdown(setting: str, runs: list[dict], reference: str, arm_order: list[str]) -> str:
    """Per R@1 direction: the reference's R@1 and every arm's paired difference to it
    (mean [95% CI] over paired seeds), arms as rows and sizes as columns."""
    table, base = paired(runs, reference), reference_r1(runs, reference)
    sizes = sorted(base)
    arms = [a for a in arm_order if any(a in table.get(n, {}) for n in sizes)]
    lines = []
    for metric in R_AT_1:
        lines += [f"**{setting}, {metric}** (difference to {reference}, R@1 points; "
                  f"mean [95% CI] over paired seeds)", "",
                  "| arm | " + " | ".join(f"{n} pairs" for n in sizes) + " |",
                  "|---" * (1 + len(sizes)) + "|",
                  f"| {reference} (R@1, n seeds) | "
                  + " | ".join(f"{base[n][metric]['mean']:.1f} ({base[n][metric]['n']})"
                               for n in sizes)
                  + " |"]
        for arm in arms:
            lines.append(f"| {arm} | " + " | ".join(
                cell(table.get(n, {}).get(arm, {}).get(metric)) for n in sizes) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(tables: dict[str, dict], path: Path) -> None:
    """Paired R@1 difference to the reference against training pairs, one row per
    setting, image-to-text left and text-to-image right, 95% CIs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(tables), 2, figsize=(9, 2.8 * len(tables)),
                                squeeze=False)
    every_arm = sorted({arm for table in tables.values() for by_arm in table.values()
                        for arm in by_arm})  # one colour per arm in every panel
    for row, (setting, table) in enumerate(tables.items()):
        arms = sorted({arm for by_arm in table.values() for arm in by_arm})
        for column, metric in enumerate(R_AT_1):
            axis = axes[row, column]
            for arm in arms:
                sizes = [n for n in sorted(table) if arm in table[n]]
                if len(sizes) < len(table):
                    continue  # screen-only arms: the tables hold them
                stats = [table[n][arm][metric] for n in sizes]
                means = [s["mean"] for s in stats]
                errors = [[0 if s["ci_low"] is None else s["mean"] - s["ci_low"]
                           for s in stats],
                          [0 if s["ci_high"] is None else s["ci_high"] - s["mean"]
                           for s in stats]]
                axis.errorbar(sizes, means, yerr=errors, marker="o", capsize=3, label=arm,
                              color=f"C{every_arm.index(arm) % 10}")
            axis.axhline(0, color="grey", linewidth=1)
            axis.set_xscale("log", base=2)
            axis.set_title(f"{setting}: {metric} - baseline", fontsize=9)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        axes[row, 0].set_ylabel("R@1 points")
    for axis in axes[-1]:
        axis.set_xlabel("training pairs")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def target_check(tables: dict[str, dict]) -> dict[str, dict]:
    """Per arm, against the issue's target (95% CI lower bound >= 0 at every size and
    setting, mean gain >= +3 at the smallest size): the lowest mean R@1 difference at each
    setting's smallest size, the lowest CI lower bound anywhere, over both directions,
    and how many settings and (setting, size) cells the arm was measured in."""
    check: dict[str, dict] = {}
    for setting, table in tables.items():
        smallest = min(table)
        for size, by_arm in table.items():
            for arm, stats in by_arm.items():
                entry = check.setdefault(arm, {"smallest_mean": math.inf,
                                               "lowest_ci": math.inf, "settings": set(),
                                               "cells": 0})
                entry["settings"].add(setting)
                entry["cells"] += 1
                for metric in R_AT_1:
                    if stats[metric]["ci_low"] is not None:
                        entry["lowest_ci"] = min(entry["lowest_ci"], stats[metric]["ci_low"])
                    if size == smallest:
                        entry["smallest_mean"] = min(entry["smallest_mean"],
                                                     stats[metric]["mean"])
    return {arm: {**entry, "settings": sorted(entry["settings"])}
            for arm, entry in check.items()}


def target_markdown(check: dict[str, dict]) -> str:
    """The target check as a table, the arm of highest lowest-bound first."""
    lines = ["| arm | settings | cells | lowest mean at smallest size | lowest 95% CI bound |",
             "|---|---|---|---|---|"]
    for arm in sorted(check, key=lambda a: (-check[a]["lowest_ci"], a)):
        entry = check[arm]
        lines.append(f"| {arm} | {', '.join(entry['settings'])} | {entry['cells']} | "
                     f"{entry['smallest_mean']:+.1f} | {entry['lowest_ci']:+.1f} |")
    return "\n".join(lines) + "\n"


def report(protocol: dict, out: Path, results: Path, against: str | None = None) -> str:
    """Write ``results/<setting>.json`` (runs, paired differences, selection),
    ``results/<study>.md`` and ``<study>.png``, ``<study>`` being the name of the folder
    that holds ``results``; return the Markdown."""
    results.mkdir(parents=True, exist_ok=True)
    reference, sections, tables = protocol["reference"], [], {}
    for setting, spec in protocol["settings"].items():
        runs = load_runs(out / setting)
        if not runs:
            sections.append(f"**{setting}**: no run finished.\n")
            continue
        record: dict[str, Any] = {"runs": runs, "paired": paired(runs, reference)}
        if spec["screen"] is not None:
            try:
                scores = screen_scores(protocol, setting, runs)
            except ValueError as error:  # a screen still running: report what finished
                sections.append(f"**{setting}**: {error}.\n")
            else:
                record["screen_scores"] = scores
                record["selected"] = select_arms(scores, spec.get("select", protocol["select"]))
        tables[setting] = record["paired"]
        (results / f"{setting}.json").write_text(json.dumps(record, indent=1))
        sections.append(markdown(setting, runs, reference, list(protocol["arms"])))
        if against is not None:  # every arm against another arm than the reference
            sections.append(markdown(setting, runs, against, list(protocol["arms"])))
    check = target_check(tables)
    (results / "target.json").write_text(json.dumps(check, indent=1))
    sections += ["**Target check** (R@1 differences to the reference over both directions; "
                 "target: lowest bound >= 0 and lowest mean at the smallest size >= +3)", "",
                 target_markdown(check)]
    text = "\n".join(sections)
    study = results.resolve().parent
    (results / f"{study.name}.md").write_text(text)
    plot(tables, study / f"{study.name}.png")
    return text
