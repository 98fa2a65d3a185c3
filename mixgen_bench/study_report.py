"""The tables of a study's cells: each arm's paired R@1 difference to the reference at
best-val and at the last epoch, the detectable difference, the selected steps and the runs
that peaked late (still rising when their budget ended)."""

from __future__ import annotations

from mixgen_bench.metrics import MIN_SEEDS, R_AT_1, mean_confidence_interval, paired_difference
from mixgen_bench.report import interval
from mixgen_bench.sweep_report import cell

LATE = 0.75
"""A run whose best validation point lies after this share of its steps may still have
been rising when its budget ended."""
RISING = 1.0
"""...and was, if its best validation score beats its best before that share by more than
this many points (less: flat at the end, as the cosine schedule leaves it)."""


def paired_cells(runs: list[dict], reference: str, key: str) -> dict[str, dict[str, dict]]:
    """``{arm: {metric: paired difference to reference}}`` of the ``key`` metrics over the
    seeds both finished."""
    metrics = {(r["arm"], r["seed"]): r[key] for r in runs}
    table: dict[str, dict[str, dict]] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs if r["arm"] != reference):
        seeds = sorted(s for a, s in metrics if a == arm and (reference, s) in metrics)
        if seeds:
            table[arm] = {m: {**paired_difference([metrics[(arm, s)][m] for s in seeds],
                                                  [metrics[(reference, s)][m] for s in seeds],
                                                  min_n=MIN_SEEDS), "seeds": seeds}
                          for m in R_AT_1}
    return table


def half_width(stats: dict) -> str:
    """The 95% interval's half-width: the smallest difference the cell could detect."""
    return "-" if stats["ci_low"] is None else f"{(stats['ci_high'] - stats['ci_low']) / 2:.1f}"


def peak_share(run: dict) -> float:
    """Where the run's best validation point lies, as a share of its steps."""
    best = next(p for p in run["curve"] if p["epoch"] == run["best_val_epoch"])
    return best["step"] / run["steps"]


def still_rising(run: dict) -> bool:
    """Whether the run gained more than :data:`RISING` points of validation score in the
    last quarter of its steps over its best before."""
    early = [p["val_score"] for p in run["curve"] if p["step"] <= LATE * run["steps"]]
    best = max(p["val_score"] for p in run["curve"])
    return bool(early) and best - max(early) > RISING


def cell_table(runs: list[dict], reference: str, title: str,
               order: list[str] | None = None) -> list[str]:
    """One cell's Markdown: the reference's R@1, every arm's paired difference at best-val
    and at the last epoch with the detectable difference, selected steps, late peaks; arms
    in ``order`` (default: as the runs come)."""
    base = [r for r in runs if r["arm"] == reference]
    if not base:
        return [f"### {title}", "", "Not run.", ""]
    lines = [f"### {title}", "",
             f"{reference}, R@1 at best-val (mean [95% CI] over {len(base)} "
             f"seed{'s' * (len(base) > 1)}): "
             + "; ".join(f"{m} {cell_mean([r['metrics'][m] for r in base])}" for m in R_AT_1)
             + ".", "",
             "| arm | seeds | i2t R@1 diff, best-val | t2i, best-val | i2t, last epoch | "
             "t2i, last epoch | detectable (i2t / t2i) | selected steps | peaks after 3/4 "
             "(still rising) |",
             "|---|---|---|---|---|---|---|---|---|"]
    best, final = (paired_cells(runs, reference, k) for k in ("metrics", "metrics_final"))
    present = dict.fromkeys(r["arm"] for r in runs)
    for arm in [a for a in order if a in present] if order else present:
        mine = [r for r in runs if r["arm"] == arm]
        steps = ", ".join(str(r["steps"] * r["selected_epoch"] // r["epochs"]) for r in mine)
        late = (f"{sum(peak_share(r) > LATE for r in mine)} of {len(mine)} "
                f"({sum(still_rising(r) for r in mine)})")
        if arm == reference:
            lines.append(f"| {arm} | {len(mine)} | | | | | | {steps} of {mine[0]['steps']} "
                         f"| {late} |")
            continue
        b, f = best[arm], final[arm]
        lines.append(f"| {arm} | {len(b['i2t_R@1']['seeds'])} | {cell(b['i2t_R@1'])} | "
                     f"{cell(b['t2i_R@1'])} | {cell(f['i2t_R@1'])} | {cell(f['t2i_R@1'])} | "
                     f"{half_width(b['i2t_R@1'])} / {half_width(b['t2i_R@1'])} | "
                     f"{steps} of {mine[0]['steps']} | {late} |")
    return [*lines, ""]


def cell_mean(values: list[float]) -> str:
    """``mean [95% CI]`` of R@1 values (the mean alone below :data:`MIN_SEEDS` seeds)."""
    return interval(mean_confidence_interval(values, bounds=(0.0, 100.0), min_n=MIN_SEEDS))
