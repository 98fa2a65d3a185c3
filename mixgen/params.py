"""Random parameters of MixGen: an old home of names that live in :mod:`mixgen.draw`
(the draws) and :mod:`mixgen.info` (``MixGenInfo``), re-exported for code importing
them from here."""

from mixgen.draw import (
    check_generator,
    count_pairs,
    draw,
    sample_boxes,
    sample_lambdas,
    sample_pairs,
    sample_params,
)
from mixgen.info import HostRows, MixGenInfo, to_device

__all__ = ["HostRows", "MixGenInfo", "check_generator", "count_pairs", "draw", "sample_boxes",
           "sample_lambdas", "sample_pairs", "sample_params", "to_device"]
