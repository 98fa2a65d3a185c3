"""MixGen: joint image-text data augmentation for vision-language training."""

from mixgen import functional
from mixgen.collate import MixGenCollate
from mixgen.params import MixGenInfo
from mixgen.transform import MixGen

__all__ = ["MixGen", "MixGenCollate", "MixGenInfo", "functional"]
__version__ = "0.1.0"
