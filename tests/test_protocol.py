"""The study v3 runner (``mixgen_bench.protocol``): harness options of each registered
cell, the bases a fine-tuning cell starts from, and the report of finished and unfinished
cells, on synthetic results."""

import json
from pathlib import Path

import pytest

from mixgen_bench import protocol as runner
from mixgen_bench.runs import steps_per_epoch

PROTOCOL = json.loads((Path(__file__).resolve().parents[1] / runner.PROTOCOL).read_text())


def test_every_cell_climbs_from_its_first_rung_to_its_cap(tmp_path):
    steps = {}
    for part in PROTOCOL["order"]:
        options = runner.cell_options(PROTOCOL, part, tmp_path, [0], pretrained="base.pt")
        size = int(part.split(":")[1])
        per_epoch = steps_per_epoch(size, options)
        steps[part] = (per_epoch * options.epochs, per_epoch * options.max_epochs)
        assert (options.budget, options.budget_tol, options.select, options.resume) == (
            "auto", 1.0, "best-val", True)
        assert options.arms.split(",") == PROTOCOL["cells"][part]["arms"]
    assert steps["finetune:512"] == (768, 6144) and steps["finetune:2048"] == (1536, 12288)
    assert steps["scratch:1024"] == (1024, 8192)
    plain = runner.cell_options(PROTOCOL, "finetune:512", tmp_path)
    assert (plain.seeds, plain.lr, plain.data, plain.pretrain_data) == (
        "0,1,2,3,4", 0.0005, "digits", "shapes")


def results(arms: dict[str, list[float]], size: int, capped: str | None = None) -> dict:
    """A cell's ``results.json``: per arm, one run per seed with these R@1 values."""
    runs = [{"arm": arm, "size": size, "seed": seed, "steps": 8, "epochs": 4, "selected_epoch": 4,
             "best_val_epoch": 4, "checkpoint": f"/{arm}-s{seed}.pt",
             "curve": [{"epoch": 4, "step": 8, "val_score": value}],
             "metrics": {"i2t_R@1": value, "t2i_R@1": value},
             "metrics_final": {"i2t_R@1": value, "t2i_R@1": value}}
            for arm, values in arms.items() for seed, value in enumerate(values)]
    ladders = {arm: {"start": 2, "cap": 4, "tol": 1.0, "chosen_epochs": 4,
                     "capped": arm == capped, "runs": 2, "seconds": 30.0,
                     "rungs": [{"epochs": 2, "best_val": 1.0, "best_val_epoch": 2},
                               {"epochs": 4, "best_val": 5.0, "best_val_epoch": 4}]}
               for arm in arms}
    return {"runs": runs, "seeds": [0, 1, 2], "budgets": {str(size): ladders}}


def test_the_report_gives_finished_cells_with_their_ladders_and_the_rest_as_unfinished(
        tmp_path, capsys):
    cell = tmp_path / "out" / "finetune-n512"
    cell.mkdir(parents=True)
    (cell / "results.json").write_text(json.dumps(results(
        {"baseline": [50.0, 52.0, 54.0], "default": [53.0, 55.0, 57.0],
         "append_weighted": [50.0, 53.0, 56.0]}, 512, capped="default")))
    (tmp_path / "out" / "scratch-n1024" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "scratch-n1024" / "runs" / "baseline-n1024-s0-e64.json").write_text("{}")
    text = runner.report(PROTOCOL, tmp_path / "out", tmp_path / "results")
    assert "| default | 3 | +3.0 [3.0, 3.0] |" in text
    assert "- capped: default was still improving at --max-epochs 4" in text
    assert "| baseline | 2 (1.0, at 2), 4 (5.0, at 4) | 4 epochs | no | 2 runs, 30 s |" in text
    assert "### scratch, 1024 pairs\n\nNot finished (1 runs recorded)." in text
    assert (tmp_path / "results" / "curves-finetune-n512.png").is_file()
    assert (tmp_path / "results" / "study.md").read_text() == text
    runner.main(["report", "--out", str(tmp_path / "out"), "--results",
                 str(tmp_path / "again")])  # the command line, as in PROTOCOL.md
    assert capsys.readouterr().out == text + "\n"


def test_a_fine_tuning_cell_starts_from_the_chosen_bases(tmp_path):
    with pytest.raises(FileNotFoundError, match="unfinished cell"):
        runner.bases(PROTOCOL, "after_pretrain:128", tmp_path)
    cell = tmp_path / "pretrain-n2048"
    cell.mkdir()
    (cell / "results.json").write_text(json.dumps(results({"baseline": [1.0, 2.0, 3.0],
                                                           "default": [1.0, 2.0, 3.0]}, 2048)))
    found = runner.bases(PROTOCOL, "after_pretrain:128", tmp_path)
    assert [(base["arm"], base["seed"], base["checkpoint"]) for base in found] == [
        (arm, seed, f"/{arm}-s{seed}.pt") for arm in ("baseline", "default") for seed in range(3)]
