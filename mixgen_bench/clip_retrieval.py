"""Does MixGen help CLIP retrieval on this data with this model? Measure it, with error bars.

Trains an open_clip model once per (arm, training-set size, seed) through
``mixgen.open_clip_train`` under the same seed, initial weights and data order, evaluates
each run's learning curve on validation pairs and its selected checkpoint on held-out
image-to-text and text-to-image retrieval. With ``--budget auto`` (the default) each arm's
training length is chosen on validation data by a budget ladder (:mod:`mixgen_bench.ladder`),
so every arm is judged at its own best budget; ``--budget fixed`` trains every arm for
``--epochs``. Arms are named sets of options: the ``baseline`` trains without MixGen,
``mixgen`` with the options given on the command line; a JSON config file (``--config``)
can define more. Prints and writes a Markdown table of per-seed numbers, means with 95%
confidence intervals and the paired difference of every arm to the reference arm, plus
``results.json`` and a PNG plot.

    mixgen-clip-retrieval                        # the default comparison
    python -m mixgen_bench --nproc-per-node 2    # each run under torchrun

Modules: ``options`` (command line, arms), ``sources`` (data), ``models`` (model names,
evaluation), ``runs`` (one trainer call per run), ``ladder`` (budgets), ``progress``,
``report``; this one validates the options, plans the runs, executes them and collects
the results. ``run_benchmark(options)`` is the entry point for study runners. Bad input
ends in one line and exit status 2 (``errors``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from mixgen_bench.base import base_checkpoint
from mixgen_bench.errors import UsageError, usage_errors
from mixgen_bench.ladder import CAP_FACTOR, Ladder
from mixgen_bench.models import check_pretrained, model_config, prepare_model
from mixgen_bench.options import PROG, Arm, int_list, parse_options, resolve_arms
from mixgen_bench.progress import Progress
from mixgen_bench.report import metric_bounds, summarize, write_outputs
from mixgen_bench.runs import GpuSets, Run, budget, run_one
from mixgen_bench.sources import load_data, write_training_data


def run_benchmark(options: argparse.Namespace) -> dict[str, Any]:
    """Train every arm at every size with every seed, ``--jobs`` runs at a time, and return
    the results: with ``--budget auto`` each arm at the budget its ladder chose on
    validation data (:mod:`mixgen_bench.ladder`), with ``fixed`` at ``--epochs``. Each
    finished run is recorded in ``out/runs`` as it ends, so ``--resume`` skips it. Bad
    options, files and data raise :class:`UsageError` before any run."""
    arms, sizes, seeds = validate(options)
    if options.threads:
        torch.set_num_threads(options.threads)
    started = time.perf_counter()
    if options.pretrain_data is not None:
        options.pretrained = base_checkpoint(options)
    model = prepare_model(options, options.out / "models")
    check_pretrained(model, options)
    train_all, validation, held_out = load_data(options, max(sizes))
    skipped = train_all.skipped + held_out.skipped
    if skipped:
        print(f"skipped {len(skipped)} pairs whose image does not decode (first: "
              f"{skipped[0]}); the list is in results.json", file=sys.stderr)
    tables = write_training_data(train_all, sizes, options.out / "data")
    first, ladders = plan(arms, sizes, seeds, options)

    def train_and_evaluate(run: Run, gpu_sets: GpuSets) -> dict[str, Any]:
        return run_one(run, options, model, tables[run.size], validation, held_out, gpu_sets)

    records = execute(first, ladders, seeds, options, train_and_evaluate)
    texts, _ = held_out.retrieval_texts()
    results = summarize([records[(arm.name, size, seed)]
                         for size in sizes for seed in seeds for arm in arms],
                        arms, sizes, seeds, options.reference,
                        metric_bounds(len(held_out), len(texts)), options.select)
    results["budgets"] = {str(size): {arm.name: ladders[(arm.name, size)].summary()
                                      for arm in arms}
                          for size in sizes} if ladders else {}
    results["options"] = {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(options).items()}
    results["arms"] = {arm.name: asdict(arm) for arm in arms}
    results["model"] = model
    results["held_out_pairs"] = len(held_out)
    results["validation_pairs"] = 0 if validation is None else len(validation)
    results["skipped"] = skipped
    results["world_size"] = options.nproc_per_node
    results["wall_seconds"] = time.perf_counter() - started
    return results


def validate(options: argparse.Namespace) -> tuple[list[Arm], list[int], list[int]]:
    """Check the options that need no data (arms, sizes, seeds, budgets, evaluation) and
    return the arms, sizes and seeds; fill in the model's image size."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("the harness starts its own processes: run it once and give "
                         "--nproc-per-node to train each run under torchrun")
    if options.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {options.jobs}")
    if options.val_size < 0 or options.eval_points < 1:
        raise UsageError(f"--val-size must be >= 0 and --eval-points >= 1, got "
                         f"{options.val_size} and {options.eval_points}")
    if "--siglip" in shlex.split(options.trainer_args):
        raise UsageError("give --siglip, not --trainer-args=--siglip: the harness builds the "
                         "models it evaluates with SigLIP's logit bias")
    if options.val_size == 0 and options.select == "best-val":
        raise UsageError("--select best-val needs validation pairs: give --val-size > 0, "
                         "or --select final")
    if options.val_size == 0 and climbs(options):
        raise UsageError("--budget auto chooses budgets on validation pairs: give "
                         "--val-size > 0, or --budget fixed")
    arms = resolve_arms(options)
    if options.image_size is None:
        options.image_size = model_config(options.model)["vision_cfg"]["image_size"]
    sizes, seeds = int_list(options.sizes, "--sizes"), int_list(options.seeds, "--seeds")
    for size in sizes:  # a bad budget fails before any data is written
        start, _ = budget(size, options)
        if climbs(options):
            try:
                Ladder("", size, start, max_epochs(start, options), options.budget_tol)
            except ValueError as error:
                raise UsageError(str(error)) from None
    return arms, sizes, seeds


