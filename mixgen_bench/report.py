"""The harness's report: per size and arm, each metric's mean with a 95% confidence
interval over seeds and its paired difference (same seed) to the reference arm, as
``results.json``, a Markdown table (``results.md``) and a plot (``results.png``).

Intervals are Student t intervals over seeds, shown from :data:`MIN_SEEDS` seeds on and
clipped to the range the metric can take (:func:`metric_bounds`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixgen_bench.metrics import (
    MIN_SEEDS,
    R_AT_1,
    mean_confidence_interval,
    paired_difference,
    student_t_quantile,
)
from mixgen_bench.options import Arm
from mixgen_bench.plots import curve_plot, plot

METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "i2t_mean_rank", "i2t_median_rank",
           "t2i_R@1", "t2i_R@5", "t2i_R@10", "t2i_mean_rank", "t2i_median_rank")
INTERVAL_METHOD = (f"Student t interval of the mean over seeds (of the per-seed "
                   f"differences for a paired difference), from {MIN_SEEDS} seeds on, clipped "
                   f"to the metric's range")


def load_runs(folder: Path) -> list[dict]:
    """Every finished run's record under ``folder``: one harness output folder
    (``runs/*.json``) or several below it."""
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("runs/*.json"))]


def metric_bounds(num_images: int, num_texts: int) -> dict[str, tuple[float, float]]:
    """The range of each metric on a held-out set: R@k in [0, 100], an image's rank among
    ``num_texts`` captions, a caption's among ``num_images`` images."""
    candidates = {"i2t": num_texts, "t2i": num_images}
    return {m: (0.0, 100.0) if "_R@" in m else (1.0, float(candidates[m[:3]])) for m in METRICS}


def summarize(runs: list[dict], arms: list[Arm], sizes: list[int], seeds: list[int],
              reference: str, bounds: dict[str, tuple[float, float]],
              select: str = "best-val") -> dict[str, Any]:
    """Per size and arm: each metric's mean and 95% CI over seeds, and its paired
    difference (same seed) to the reference arm, intervals clipped to ``bounds``; of the
    selected checkpoints (``summary``, ``paired``) and of the other choice, the last or
    the best validation epoch (``alternative``)."""
    results = tables(runs, arms, sizes, seeds, reference, bounds, "metrics")
    results["select"] = select
    alternative = "final" if select == "best-val" else "best_val"
    results["alternative"] = {
        "select": alternative.replace("_", "-"),
        **tables(runs, arms, sizes, seeds, reference, bounds, f"metrics_{alternative}")}
    results["selected_epochs"] = {
        str(size): {arm.name: [by_run(runs, arm.name, size, s)["selected_epoch"]
                               for s in seeds] for arm in arms} for size in sizes}
    results.update(runs=runs, interval={"method": INTERVAL_METHOD, "min_seeds": MIN_SEEDS,
                                        "bounds": bounds})
    return results


def by_run(runs: list[dict], arm: str, size: int, seed: int) -> dict:
    return next(r for r in runs if (r["arm"], r["size"], r["seed"]) == (arm, size, seed))


def tables(runs: list[dict], arms: list[Arm], sizes: list[int], seeds: list[int],
           reference: str, bounds: dict[str, tuple[float, float]], key: str) -> dict[str, Any]:
    """``summary`` and ``paired`` of the runs' ``key`` metrics."""
    by_key = {(r["arm"], r["size"], r["seed"]): r[key] for r in runs}
    spans = {m: (low - high, high - low) for m, (low, high) in bounds.items()}
    summary: dict[str, dict] = {}
    paired: dict[str, dict] = {}
    for size in sizes:
        summary[str(size)], paired[str(size)] = {}, {}
        for arm in arms:
            values = {m: [by_key[(arm.name, size, s)][m] for s in seeds] for m in METRICS}
            summary[str(size)][arm.name] = {
                m: {**mean_confidence_interval(v, bounds=bounds[m], min_n=MIN_SEEDS),
                    "values": v}
                for m, v in values.items()}
            if arm.name != reference:
                paired[str(size)][arm.name] = {
                    m: paired_difference(values[m],
                                         [by_key[(reference, size, s)][m] for s in seeds],
                                         bounds=spans[m], min_n=MIN_SEEDS)
                    for m in METRICS}
    return {"reference": reference, "sizes": sizes, "seeds": seeds, "summary": summary,
            "paired": paired}


def interval(stats: dict) -> str:
    """``mean [low, high]`` to one decimal (no ``-0.0``); the mean alone without interval."""
    mean, low, high = (None if v is None else round(v, 1) + 0.0
                       for v in (stats["mean"], stats["ci_low"], stats["ci_high"]))
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def intervals_note(seeds: int) -> str:
    """What the brackets are, or why there are none."""
    if seeds >= MIN_SEEDS:
        return "Mean [95% CI] over seeds (Student t, clipped to the metric's range)"
    width = (f": with 2 a 95% t interval reaches {student_t_quantile(0.975, 1):.1f} standard "
             f"errors either side of the mean" if seeds == 2 else "")
    return (f"Means over seeds, no confidence intervals: they need at least {MIN_SEEDS} "
            f"seeds{width}")


def verdicts(results: dict[str, Any], size: int) -> list[str]:
    """One sentence per other arm and R@1 metric: better, worse, no difference seen, or
    not enough seeds to tell."""
    reference, lines = results["reference"], []
    for name, metrics in results["paired"][str(size)].items():
        for metric in R_AT_1:
            stats = metrics[metric]
            head = f"- {name} - {reference}, {metric}: {interval(stats)} points:"
            if stats["ci_low"] is None:
                lines.append(f"{head} not enough seeds to tell (give at least {MIN_SEEDS}).")
            elif stats["ci_low"] > 0:
                lines.append(f"{head} {name} is better (the 95% CI lies above 0).")
            elif stats["ci_high"] < 0:
                lines.append(f"{head} {name} is worse (the 95% CI lies below 0).")
            else:
                lines.append(f"{head} no difference seen (the 95% CI holds 0); more seeds or "
                             f"held-out pairs narrow it.")
    return lines


def markdown_table(results: dict[str, Any]) -> str:
    """Per size: metric means with 95% CIs per arm and paired differences, and a verdict
    per arm; then every run."""
    reference, lines = results["reference"], []
    arm_names = list(results["arms"])
    others = [name for name in arm_names if name != reference]
    for size in results["sizes"]:
        summary, paired = results["summary"][str(size)], results["paired"][str(size)]
        lines += [f"Training pairs: {size}; held-out pairs: {results['held_out_pairs']}; "
                  f"seeds: {', '.join(map(str, results['seeds']))}. "
                  f"{intervals_note(len(results['seeds']))}. R@k in %, ranks lower is "
                  f"better.", "",
                  "| metric | " + " | ".join(arm_names) + " | "
                  + " | ".join(f"{name} - {reference}" for name in others) + " |",
                  "|---" * (1 + len(arm_names) + len(others)) + "|"]
        for metric in METRICS:
            cells = [interval(summary[name][metric]) for name in arm_names]
            cells += [interval(paired[name][metric]) for name in others]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines += ["", *verdicts(results, size), *capped_lines(results, size), "",
                  *budget_lines(results, size), *selection_lines(results, size), ""]
    lines += ["| arm | pairs | seed | epoch | " + " | ".join(METRICS) + " | train s | eval s |",
              "|---" * (6 + len(METRICS)) + "|"]
    for run in results["runs"]:
        lines.append(f"| {run['arm']} | {run['size']} | {run['seed']} | "
                     f"{run['selected_epoch']}/{run['epochs']} | "
                     + " | ".join(f"{run['metrics'][m]:.1f}" for m in METRICS)
                     + f" | {run['train_seconds']:.0f} | {run['eval_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def selection_lines(results: dict[str, Any], size: int) -> list[str]:
    """Which checkpoints the table reports, each arm's selected epochs, the R@1 paired
    differences at the other choice (best validation point or last epoch), and the share
    of the runs' time the evaluations took."""
    select, other = results["select"], results["alternative"]
    runs = [r for r in results["runs"] if r["size"] == size]
    budgets = {r["arm"]: r["epochs"] for r in runs}
    chosen = "; ".join(f"{name} {', '.join(map(str, picked))} of {budgets[name]}"
                       for name, picked in results["selected_epochs"][str(size)].items())
    which = (f"best validation score (mean of i2t and t2i R@1 on "
             f"{results['validation_pairs']} validation pairs)" if select == "best-val"
             else "the last epoch")
    lines = [f"Checkpoints: {which}; selected epochs, per seed: {chosen}."]
    reference = results["reference"]
    cells = [f"{name} - {reference} {metric} {interval(stats[metric])}"
             for name, stats in other["paired"][str(size)].items()
             for metric in R_AT_1]
    if cells:
        where = ("the last epoch" if other["select"] == "final"
                 else "each run's best validation epoch")
        lines.append(f"At {where} instead: " + "; ".join(cells) + ".")
    spent = sum(r["eval_seconds"] for r in runs)
    total = sum(r["seconds"] for r in runs)
    if total:
        lines.append(f"Evaluations took {100 * spent / total:.0f}% of the runs' time "
                     f"({spent:.0f} of {total:.0f} s).")
    return lines


def budget_lines(results: dict[str, Any], size: int) -> list[str]:
    """Each arm's budget ladder (``--budget auto``): its rungs with their best validation
    scores and epochs, the chosen budget, whether it was capped, and what it cost."""
    ladders = results.get("budgets", {}).get(str(size))
    if not ladders:
        return []
    some = next(iter(ladders.values()))
    lines = [f"Budgets chosen on validation data (--budget auto): each arm's ladder on seed "
             f"{results['seeds'][0]}, doubling from {some['start']} epochs until a rung gains "
             f"no more than {some['tol']:g} points or reaches {some['cap']} epochs.", "",
             "| arm | rungs: epochs (best validation score, at epoch) | budget | capped | "
             "ladder cost |", "|---|---|---|---|---|"]
    for name, ladder in ladders.items():
        rungs = ", ".join(f"{rung['epochs']} ({rung['best_val']:.1f}, at {rung['best_val_epoch']})"
                          for rung in ladder["rungs"])
        lines.append(f"| {name} | {rungs} | {ladder['chosen_epochs']} epochs | "
                     f"{'yes' if ladder['capped'] else 'no'} | {ladder['runs']} runs, "
                     f"{ladder['seconds']:.0f} s |")
    return [*lines, ""]


def capped_lines(results: dict[str, Any], size: int) -> list[str]:
    """A warning per arm whose ladder hit ``--max-epochs`` still improving."""
    ladders = results.get("budgets", {}).get(str(size), {})
    return [f"- capped: {name} was still improving at --max-epochs {ladder['cap']}; its "
            f"numbers are taken before its peak, so the differences it enters may change "
            f"with a higher cap." for name, ladder in ladders.items() if ladder["capped"]]


def write_outputs(results: dict[str, Any], out: Path) -> str:
    """``results.json``, ``results.md``, ``results.png`` and, where runs have learning
    curves, ``validation.png`` in ``out``; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown_table(results)
    (out / "results.md").write_text(table)
    plot(results).savefig(out / "results.png", dpi=100)
    if any(run["curve"] for run in results["runs"]):
        curve_plot(results).savefig(out / "validation.png", dpi=100)
    return table
