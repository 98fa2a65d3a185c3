"""Does MixGen help CLIP retrieval on this data with this model? Measure it, with error bars.

Trains an open_clip model once per (arm, training-set size, seed) through
``mixgen.open_clip_train`` under the same seed, initial weights, data order and number of
optimizer steps, then evaluates the final checkpoint on image-to-text and text-to-image
retrieval of held-out pairs. Arms are named sets of options: the ``baseline`` trains
without MixGen, ``mixgen`` with the options given on the command line; a JSON config file
(``--config``) can define more. Prints and writes a Markdown table of per-seed numbers,
means with 95% confidence intervals and the paired difference of every arm to the
reference arm, plus ``results.json`` and a PNG plot.

    mixgen-clip-retrieval                        # the default comparison
    python -m mixgen_bench --nproc-per-node 2    # each run under torchrun

Modules: ``options`` (command line, arms), ``sources`` (data), ``models`` (model names,
evaluation), ``runs`` (one trainer call per run), ``progress``, ``report``; this one plans
the runs and collects them. ``run_benchmark(options)`` is the entry point for sweep
runners. Bad input ends in one line and exit status 2 (``errors``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from mixgen_bench.base import base_checkpoint
from mixgen_bench.errors import UsageError, usage_errors
from mixgen_bench.models import check_pretrained, model_config, prepare_model
from mixgen_bench.options import PROG, int_list, parse_options, resolve_arms
from mixgen_bench.progress import Progress
from mixgen_bench.report import metric_bounds, summarize, write_outputs
from mixgen_bench.runs import GpuSets, Run, budget, run_one
from mixgen_bench.sources import load_data, write_training_data


def run_benchmark(options: argparse.Namespace) -> dict[str, Any]:
    """Train every arm at every size with every seed, ``--jobs`` runs at a time, and return
    the results. Each finished run is recorded in ``out/runs`` as it ends, so ``--resume``
    skips it. Bad options, files and data raise :class:`UsageError` before any run."""
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
    arms = resolve_arms(options)
    if options.image_size is None:
        options.image_size = model_config(options.model)["vision_cfg"]["image_size"]
    sizes, seeds = int_list(options.sizes, "--sizes"), int_list(options.seeds, "--seeds")
    if options.steps != 0:
        for size in sizes:
            budget(size, options)  # a bad budget fails before any data is written
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
    plan = [Run(arm, size, seed) for size in sizes for seed in seeds for arm in arms]
    records: dict[str, dict] = {}
    todo = []
    for run in plan:
        path = options.out / "runs" / f"{run.name}.json"
        if options.resume and path.exists():
            records[run.name] = json.loads(path.read_text())
        else:
            todo.append(run)
    progress = Progress(len(todo), reused=len(plan) - len(todo), jobs=options.jobs)
    gpu_sets = GpuSets(options)  # each running training on its own GPUs
    pool = ThreadPoolExecutor(options.jobs)
    try:
        futures = {pool.submit(run_one, run, options, model, tables[run.size], validation,
                               held_out, gpu_sets): run
                   for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            records[run.name] = future.result()
            path = options.out / "runs" / f"{run.name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(records[run.name], indent=1))
            progress.finished(run.name, records[run.name]["seconds"])
    finally:  # a failed run stops the runs that have not started
        pool.shutdown(cancel_futures=True)
        progress.close()
    texts, _ = held_out.retrieval_texts()
    results = summarize([records[run.name] for run in plan], arms, sizes, seeds,
                        options.reference, metric_bounds(len(held_out), len(texts)),
                        options.select)
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
