"""``MixGenInfo``: the record of one MixGen call (its pairs, lambdas and ops), enough to
replay it, with its checks and its host rows (:class:`HostRows`, the pairs read once as
Python values when the info is on the CPU).

An info is checked when it is built (:class:`MixGenInfo`), or built consistent by
construction by :func:`mixgen.draw.draw` (:meth:`MixGenInfo.drawn`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mixgen.config import IMAGE_OPS, MODES, PAIRINGS, TEXT_OPS, check_choice

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
    def drawn(cls, *, halves_lam: float | None = None, **fields: Any) -> MixGenInfo:
        """An info made by :func:`mixgen.draw.draw`, consistent by construction: every
        field given, none checked again (the checks cost more than small batches take to
        mix). ``halves_lam``: the one lambda of pairs drawn as :attr:`HostRows.halves`
        (the paper's default), whose host rows are then known without reading the
        tensors back."""
        info = object.__new__(cls)
        info.__dict__.update(fields)  # frozen: fields are set once, here
        if halves_lam is not None:
            info.__dict__["_host"] = HostRows.of_halves(info, halves_lam)
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

    def indices(self, device: torch.device) -> Indices:
        """The pairs' index tensors on ``device``, copied there once per info and device
        (without waiting for it): every kernel reads them from here."""
        cache = self.__dict__.setdefault("_indices", {})  # a cache, not a field
        if device not in cache:
            cache[device] = Indices(*(None if t is None else to_device(t, device) for t in
                                      (self.source, self.partner, self.target,
                                       self.keep_source_text)))
        return cache[device]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_indices"}  # device copies

    def to(self, device: torch.device | str) -> MixGenInfo:
        """The same info with every tensor on ``device`` (copied without waiting)."""
        if self.source.device == torch.device(device):
            return self
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), Tensor)})


class Indices(NamedTuple):
    """An info's index tensors on one device (:meth:`MixGenInfo.indices`)."""

    source: Tensor
    partner: Tensor
    target: Tensor
    keep_source_text: Tensor | None


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


# ----------------------------------------------------------------------------- checks
def check_info_fields(info: MixGenInfo) -> None:
    """A :class:`MixGenInfo` is consistent in its types, lengths, ops and
    devices (nothing read from a device)."""
    size = info.batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TypeError(f"info.batch_size must be an int >= 0, got {size!r}")
    for name, choices in (("mode", MODES), ("pairing", PAIRINGS), ("image_op", IMAGE_OPS),
                          ("text_op", TEXT_OPS)):
        check_choice(f"info.{name}", getattr(info, name), choices)
    for name in ("source", "partner", "lam"):
        value = getattr(info, name)
        if not isinstance(value, Tensor) or value.ndim != 1:
            raise TypeError(f"info.{name} must be a 1-d tensor, got {_describe(value)}")
    pairs = info.source.shape[0]
    _check_field(info, "partner", (pairs,), "integer")
    _check_field(info, "source", (pairs,), "integer")
    _check_field(info, "lam", (pairs,), "floating")
    _check_field(info, "boxes", (pairs, 4), "integer", required=info.image_op == "cutmix")
    _check_field(info, "keep_source_text", (pairs,), "bool",
                 required=info.text_op == "select")
    _check_field(info, "caption_choice", (pairs, 2), "floating")
    devices = {getattr(info, name).device for name in ("source", "partner", "lam",
                                                       "boxes", "keep_source_text",
                                                       "caption_choice")
               if getattr(info, name) is not None}
    if len(devices) > 1:
        raise ValueError(f"info's tensors are on several devices: {sorted(map(str, devices))}")
    if info.mode == "replace" and pairs > size:
        raise ValueError(f"info has {pairs} pairs for a batch of {size} in replace mode: "
                         f"each pair needs a row of its own")


def _check_field(info: MixGenInfo, name: str, shape: tuple[int, ...], kind: str, *,
                 required: bool = False) -> None:
    value = getattr(info, name)
    if value is None:
        if required:
            op = "image_op='cutmix'" if name == "boxes" else "text_op='select'"
            raise ValueError(f"info.{name} is None, but {op} needs it")
        return
    dtype_ok = {"integer": lambda t: not (t.is_floating_point() or t.is_complex()
                                          or t.dtype == torch.bool),
                "floating": Tensor.is_floating_point,
                "bool": lambda t: t.dtype == torch.bool}[kind]
    if not isinstance(value, Tensor) or tuple(value.shape) != shape or not dtype_ok(value):
        article = {"integer": "an integer", "floating": "a floating point", "bool": "a bool"}
        raise ValueError(f"info.{name} must be {article[kind]} tensor of shape {list(shape)} "
                         f"(one entry per pair), got {_describe(value)}")


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def check_info_values(info: MixGenInfo, host: HostRows) -> None:
    """The pairs of a host info are inside the batch (partners of ``pairing="previous"``:
    rows >= 0 of the previous batch), and in replace mode no two write one row; lambdas
    lie in [0, 1]."""
    size = info.batch_size
    inside = (*host.source, *host.partner) if info.partner_in_batch else host.source
    outside = sorted({i for i in inside if not 0 <= i < size})
    if outside:
        raise ValueError(f"info has source or partner indices {outside} outside its batch "
                         f"of {size}")
    if not info.partner_in_batch and any(i < 0 for i in host.partner):
        raise ValueError(f"info has negative partner indices {sorted(set(host.partner))}")
    if info.mode == "replace" and len(set(host.source)) != len(host.source):
        raise ValueError("info.source repeats a row: in replace mode two pairs would write "
                         "one row")
    if not all(0.0 <= lam <= 1.0 for lam in host.lam):
        raise ValueError(f"info.lam must lie in [0, 1], got {host.lam}")


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``: itself when it is there (no call into torch, which costs
    with cold caches), else a copy made without waiting for the device."""
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)
