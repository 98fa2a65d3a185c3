"""Study v2: MixGen judged at each arm's best validation point, when fine-tuning and when
pre-training (the paper's regime). Runs and reports ``benchmarks/study_v2/protocol.json``.

Every run is one call of the retrieval harness (``clip_retrieval.run_benchmark``) with
``--select best-val``; each part of the protocol's ``order`` is resumable:

- ``finetune:N``: every fine-tuning arm at N pairs, from the plain pretrained base;
- ``pretrain:N``: bases pre-trained on N shapes pairs by each pre-training arm (kept);
- ``after_pretrain``: each kept base fine-tuned without MixGen at every size of the
  setting, paired by seed with the base it starts from.

    python -m mixgen_bench.study run --out study_out [--only finetune:128,pretrain:16384]
    python -m mixgen_bench.study report --out study_out
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mixgen_bench.clip_retrieval import run_benchmark
from mixgen_bench.metrics import mean_confidence_interval, paired_difference
from mixgen_bench.options import parse_options
from mixgen_bench.report import MIN_SEEDS, curve_plot, interval
from mixgen_bench.sweep_report import cell

PROTOCOL = Path("benchmarks") / "study_v2" / "protocol.json"
R_AT_1 = ("i2t_R@1", "t2i_R@1")
LATE = 0.75
"""A run whose best validation point lies after this share of its steps may still have
been rising when its budget ended."""
RISING = 1.0
"""...and was, if its best validation score beats its best before that share by more than
this many points (less: flat at the end, as the cosine schedule leaves it)."""


# ----------------------------------------------------------------------------- running
def harness_options(protocol: dict, setting: str, size: int, seeds: list[int], arms: list[str],
                    out: Path, **overrides: Any) -> argparse.Namespace:
    """The harness options of one setting at one size (resuming finished runs)."""
    values = {**protocol["common"], **protocol["settings"][setting]["options"], **overrides}
    values["steps"] = values.pop("steps_by_size")[str(size)]
    argv = []
    for key, value in values.items():
        flag = f"--{key.replace('_', '-')}"
        argv += [flag] if value is True else [f"{flag}={value}"]
    argv += ["--arms", ",".join(arms), "--reference", arms[0], "--sizes", str(size),
             "--seeds", ",".join(map(str, seeds)), "--out", str(out), "--resume"]
    options = parse_options(argv)
    options.arm_specs = {name: protocol["arms"][name] for name in arms}
    return options


def base_runs(protocol: dict, out: Path) -> list[dict]:
    """The finished pre-training runs whose kept checkpoint the next setting starts from."""
    spec = protocol["settings"]["after_pretrain"]
    return [run for folder in sorted(out.glob(f"{spec['bases_from']}-n*"))
            for run in load_runs(folder) if run["checkpoint"]]


def run_part(protocol: dict, part: str, out: Path, seeds: list[int] | None = None) -> None:
    """Train one part of the protocol's ``order`` (only ``seeds`` of it, for a pilot)."""
    setting, _, size = part.partition(":")
    spec = protocol["settings"][setting]
    if setting != "after_pretrain":
        run_benchmark(harness_options(protocol, setting, int(size), seeds or spec["seeds"],
                                      spec["arms"], out / f"{setting}-n{size}"))
        return
    calls = [harness_options(protocol, setting, n, [base["seed"]], spec["arms"],
                             out / f"{setting}-n{n}" / f"{base['arm']}-s{base['seed']}",
                             jobs=1, pretrained=base["checkpoint"])
             for base in base_runs(protocol, out) for n in spec["sizes"]]
    with ThreadPoolExecutor(protocol["common"]["jobs"]) as pool:  # one run per call
        list(pool.map(run_benchmark, calls))


# ----------------------------------------------------------------------------- analysis
def load_runs(folder: Path) -> list[dict]:
    """Every finished run record under ``folder`` (one harness output or several)."""
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("runs/*.json"))]


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


def report(protocol: dict, out: Path, results: Path) -> str:
    """Markdown tables of every cell (``Not run.`` where nothing finished), the runs'
    JSON, and a validation-curve plot per fine-tuning size."""
    reference, lines = protocol["reference"], []
    results.mkdir(parents=True, exist_ok=True)
    finetune = protocol["settings"]["finetune"]
    lines += ["## Fine-tuning regime (from the plain base, digit scenes)", ""]
    for size in finetune["sizes"]:
        runs = load_runs(out / f"finetune-n{size}")
        lines += cell_table(runs, reference, f"{size} pairs, "
                            f"{finetune['options']['steps_by_size'][str(size)]} steps",
                            finetune["arms"])
        if runs:
            curve_plot({"sizes": [size], "arms": finetune["arms"], "seeds": finetune["seeds"],
                        "runs": runs}).savefig(results / f"curves-n{size}.png", dpi=100)
    lines += ["## Pre-training regime", "",
              "(a) The bases on held-out shapes, no fine-tuning (paired by pre-training seed).",
              ""]
    pre = protocol["settings"]["pretrain"]
    lines += cell_table(load_runs(out / f"pretrain-n{pre['sizes'][0]}"), reference,
                        f"pre-training on {pre['sizes'][0]} shapes pairs", pre["arms"])
    lines += ["(b) Each base fine-tuned on digit scenes without MixGen; arm = the base's "
              "pre-training arm, paired by seed.", ""]
    after = protocol["settings"]["after_pretrain"]
    every = []
    for size in after["sizes"]:
        runs = [{**r, "arm": path.parent.name.rsplit("-s", 1)[0]}
                for path in sorted((out / f"after_pretrain-n{size}").glob("*/runs"))
                for r in load_runs(path.parent)]
        every += runs
        lines += cell_table(runs, reference, f"fine-tuned on {size} pairs, "
                            f"{after['options']['steps_by_size'][str(size)]} steps",
                            pre["arms"])
    text = "\n".join(lines)
    (results / "study_v2.md").write_text(text)
    (results / "after_pretrain.json").write_text(json.dumps(every, indent=1))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--protocol", type=Path, default=PROTOCOL)
    parser.add_argument("--out", type=Path, default=Path("study_out"))
    parser.add_argument("--results", type=Path, help="report's folder (default: the "
                        "protocol's folder / results)")
    parser.add_argument("--only", help="comma-separated parts (default: the protocol's order)")
    parser.add_argument("--seeds", help="run: only these comma-separated seeds (a pilot)")
    options = parser.parse_args(argv)
    protocol = json.loads(options.protocol.read_text())
    if options.command == "run":
        for part in options.only.split(",") if options.only else protocol["order"]:
            started = time.perf_counter()
            run_part(protocol, part, options.out,
                     options.seeds and [int(s) for s in options.seeds.split(",")])
            print(time.strftime("%H:%M:%S"), part, f"{time.perf_counter() - started:.0f} s",
                  flush=True)
    else:
        print(report(protocol, options.out,
                     options.results or options.protocol.parent / "results"))


if __name__ == "__main__":
    main()
