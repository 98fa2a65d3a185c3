"""Random parameters of MixGen: which pairs, which lambdas, whether to apply.

Every random number MixGen uses is drawn here, on the host, through one CPU
``torch.Generator`` (or torch's global RNG), and returned as a frozen
:class:`MixGenInfo`. The kernels consume it without drawing anything and move what they
need to the images' device without waiting for it, which makes each variant replayable,
testable against a few lines of reference code, and free of host-device syncs.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mixgen.checks import check_info_fields, check_info_values
from mixgen.config import DEFAULT_RATIO, PAIRINGS, MixGenConfig, check_choice

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class MixGenInfo:
    """The pairs, lambdas and ops of one MixGen call: enough to replay it.

    Pair ``k`` mixes the original samples ``source[k]`` (weight ``lam[k]``) and
    ``partner[k]`` (weight ``1 - lam[k]``) by ``image_op`` and ``text_op``; the result lands
    in output row ``target[k]``: the source's own row in ``replace`` mode, row
    ``batch_size + k`` in ``append`` mode. ``pairing`` only records how the pairs were
    drawn: mixing reads the indices. An inconsistent info (lengths, ops without their
    boxes or choices, indices outside the batch, two pairs writing one row) raises at
    construction.

    With ``pairing="previous"``, ``partner[k]`` is a row of the previous batch (the
    kernels' ``partners=``), not of this one: :attr:`partner_in_batch` is False.

    Args:
        batch_size: the number of samples of the batch mixed.
        mode: ``replace`` or ``append``.
        pairing: how the pairs were drawn (``first``, ``permute``, ...).
        source, partner: ``[M]`` indices of each pair's samples.
        lam: ``[M]`` share of the source in each mixed image (for cutmix: the exact area
            share).
        boxes: cutmix only: ``[M, 4]`` rows ``(top, left, height, width)`` of the
            partner's patch.
        keep_source_text: caption select only: ``[M]`` bool, True where the source's
            caption is kept.
        caption_choice: ``[M, 2]`` uniforms in [0, 1) picking one caption of source and
            partner, for several captions per image with ``multi_caption="pick_one"``.
        image_op: ``mixup``, ``cutmix`` or ``concat``; default: cutmix when ``boxes`` are
            given.
        text_op: ``concat`` or ``select``; default: select when ``keep_source_text`` is
            given.

    Example:
        >>> import torch
        >>> from mixgen import MixGen, MixGenInfo
        >>> info = MixGenInfo(batch_size=4, mode="replace", pairing="first",
        ...                   source=torch.tensor([0]), partner=torch.tensor([3]),
        ...                   lam=torch.tensor([0.25]))
        >>> images = torch.arange(4.0).view(4, 1, 1, 1)  # image i has the value i
        >>> mixed_images, mixed_texts = MixGen()(images, list("abcd"), info=info)  # replayed
        >>> mixed_images.flatten().tolist(), mixed_texts
        ([2.25, 1.0, 2.0, 3.0], ['a d', 'b', 'c', 'd'])
    """

    batch_size: int
    mode: str
    pairing: str
    source: Tensor
    partner: Tensor
    lam: Tensor
    boxes: Tensor | None = None
    keep_source_text: Tensor | None = None
    caption_choice: Tensor | None = None
    image_op: str | None = None
    text_op: str | None = None

    def __post_init__(self) -> None:
        fill = object.__setattr__  # frozen: defaults resolved once, here
        if self.image_op is None:
            fill(self, "image_op", "cutmix" if self.boxes is not None else "mixup")
        if self.text_op is None:
            fill(self, "text_op", "select" if self.keep_source_text is not None else "concat")
        for name in ("source", "partner"):  # an empty list makes a float tensor
            value = getattr(self, name)
            if isinstance(value, Tensor) and value.numel() == 0 and value.is_floating_point():
                fill(self, name, value.long())
        check_info_fields(self)
        if self.host is not None:
            check_info_values(self, self.host)

    @classmethod
    def drawn(cls, **fields: Any) -> MixGenInfo:
        """An info made by :func:`draw`, consistent by construction: every field given,
        none checked again (the checks cost more than small batches take to mix)."""
        info = object.__new__(cls)
        info.__dict__.update(fields)  # frozen: fields are set once, here
        return info

    @property
    def num_pairs(self) -> int:
        return int(self.source.numel())

    @property
    def partner_in_batch(self) -> bool:
        """False for ``pairing="previous"``: the partners' own pairs are not in the batch."""
        return self.pairing != "previous"

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

    @property
    def host(self) -> HostRows | None:
        """The pairs as Python values, read once, when the info is on the CPU (else None:
        reading a device tensor would wait for the device)."""
        try:
            return self.__dict__["_host"]
        except KeyError:
            rows = HostRows.read(self) if self.source.device == _CPU else None
            self.__dict__["_host"] = rows  # a cache, not a field
            return rows

    def to(self, device: torch.device | str) -> MixGenInfo:
        """The same info with every tensor on ``device`` (copied without waiting)."""
        if self.source.device == torch.device(device):
            return self
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), Tensor)})


