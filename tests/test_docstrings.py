"""The public classes and functions document every argument in an ``Args:`` section and
carry an example, which runs as a doctest and gives the output written under it."""

import doctest
import importlib
import inspect

import pytest

PUBLIC = ["mixgen:MixGen", "mixgen:MixGenCollate", "mixgen:MixGenConfig", "mixgen:MixGenInfo",
          "mixgen.batch:mix_batch", "mixgen.losses:MixGenClipLoss",
          "mixgen.losses:MixGenSigLipLoss", "mixgen.wds:mixgen",
          "mixgen.train_options:TrainOptions",
          *(f"mixgen.hf:{name}" for name in importlib.import_module("mixgen.hf").__all__)]
NEEDS = {"mixgen.losses": "open_clip", "mixgen.wds": "webdataset"}


def public(path: str):
    module, name = path.split(":")
    if module in NEEDS:
        pytest.importorskip(NEEDS[module])
    return getattr(importlib.import_module(module), name)


def documented_arguments(doc: str) -> set[str]:
    """The names the ``Args:`` section describes: ``name: ...``, ``a, b: ...``, ``**name: ...``
    at the section's first indentation."""
    lines = doc.split("\n")
    start = lines.index("Args:") + 1
    names = set()
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        if line.startswith("    ") and not line.startswith("     ") and ": " in line:
            names.update(n.strip().lstrip("*") for n in line.split(": ")[0].split(","))
    return names


@pytest.mark.parametrize("path", PUBLIC)
def test_every_argument_is_documented(path):
    obj = public(path)
    doc = inspect.getdoc(obj)
    assert "\nArgs:\n" in doc, f"{path} has no Args: section"
    arguments = set(inspect.signature(obj).parameters) - {"self"}
    assert arguments <= documented_arguments(doc), path


@pytest.mark.parametrize("path", PUBLIC)
def test_examples_run_and_give_their_output(path):
    obj = public(path)
    tests = [test for test in doctest.DocTestFinder().find(obj, path) if test.examples]
    assert tests, f"{path} has no >>> example"
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