def climbs(options: argparse.Namespace) -> bool:
    """Whether each arm climbs a budget ladder (``--budget auto``, unless ``--steps 0``
    only evaluates)."""
    return options.budget == "auto" and options.steps != 0


def max_epochs(start: int, options: argparse.Namespace) -> int:
    """``--max-epochs``, by default :data:`CAP_FACTOR` times the first rung."""
    return options.max_epochs if options.max_epochs is not None else CAP_FACTOR * start


def plan(arms: list[Arm], sizes: list[int], seeds: list[int],
         options: argparse.Namespace) -> tuple[list[Run], dict[tuple[str, int], Ladder]]:
    """The runs to start with, and the ladders by (arm, size) (none with ``--budget
    fixed``): with a fixed budget every run; with ladders the first rung of each, on the
    first seed (the next rungs and the other seeds follow as rungs end)."""
    if not climbs(options):
        return [Run(arm, size, seed, budget(size, options)[0])
                for size in sizes for seed in seeds for arm in arms], {}
    ladders = {}
    for size in sizes:
        start, _ = budget(size, options)
        for arm in arms:
            ladders[(arm.name, size)] = Ladder(arm.name, size, start,
                                               max_epochs(start, options), options.budget_tol)
    return [Run(arm, size, seeds[0], budget(size, options)[0], on_ladder=True)
            for size in sizes for arm in arms], ladders


def execute(first: list[Run], ladders: dict[tuple[str, int], Ladder], seeds: list[int],
            options: argparse.Namespace,
            train_and_evaluate: Callable[[Run, GpuSets], dict[str, Any]],
            ) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Run ``first`` and what the ladders add as their rungs end, ``--jobs`` at a time;
    return the record of each (arm, size, seed) at its budget. A run recorded in
    ``out/runs`` is reused with ``--resume`` (a ladder replays its rungs from them)."""
    chosen: dict[tuple[str, int, int], dict[str, Any]] = {}
    rungs: dict[tuple[str, int, int], dict[str, Any]] = {}  # (arm, size, epochs) on seed 0
    pending: dict[Future, Run] = {}
    ready: deque[tuple[Run, dict[str, Any]]] = deque()
    gpu_sets = GpuSets(options)  # each running training on its own GPUs
    pool = ThreadPoolExecutor(options.jobs)

    def recorded(run: Run) -> Path:
        return options.out / "runs" / f"{run.name}.json"

    reused = sum(options.resume and recorded(run).exists() for run in first)
    progress = Progress(len(first) - reused, reused=reused, jobs=options.jobs,
                        growing=bool(ladders))

    def start(runs: list[Run], announced: bool = False) -> None:
        for run in runs:
            if options.resume and recorded(run).exists():
                ready.append((run, json.loads(recorded(run).read_text())))
                continue
            if not announced:
                progress.planned(1)
            pending[pool.submit(train_and_evaluate, run, gpu_sets)] = run

    try:
        start(first, announced=True)
        while pending or ready:
            if not ready:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    run = pending.pop(future)
                    record = future.result()
                    recorded(run).parent.mkdir(parents=True, exist_ok=True)
                    recorded(run).write_text(json.dumps(record, indent=1))
                    progress.finished(run.name, record["seconds"])
                    ready.append((run, record))
            run, record = ready.popleft()
            ladder = ladders.get((run.arm.name, run.size))
            if ladder is None or run.seed != seeds[0]:
                chosen[(run.arm.name, run.size, run.seed)] = record
                continue
            ladder.add(record)
            rungs[(run.arm.name, run.size, run.epochs)] = record
            following = ladder.next_epochs()
            if following is not None:
                start([replace(run, epochs=following)])
                continue
            chosen[(run.arm.name, run.size, run.seed)] = rungs[
                (run.arm.name, run.size, ladder.chosen)]  # the first seed's rung, reused
            start([replace(run, seed=seed, epochs=ladder.chosen) for seed in seeds[1:]])
    finally:  # a failed run stops the runs that have not started
        pool.shutdown(cancel_futures=True)
        progress.close()
    return chosen


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark of the command line; print the table and write the files. A bad
    option, file or data set ends in one line on stderr and exit status 2."""
    with usage_errors(PROG):
        options = parse_options(argv)
        results = run_benchmark(options)
    table = write_outputs(results, options.out)
    print(table)
    print(f"wall time {results['wall_seconds']:.0f} s; results in {options.out}/",
          file=sys.stderr)


if __name__ == "__main__":
    main()