class HostRows(NamedTuple):
    """A host info's pairs as lists, read once: the CPU kernels loop over them."""

    target: list[int]
    source: list[int]
    partner: list[int]
    lam: list[float]
    halves: bool
    """Rows ``i < M`` with rows ``i + M`` (the paper's), or previous rows ``i``: two runs."""
    common_lam: float | None
    """The one lambda of every pair (fixed lambdas: the paper's), else None."""

    @classmethod
    def read(cls, info: MixGenInfo) -> HostRows:
        source, partner, lam = info.source.tolist(), info.partner.tolist(), info.lam.tolist()
        m = len(source)
        halves = source == list(range(m)) and partner == list(_partner_run(info, m))
        common = lam[0] if lam and lam.count(lam[0]) == m else None
        return cls(_targets(info, source), source, partner, lam, halves, common)

    @classmethod
    def of_halves(cls, info: MixGenInfo, lam: float) -> HostRows:
        """The rows of :attr:`halves` pairs at one lambda, known without reading the
        tensors back (the paper's default, drawn on every batch)."""
        m = info.num_pairs
        source = list(range(m))
        return cls(_targets(info, source), source, list(_partner_run(info, m)), [lam] * m,
                   True, lam if m else None)


def _partner_run(info: MixGenInfo, count: int) -> range:
    start = count if info.partner_in_batch else 0  # the partners of HostRows.halves pairs
    return range(start, start + count)


def _targets(info: MixGenInfo, source: list[int]) -> list[int]:
    if info.mode == "replace":
        return source
    return list(range(info.batch_size, info.batch_size + len(source)))


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``: itself when it is there (no call into torch, which costs
    with cold caches), else a copy made without waiting for the device."""
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)


# ----------------------------------------------------------------------------- drawing
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
    m = num_pairs
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
         generator: torch.Generator | None = None, *, partner_rows: int = 0) -> MixGenInfo:
    """Draw everything one MixGen call needs, in a fixed order, from ``generator``.

    ``image_size`` is ``(H, W)`` of the images, used for cutmix boxes; ``partner_rows``
    the rows kept of the previous batch, at most that many pairs for ``pairing="previous"``.
    """
    count = count_pairs(batch_size, ratio=config.ratio, num_pairs=config.num_pairs,
                        pairing=config.pairing)
    if config.pairing == "previous":
        count = min(count, partner_rows)
    if config.p < 1.0 and float(torch.rand((), generator=generator)) >= config.p:
        count = 0
    source, partner = sample_pairs(batch_size, count, config.pairing, generator)
    lams = sample_lambdas(count, lam=config.lam, alpha=config.alpha, generator=generator)
    boxes = keep_source_text = None
    if config.image_op == "cutmix":
        boxes, lams = sample_boxes(lams, *image_size, generator=generator)
    if config.text_op == "select":
        coin = torch.rand(count, generator=generator) < 0.5
        keep_source_text = (lams > 0.5) | ((lams == 0.5) & coin)
    caption_choice = (torch.rand((count, 2), generator=generator)
                      if config.multi_caption == "pick_one" else None)
    info = MixGenInfo.drawn(batch_size=batch_size, mode=config.mode, pairing=config.pairing,
                            source=source, partner=partner, lam=lams, boxes=boxes,
                            keep_source_text=keep_source_text, caption_choice=caption_choice,
                            image_op=config.image_op, text_op=config.text_op)
    if config.pairing in ("first", "previous") and config.alpha is None and boxes is None:
        # the lambda as the float32 tensor holds it
        info.__dict__["_host"] = HostRows.of_halves(info, array("f", [config.lam])[0])
    return info


def sample_params(batch_size: int, image_size: tuple[int, int],
                  config: MixGenConfig | None = None, *,
                  generator: torch.Generator | None = None, **options: Any) -> MixGenInfo:
    """:func:`draw` for a config or keyword options (``lam=``, ``ratio=``, ...)."""
    check_generator(generator)
    return draw(MixGenConfig.resolve(config, options), batch_size, image_size, generator)
