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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mixgen_bench.clip_retrieval import run_benchmark
from mixgen_bench.plots import curve_plot
from mixgen_bench.protocol import harness_options as shared_options
from mixgen_bench.protocol import main_of, seeds_option
from mixgen_bench.report import load_runs
from mixgen_bench.study_report import cell_table
from mixgen_bench.sweep import FIXED

PROTOCOL = Path("benchmarks") / "study_v2" / "protocol.json"


# ----------------------------------------------------------------------------- running
def harness_options(protocol: dict, setting: str, size: int, seeds: list[int], arms: list[str],
                    out: Path, **overrides: Any) -> argparse.Namespace:
    """The harness options of one setting at one size (resuming finished runs)."""
    values = {**FIXED, **protocol["common"], **protocol["settings"][setting]["options"],
              **overrides}
    values["steps"] = values.pop("steps_by_size")[str(size)]
    return shared_options(values, {name: protocol["arms"][name] for name in arms}, arms[0],
                          size, seeds, out)


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


main = main_of(__doc__, PROTOCOL,
               lambda protocol, part, options: run_part(protocol, part, options.out,
                                                        options.seeds),
               lambda protocol, options: report(protocol, options.out, options.results),
               seeds_option)


if __name__ == "__main__":
    main()
