"""Random parameters of MixGen: which pairs, which lambdas, whether to apply.

Every random number MixGen uses is drawn here, through one ``torch.Generator``, and
returned as a frozen :class:`MixGenInfo`. The kernels in :mod:`mixgen.functional`
consume it without drawing anything, which makes each variant replayable and testable
against a few lines of reference code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PAIRINGS = ("first", "permute", "roll", "flip")
MODES = ("replace", "append")
IMAGE_OPS = ("mixup", "cutmix", "concat")
TEXT_OPS = ("concat", "select")
DEFAULT_RATIO = 0.25


@dataclass(frozen=True)
class MixGenInfo:
    """The pairs and lambdas of one MixGen call.

    Pair ``k`` mixes the original samples ``source[k]`` (weight ``lam[k]``) and
    ``partner[k]`` (weight ``1 - lam[k]``); the result lands in output row ``target[k]``:
    the source's own row in ``replace`` mode, row ``batch_size + k`` in ``append`` mode.
    """

    batch_size: int
    mode: str
    pairing: str
    source: Tensor
    partner: Tensor
    lam: Tensor
    """Share of the source in each mixed image (for cutmix: the exact area share)."""
    boxes: Tensor | None = None
    """Cutmix only: ``[M, 4]`` rows ``(top, left, height, width)`` of the partner's patch."""
    keep_source_text: Tensor | None = None
    """Caption select only: ``[M]`` bool, True where the source's caption is kept."""
    caption_choice: Tensor | None = None
    """``[M, 2]`` uniforms in [0, 1) picking one caption of source and partner, for
    several captions per image with ``multi_caption="pick"``."""

    @property
    def num_pairs(self) -> int:
        return int(self.source.numel())

    @property
    def applied(self) -> bool:
        return self.num_pairs > 0

    @property
    def target(self) -> Tensor:
        if self.mode == "replace":
            return self.source
        return torch.arange(self.batch_size, self.batch_size + self.num_pairs,
                            device=self.source.device)

    @property
    def output_size(self) -> int:
        return self.batch_size + (self.num_pairs if self.mode == "append" else 0)

    def to(self, device: torch.device | str) -> MixGenInfo:
        """The same info with every tensor on ``device``."""
        fields = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(self).items()}
        return MixGenInfo(**fields)


