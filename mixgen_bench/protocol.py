"""A registered study of cells, each arm at the budget its ladder chose: run and report.

A protocol (``benchmarks/study_v3/protocol.json``) names settings (data, base, learning
rate), arms, and cells ``"<setting>:<size>"``, each with its arms, seeds, first rung
(``epochs``) and cap (``max_epochs``); its ``order`` is the order they run in. Every cell
is one call of the retrieval harness (``clip_retrieval.run_benchmark``) with ``--budget
auto``, whose output folder ``OUT/<setting>-n<size>`` keeps every run's record, so a
killed study resumes where it stopped. A cell of the setting ``after_pretrain`` fine-tunes
each base that its ``bases_from`` cell chose and kept, one harness call per base, paired
by the base's seed.

    python -m mixgen_bench.protocol run --out study_out [--only finetune:512]
    python -m mixgen_bench.protocol report --out study_out
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mixgen_bench.clip_retrieval import run_benchmark
from mixgen_bench.options import parse_options
from mixgen_bench.plots import curve_plot
from mixgen_bench.report import budget_lines, capped_lines, write_outputs
from mixgen_bench.study_report import cell_table

PROTOCOL = Path("benchmarks") / "study_v3" / "protocol.json"
AFTER = "after_pretrain"


# ------------------------------------------------- shared by every registered protocol
def harness_options(values: dict[str, Any], arm_specs: dict[str, dict], reference: str,
                    size: int, seeds: list[int], out: Path) -> argparse.Namespace:
    """The harness options of one call: ``values`` as flags (``True``: a bare flag), the
    arms of ``arm_specs`` at one size with these seeds, resuming finished runs in ``out``."""
    argv = []
    for key, value in values.items():
        flag = f"--{key.replace('_', '-')}"
        argv += [flag] if value is True else [f"{flag}={value}"]
    argv += ["--arms", ",".join(arm_specs), "--reference", reference, "--sizes", str(size),
             "--seeds", ",".join(map(str, seeds)), "--out", str(out), "--resume"]
    options = parse_options(argv)
    options.arm_specs = arm_specs
    return options


def main_of(doc: str, default: Path, run: Callable[[dict, str, argparse.Namespace], None],
            report: Callable[[dict, argparse.Namespace], str],
            more: Callable[[argparse.ArgumentParser], None] | None = None,
            out: str = "study_out") -> Callable[[list[str] | None], None]:
    """The command line of a protocol's runner: ``run`` trains the protocol's ``order``
    (or the ``--only`` parts) part by part and prints when each ends; ``report`` prints
    the tables. ``more`` adds the runner's own options."""

    def main(argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
        parser.add_argument("command", choices=("run", "report"))
        parser.add_argument("--protocol", type=Path, default=default)
        parser.add_argument("--out", type=Path, default=Path(out),
                            help="harness output folders, one per part")
        parser.add_argument("--results", type=Path, help="report's folder (default: the "
                            "protocol's folder / results)")
        parser.add_argument("--only", help="comma-separated parts (default: the "
                            "protocol's order)")
        if more is not None:
            more(parser)
        options = parser.parse_args(argv)
        protocol = json.loads(options.protocol.read_text())
        options.results = options.results or options.protocol.parent / "results"
        if options.command == "report":
            print(report(protocol, options))
            return
        for part in options.only.split(",") if options.only else protocol["order"]:
            started = time.perf_counter()
            run(protocol, part, options)
            print(time.strftime("%H:%M:%S"), part, f"{time.perf_counter() - started:.0f} s",
                  flush=True)

    return main


def seeds_option(parser: argparse.ArgumentParser) -> None:
    """``--seeds``: run only these seeds of each part (a pilot)."""
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                        help="run: only these comma-separated seeds (a pilot)")


