"""Where does MixGen help and where does it hurt? Run and report the registered sweep
(the report's analysis: :mod:`mixgen_bench.sweep_report`).

``benchmarks/sweep/protocol.json`` fixes the arms, settings, sizes, seeds and training
budget before anything runs; ``benchmarks/sweep/PROTOCOL.md`` explains it. Stage one
(``screen``) trains every arm at two sizes; the selection rule then picks the arms that
stage two (``final``) trains at every size, next to the baseline and MixGen's default.
Every run is one call of the retrieval harness (``clip_retrieval.run_benchmark``), so a
run of an arm, size and seed is the same run in both stages and is trained once.

    python -m mixgen_bench.sweep run --out sweep_out      # train (resumable)
    python -m mixgen_bench.sweep report --out sweep_out   # tables, plot, results JSON

(from the repository root, where ``benchmarks/sweep/`` holds the protocol and results)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from mixgen_bench.clip_retrieval import run_benchmark
from mixgen_bench.protocol import harness_options as shared_options
from mixgen_bench.protocol import main_of
from mixgen_bench.report import load_runs
from mixgen_bench.sweep_report import report, screen_scores, select_arms

PROTOCOL = Path("benchmarks") / "sweep" / "protocol.json"
"""The registered protocol, relative to the repository root."""
FIXED = {"budget": "fixed"}
"""The sweep and study v2 were registered with a fixed budget per size (before the harness
chose budgets on validation data): their runners keep it."""


# ----------------------------------------------------------------------------- running
def off_epoch(fraction: float, size: int, steps: int, batch_size: int) -> int:
    """The epoch from which mixing stops so that it runs for ``fraction`` of the steps,
    rounded down to whole epochs and at least one epoch of mixing."""
    epochs = steps / (size // batch_size)
    return max(1, math.floor(fraction * epochs))


def harness_arms(protocol: dict, names: list[str], size: int) -> dict[str, dict]:
    """The harness's arm specs for ``names`` at ``size`` (``off_fraction`` resolved)."""
    common, specs = protocol["common"], {}
    for name in names:
        spec = dict(protocol["arms"][name])
        fraction = spec.pop("off_fraction", None)
        if fraction is not None:
            spec["off_epoch"] = off_epoch(fraction, size, common["steps"], common["batch_size"])
        specs[name] = spec
    return specs


def harness_options(protocol: dict, setting: str, names: list[str], size: int,
                    seeds: list[int], out: Path) -> argparse.Namespace:
    """The harness options of one setting, arm list and size (resuming finished runs)."""
    values = {**FIXED, **protocol["common"], **protocol["settings"][setting]["options"]}
    by_size = values.pop("steps_by_size", None)  # a budget that grows with the data
    if by_size is not None:
        values["steps"] = by_size[str(size)]
    return shared_options(values, harness_arms(protocol, names, size), protocol["reference"],
                          size, seeds, out / setting)


def stage_arms(protocol: dict, setting: str, stage: str, out: Path) -> list[str]:
    """Every arm in a screen; the stage's own ``arms`` where it lists them; else the fixed
    arms and the ones the screens selected."""
    if stage == "screen":
        return list(protocol["arms"])
    spec = protocol["settings"][setting]
    if "arms" in spec[stage]:  # a stage of fixed arms
        return spec[stage]["arms"]
    sources = spec.get("arms_from", [setting])
    count = spec.get("select", protocol["select"])
    screens = [screen_scores(protocol, source, load_runs(out / source)) for source in sources]
    pooled = {arm: tuple(sum(s[arm][k] for s in screens) / len(screens) for k in (0, 1))
              for arm in screens[0]}
    return [*protocol["always"], *select_arms(pooled, count)]


def run_stage(protocol: dict, setting: str, stage: str, out: Path, log=print,
              sizes: list[int] | None = None) -> None:
    """Train the runs of one stage of one setting, one harness call per size (only
    ``sizes`` of the stage's, when given: the order of work, never what is trained)."""
    plan = protocol["settings"][setting][stage]
    names = stage_arms(protocol, setting, stage, out)
    for size in plan["sizes"]:
        if sizes is not None and size not in sizes:
            continue
        started = time.perf_counter()
        run_benchmark(harness_options(protocol, setting, names, size, plan["seeds"],
                                              out))
        log(f"{setting}:{stage} n={size} arms={','.join(names)} "
            f"{time.perf_counter() - started:.0f} s")


def sweep_options(parser: argparse.ArgumentParser) -> None:
    """The sweep's own options: parts are ``setting:stage`` steps."""
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")],
                        help="run: these comma-separated sizes now (default: all of each "
                        "stage's)")
    parser.add_argument("--against", help="report: also every arm's paired difference to "
                        "this arm")


main = main_of(
    __doc__, PROTOCOL,
    lambda protocol, step, options: run_stage(
        protocol, *step.split(":"), options.out,
        log=lambda line: print(time.strftime("%H:%M:%S"), line, flush=True),
        sizes=options.sizes),
    lambda protocol, options: report(protocol, options.out, options.results, options.against),
    sweep_options, out="sweep_out")


if __name__ == "__main__":
    main()
