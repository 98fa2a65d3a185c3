"""Random parameters of MixGen: which pairs, which lambdas, whether to apply.

Every random number MixGen uses is drawn here, on the host, through one CPU
``torch.Generator`` (or torch's global RNG), and returned as a frozen
:class:`~mixgen.MixGenInfo`. The kernels consume it without drawing anything and move
what they need to the images' device without waiting for it, which makes each variant
replayable, testable against a few lines of reference code, and free of host-device
syncs. An adapter's generator is a :class:`HostGenerator`, reseeded once per DataLoader
worker.
"""

from __future__ import annotations

import math
import os
from array import array
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from mixgen.config import DEFAULT_RATIO, PAIRINGS, MixGenConfig, check_choice
from mixgen.info import MixGenInfo

_CPU = torch.device("cpu")


def check_generator(generator: object) -> None:
    """Parameters are drawn on the host: ``generator`` is None or a CPU generator."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    if generator is not None and generator.device != _CPU:
        raise ValueError(f"generator is on {generator.device}, but MixGen draws its "
                         f"parameters on the host and moves them to the images' device "
                         f"without waiting for it: pass a CPU torch.Generator")


def count_pairs(batch_size: int, *, ratio: float | None, num_pairs: int | None,
                pairing: str) -> int:
    """Number of pairs for a batch: ``num_pairs``, or ``floor(ratio * batch_size)``.

    A fraction rounds down, so a last batch too small to pair gets no pairs and passes
    through unchanged. An absolute ``num_pairs`` that the batch cannot hold is an error.
    ``previous`` pairs at most the whole batch (and what the previous one kept: :func:`draw`).
    """
    if batch_size < (1 if pairing == "previous" else 2):
        return 0
    if num_pairs is None:
        fraction = DEFAULT_RATIO if ratio is None else ratio
        count = math.floor(fraction * batch_size + 1e-9)
        return count if pairing != "flip" else min(count, batch_size // 2 * 2)
    capacity = {"first": batch_size // 2, "flip": batch_size // 2 * 2}.get(pairing, batch_size)
    if num_pairs > capacity:
        need = 2 * num_pairs if pairing == "first" else num_pairs
        raise ValueError(f"num_pairs={num_pairs} with pairing={pairing!r} needs a batch of at "
                         f"least {need} samples, got a batch of {batch_size}")
    return num_pairs


def sample_pairs(batch_size: int, num_pairs: int, pairing: str,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(source, partner)`` index tensors of length ``num_pairs``; never a self-pair.

    - ``first``: i with i + M for i < M (the paper's default);
    - ``permute``: a random single-cycle permutation of the batch, so every sample is a
      partner at most once and never its own; the first M samples of the cycle are mixed;
    - ``roll``: i with i - 1 (torchvision's MixUp; shuffle your batches);
    - ``flip``: i with B - 1 - i (timm); for odd B the middle sample has no partner;
    - ``previous``: i with row i of the previous batch (:class:`mixgen.batch.BatchMixer`).
    """
    check_choice("pairing", pairing, PAIRINGS)
    return _pair_indices(batch_size, num_pairs, pairing, generator)