# ------------------------------------------------------------------- studies of cells
def cell_options(protocol: dict, part: str, out: Path, seeds: list[int] | None = None,
                 **overrides: Any) -> argparse.Namespace:
    """The harness options of one cell (resuming finished runs); ``seeds`` and
    ``overrides`` replace the cell's (a base's seed and checkpoint, a pilot)."""
    setting, _, size = part.partition(":")
    spec = protocol["cells"][part]
    values = {**protocol["common"], **protocol["settings"][setting]["options"],
              "epochs": spec["epochs"], "max_epochs": spec["max_epochs"], **overrides}
    return harness_options(values, {name: protocol["arms"][name] for name in spec["arms"]},
                           spec["arms"][0], int(size), seeds or spec["seeds"], out)


def folder(out: Path, part: str) -> Path:
    setting, _, size = part.partition(":")
    return out / f"{setting}-n{size}"


def bases(protocol: dict, part: str, out: Path) -> list[dict]:
    """The runs of the ``bases_from`` cell that the fine-tuning cell ``part`` starts
    from: each arm's run per seed at its chosen budget, with its kept checkpoint."""
    results = folder(out, protocol["cells"][part]["bases_from"]) / "results.json"
    if not results.exists():
        raise FileNotFoundError(f"cell {part} starts from the bases of an unfinished cell: "
                                f"{results} does not exist")
    return [run for run in json.loads(results.read_text())["runs"] if run["checkpoint"]]


def run_cell(protocol: dict, part: str, out: Path, seeds: list[int] | None = None) -> None:
    """Train one cell (only ``seeds`` of it, for a pilot) and write its results."""
    if not part.startswith(f"{AFTER}:"):
        options = cell_options(protocol, part, folder(out, part), seeds)
        write_outputs(run_benchmark(options), options.out)
        return
    calls = [cell_options(protocol, part, folder(out, part) / f"{base['arm']}-s{base['seed']}",
                          [base["seed"]], jobs=1, pretrained=base["checkpoint"])
             for base in bases(protocol, part, out)]

    def one(options: argparse.Namespace) -> None:
        write_outputs(run_benchmark(options), options.out)

    with ThreadPoolExecutor(protocol["common"]["jobs"]) as pool:  # one ladder per call
        list(pool.map(one, calls))


def report(protocol: dict, out: Path, results: Path) -> str:
    """Markdown of every cell in the protocol's order: the paired differences at each
    arm's chosen budget, each arm's ladder, capped arms; ``Not finished`` where a cell
    has no results yet. Curve plots per finished cell, into ``results``."""
    reference, lines = protocol["reference"], []
    results.mkdir(parents=True, exist_ok=True)
    for part in protocol["order"]:
        spec = protocol["cells"][part]
        setting, _, size = part.partition(":")
        title = f"{setting}, {size} pairs"
        found = sorted(folder(out, part).rglob("results.json"))
        if not found:
            recorded = len(list(folder(out, part).rglob("runs/*.json")))
            lines += [f"### {title}", "", f"Not finished ({recorded} runs recorded).", ""]
            continue
        cells = [json.loads(path.read_text()) for path in found]
        if setting == AFTER:  # arm = the base's pre-training arm
            runs = [{**run, "arm": path.parent.name.rsplit("-s", 1)[0]}
                    for path, cell in zip(found, cells, strict=True) for run in cell["runs"]]
            arms = protocol["cells"][spec["bases_from"]]["arms"]
        else:
            runs, arms = cells[0]["runs"], spec["arms"]
            curve_plot({"sizes": [int(size)], "arms": arms, "seeds": spec["seeds"],
                        "runs": runs}).savefig(results / f"curves-{setting}-n{size}.png",
                                               dpi=100)
        lines += cell_table(runs, reference, title, arms)
        for cell in cells:
            lines += [*capped_lines(cell, int(size)), *budget_lines(cell, int(size))]
    text = "\n".join(lines)
    (results / "study.md").write_text(text)
    return text


main = main_of(__doc__, PROTOCOL,
               lambda protocol, part, options: run_cell(protocol, part, options.out,
                                                        options.seeds),
               lambda protocol, options: report(protocol, options.out, options.results),
               seeds_option)


if __name__ == "__main__":
    main()