def check_options(*, lam: float, alpha: float | None, ratio: float | None,
                  num_pairs: int | None, pairing: str, mode: str, p: float,
                  image_op: str, text_op: str) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first option that is out of range."""
    _check_choice("pairing", pairing, PAIRINGS)
    _check_choice("mode", mode, MODES)
    _check_choice("image_op", image_op, IMAGE_OPS)
    _check_choice("text_op", text_op, TEXT_OPS)
    _check_unit_interval("lam", lam)
    _check_unit_interval("p", p)
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a positive float or None, got {type(alpha).__name__}")
        if not alpha > 0 or math.isinf(alpha):
            raise ValueError(f"alpha must be a positive finite float or None, got {alpha}")
    if ratio is not None and num_pairs is not None:
        raise ValueError("give either ratio or num_pairs, not both "
                         f"(got ratio={ratio}, num_pairs={num_pairs})")
    if ratio is not None:
        _check_unit_interval("ratio", ratio)
        limit = 0.5 if pairing == "first" else 1.0
        if ratio > limit:
            raise ValueError(f"ratio must be in [0, {limit}] with pairing={pairing!r}, got {ratio}"
                             + (": 'first' pairs sample i with i + M, so at most half the batch"
                                if pairing == "first" else ""))
    if num_pairs is not None:
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int):
            raise TypeError(f"num_pairs must be an int or None, got {type(num_pairs).__name__}")
        if num_pairs < 0:
            raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_unit_interval(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def count_pairs(batch_size: int, *, ratio: float | None, num_pairs: int | None,
                pairing: str) -> int:
    """Number of pairs for a batch: ``num_pairs``, or ``floor(ratio * batch_size)``.

    A fraction rounds down, so a last batch too small to pair gets no pairs and passes
    through unchanged. An absolute ``num_pairs`` that the batch cannot hold is an error.
    """
    if batch_size < 2:
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
    - ``flip``: i with B - 1 - i (timm); for odd B the middle sample has no partner.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    m = num_pairs
    if pairing == "first":
        source = torch.arange(m, device=device)
        return source, source + m
    if pairing == "permute":
        cycle = torch.randperm(batch_size, generator=generator, device=device)
        return cycle[:m], cycle.roll(-1)[:m]
    if pairing == "roll":
        source = torch.arange(m, device=device)
        return source, (source - 1) % batch_size
    if pairing == "flip":
        source = torch.arange(batch_size, device=device)
        source = source[source != batch_size - 1 - source][:m]
        return source, batch_size - 1 - source
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")


def sample_lambdas(num_pairs: int, *, lam: float, alpha: float | None,
                   generator: torch.Generator | None = None) -> Tensor:
    """One lambda per pair: ``lam``, or a draw from ``Beta(alpha, alpha)``.

    ``torch.distributions.Beta`` samples from the global RNG, so it is run under a
    forked RNG seeded from ``generator``: the stream stays the generator's own.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    if alpha is None:
        return torch.full((num_pairs,), float(lam), device=device)
    seed = int(torch.randint(2**62, (1,), generator=generator, device=device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        concentration = torch.tensor(float(alpha))
        draws = torch.distributions.Beta(concentration, concentration).sample((num_pairs,))
    return draws.to(device)


def sample_boxes(lam: Tensor, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Cutmix boxes of area about ``(1 - lam) * H * W``, placed wholly inside the image.

    Returns ``(boxes, lam)`` where ``boxes`` rows are ``(top, left, height, width)`` and
    ``lam`` is corrected to the exact share of the source after rounding the box size.
    """
    cut = torch.sqrt(1.0 - lam.double())
    box_h = torch.round(cut * height).long()
    box_w = torch.round(cut * width).long()
    u = torch.rand((lam.numel(), 2), generator=generator, device=lam.device, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - box_h + 1)).long()
    left = torch.floor(u[:, 1] * (width - box_w + 1)).long()
    exact = 1.0 - (box_h * box_w).double() / (height * width)
    return torch.stack([top, left, box_h, box_w], dim=1), exact.to(lam.dtype)


def sample_params(batch_size: int, image_size: tuple[int, int], *, lam: float = 0.5,
                  alpha: float | None = None, ratio: float | None = None,
                  num_pairs: int | None = None, pairing: str = "first",
                  mode: str = "replace", p: float = 1.0, image_op: str = "mixup",
                  text_op: str = "concat", multi_caption: str = "by_position",
                  generator: torch.Generator | None = None) -> MixGenInfo:
    """Draw everything one MixGen call needs, in a fixed order, from ``generator``.

    ``image_size`` is ``(H, W)`` of the images, used for cutmix boxes.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    count = count_pairs(batch_size, ratio=ratio, num_pairs=num_pairs, pairing=pairing)
    if p < 1.0 and float(torch.rand((), generator=generator, device=device)) >= p:
        count = 0
    source, partner = sample_pairs(batch_size, count, pairing, generator)
    lams = sample_lambdas(count, lam=lam, alpha=alpha, generator=generator)
    boxes = keep_source_text = None
    if image_op == "cutmix":
        boxes, lams = sample_boxes(lams, *image_size, generator=generator)
    if text_op == "select":
        coin = torch.rand(count, generator=generator, device=device) < 0.5
        keep_source_text = (lams > 0.5) | ((lams == 0.5) & coin)
    caption_choice = (torch.rand((count, 2), generator=generator, device=device)
                      if multi_caption == "pick_one" else None)
    return MixGenInfo(batch_size=batch_size, mode=mode, pairing=pairing, source=source,
                      partner=partner, lam=lams, boxes=boxes,
                      keep_source_text=keep_source_text, caption_choice=caption_choice)
