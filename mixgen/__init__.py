"""MixGen: joint image-text data augmentation for vision-language training."""

from mixgen import functional
from mixgen.collate import MixGenCollate
from mixgen.config import MixGenConfig
from mixgen.info import MixGenInfo
from mixgen.transform import MixGen

__all__ = ["MixGen", "MixGenCollate", "MixGenConfig", "MixGenInfo", "functional"]
__version__ = "0.1.0"

_OPTIONAL_MODULES = ("wds", "hf", "hf_trainer")


def __getattr__(name: str):
    """``mixgen.wds``, ``mixgen.hf`` and ``mixgen.hf_trainer`` load on first use:
    ``import mixgen`` needs neither webdataset, datasets nor transformers."""
    if name in _OPTIONAL_MODULES:
        import importlib

        return importlib.import_module(f"mixgen.{name}")
    raise AttributeError(f"module 'mixgen' has no attribute {name!r}")