def _pair_indices(batch_size: int, m: int, pairing: str,
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    if pairing == "first":
        source = torch.arange(m)
        return source, source + m
    if pairing == "permute":
        cycle = torch.randperm(batch_size, generator=generator)
        return cycle[:m], cycle.roll(-1)[:m]
    if pairing == "previous":
        source = torch.arange(m)
        return source, source.clone()
    if pairing == "roll":
        source = torch.arange(m)
        return source, (source - 1) % batch_size
    source = torch.arange(batch_size)  # flip
    source = source[source != batch_size - 1 - source][:m]
    return source, batch_size - 1 - source


def sample_lambdas(num_pairs: int, *, lam: float, alpha: float | None,
                   generator: torch.Generator | None = None) -> Tensor:
    """One lambda per pair: ``lam``, or a draw from ``Beta(alpha, alpha)``.

    ``torch.distributions.Beta`` samples from the global RNG, so it is run under a
    forked RNG seeded from ``generator``: the stream stays the generator's own.
    """
    if alpha is None:
        return torch.full((num_pairs,), float(lam))
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        concentration = torch.tensor(float(alpha))
        return torch.distributions.Beta(concentration, concentration).sample((num_pairs,))


def sample_boxes(lam: Tensor, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Cutmix boxes of area about ``(1 - lam) * H * W``, placed wholly inside the image.

    Returns ``(boxes, lam)`` where ``boxes`` rows are ``(top, left, height, width)`` and
    ``lam`` is corrected to the exact share of the source after rounding the box size.
    """
    cut = torch.sqrt(1.0 - lam.double())
    box_h = torch.round(cut * height).long()
    box_w = torch.round(cut * width).long()
    u = torch.rand((lam.numel(), 2), generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - box_h + 1)).long()
    left = torch.floor(u[:, 1] * (width - box_w + 1)).long()
    exact = 1.0 - (box_h * box_w).double() / (height * width)
    return torch.stack([top, left, box_h, box_w], dim=1), exact.to(lam.dtype)


def draw(config: MixGenConfig, batch_size: int, image_size: tuple[int, int],
         generator: torch.Generator | HostGenerator | None = None, *,
         partner_rows: int = 0) -> MixGenInfo:
    """Draw everything one MixGen call needs, in a fixed order, from ``generator`` (an
    adapter's :class:`HostGenerator` is asked for its generator here, when drawing).

    ``image_size`` is ``(H, W)`` of the images, used for cutmix boxes; ``partner_rows``
    the rows kept of the previous batch, at most that many pairs for ``pairing="previous"``.
    """
    if isinstance(generator, HostGenerator):
        generator = generator()
    count = count_pairs(batch_size, ratio=config.ratio, num_pairs=config.num_pairs,
                        pairing=config.pairing)
    if config.pairing == "previous":
        count = min(count, partner_rows)
    if config.p < 1.0 and float(torch.rand((), generator=generator)) >= config.p:
        count = 0
    source, partner = _pair_indices(batch_size, count, config.pairing, generator)
    lams = sample_lambdas(count, lam=config.lam, alpha=config.alpha, generator=generator)
    boxes = keep_source_text = None
    if config.image_op == "cutmix":
        boxes, lams = sample_boxes(lams, *image_size, generator=generator)
    if config.text_op == "select":
        coin = torch.rand(count, generator=generator) < 0.5
        keep_source_text = (lams > 0.5) | ((lams == 0.5) & coin)
    caption_choice = (torch.rand((count, 2), generator=generator)
                      if config.multi_caption == "pick_one" else None)
    halves = config.pairing in ("first", "previous") and config.alpha is None and boxes is None
    return MixGenInfo.drawn(batch_size=batch_size, mode=config.mode, pairing=config.pairing,
                            source=source, partner=partner, lam=lams, boxes=boxes,
                            keep_source_text=keep_source_text, caption_choice=caption_choice,
                            image_op=config.image_op, text_op=config.text_op,
                            # the lambda as the float32 tensor holds it
                            halves_lam=array("f", [config.lam])[0] if halves else None)


def sample_params(batch_size: int, image_size: tuple[int, int],
                  config: MixGenConfig | None = None, *,
                  generator: torch.Generator | None = None, **options: Any) -> MixGenInfo:
    """:func:`draw` for a config or keyword options (``lam=``, ``ratio=``, ...)."""
    check_generator(generator)
    return draw(MixGenConfig.resolve(config, options), batch_size, image_size, generator)


def process_key() -> tuple[int, int | None]:
    """This process, and its DataLoader worker's seed (None outside workers)."""
    worker = get_worker_info()
    return os.getpid(), None if worker is None else worker.seed


class HostGenerator:
    """The generator of an adapter, reseeded once per DataLoader worker from that
    worker's seed.

    A generator pickled into worker processes would otherwise hand every worker the
    same stream. The worker's seed derives from the loader's base seed, so two runs
    under the same ``torch.manual_seed`` still draw identical parameters.
    """

    def __init__(self, generator: torch.Generator | None) -> None:
        check_generator(generator)
        self.generator = generator
        self._seeded_worker: tuple[int, int | None] | None = None

    def __call__(self) -> torch.Generator | None:
        worker = get_worker_info()
        if self.generator is None or worker is None:
            return self.generator
        key = process_key()
        if self._seeded_worker != key:
            base = self.generator.initial_seed()
            self.generator.manual_seed((base * 0x9E3779B1 + worker.seed) % 2**63)
            self._seeded_worker = key
        return self.generator
