"""Pure MixGen kernels: no randomness, no classes, no I/O.

Each kernel takes the batch and a :class:`~mixgen.MixGenInfo` and mixes it as the
info says, reading its indices (never its ``pairing`` label) and never a value from the
images' device: what it needs to read (row numbers, lambdas, boxes) is on the host, and
is copied to the device without waiting for it. ``channels_last`` is kept, and any
number of leading dimensions after the batch works (``[B, C, H, W]`` images,
``[B, T, C, H, W]`` clips). Captions: :mod:`mixgen.captions` (re-exported here); input
checks: :mod:`mixgen.checks` (re-exported here).

Fast paths (every one is tested against plain reference loops):

==========================================  ============================================
case                                        path
==========================================  ============================================
every lambda equal (fixed ``lam``)          one scalar blend weight, no weight tensor
mixup, pairs ``i`` with ``i + M`` (halves)  blend the two halves straight into the
or with row ``i`` of the previous batch     output rows: no gather
mixup, other pairs, on the CPU              row by row from the two rows, no gathered
                                            copy; in place, in the order that reads
                                            the most partners before they are written
mixup, other pairs, other devices           gather, blend, ``index_copy_``: few kernels,
                                            no host reads
float images                                one ``torch.lerp`` pass
uint8, lambda 0.5                           ``ceil((a + b) / 2)`` in integer ops; one
                                            compiled pass over 64-bit words for CPU
                                            tensors of 1 MiB+ (:mod:`mixgen.uint8`)
uint8, other lambdas                        float32, 16 rows at a time
unmixed rows out of place, on the CPU       copied once, run by run (each output row
                                            is written once)
collate (:func:`stack_mixed`)               stack unmixed runs and blend mixed rows
                                            straight into the collated batch
token ids                                   an affine run plan: ~35 tensor ops for any
                                            batch (:func:`mixgen.tokens.concat_ids`)
==========================================  ============================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from mixgen import uint8
from mixgen.captions import check_op, mix_texts, mix_token_texts
from mixgen.checks import check_images, check_partners, check_texts, check_token_texts
from mixgen.config import check_inplace_mode, check_unit_interval
from mixgen.draw import sample_pairs
from mixgen.info import HostRows, MixGenInfo, to_device

__all__ = ["append_rows", "blend", "check_images", "check_texts", "check_token_texts",
           "concat_rows", "cutmix_rows", "mix_images", "mix_texts", "mix_token_texts",
           "mixgen", "new_batch_like", "stack_mixed"]


def blend(a: Tensor, b: Tensor, lam: Tensor | float, out: Tensor | None = None) -> Tensor:
    """``lam * a + (1 - lam) * b`` row by row, written into ``out`` when given.

    ``lam`` holds one weight per row of ``a`` (or is 0-d, or a float, for one weight).
    Float dtypes use ``torch.lerp`` (one pass; equal to the formula within float rounding).
    ``uint8`` is exact with round-half-up (:mod:`mixgen.uint8`).
    """
    if out is None:
        out = torch.empty_like(a)
    if a.numel() == 0:
        return out
    if isinstance(lam, Tensor) and lam.device.type == "cpu" and lam.ndim:
        values = lam.tolist()  # host lambdas: one scalar weight when they are all equal
        lam = values[0] if values.count(values[0]) == len(values) else lam
    if not isinstance(lam, Tensor):
        if a.is_floating_point():
            return torch.lerp(a, b, 1.0 - lam, out=out)
        if lam == 0.5:
            return uint8.midpoint(a, b, out)
        lam = torch.tensor(lam, dtype=torch.float32)
    weight = to_device(lam, a.device).reshape(lam.shape + (1,) * (a.ndim - lam.ndim))
    if a.is_floating_point():
        return torch.lerp(a, b, (1 - weight).to(a.dtype), out=out)
    return uint8.weighted(a, b, weight, out)


def cutmix_rows(a: Tensor, b: Tensor, boxes: Tensor) -> Tensor:
    """Rows of ``a`` with the box ``(top, left, height, width)`` of each taken from ``b``
    (a mask built on the device from the boxes: no box is read back)."""
    height, width = a.shape[-2:]
    top, left, box_h, box_w = to_device(boxes, a.device).unsqueeze(-1).unbind(1)
    rows = torch.arange(height, device=a.device)
    cols = torch.arange(width, device=a.device)
    inside = (((rows >= top) & (rows < top + box_h)).unsqueeze(-1)
              & ((cols >= left) & (cols < left + box_w)).unsqueeze(-2))
    return torch.where(inside.view(len(boxes), *[1] * (a.ndim - 3), height, width), b, a)


def concat_rows(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """Rows of ``a`` and ``b`` side by side, each resized to its share of the width.

    The source takes ``round(lam * W)`` columns (half the width at ``lam = 0.5``), at
    least one column each; resizing is torchvision's antialiased bilinear resize.
    """
    height, width = a.shape[-2:]
    out = torch.empty_like(a)
    for row, share in enumerate(lam.tolist()):
        left = min(max(round(share * width), 1), width - 1)
        out[row, ..., :left] = TF.resize(a[row], [height, left], antialias=True)
        out[row, ..., left:] = TF.resize(b[row], [height, width - left], antialias=True)
    return out


def mix_images(images: Tensor, info: MixGenInfo, *, op: str | None = None,
               inplace: bool = False, partners: Tensor | None = None,
               check: bool = True) -> Tensor:
    """The image batch with each pair of ``info`` mixed by ``info.image_op``.

    Partners are always read from the original batch, never from a row already mixed,
    or, for an info of ``pairing="previous"``, from ``partners`` (rows of an earlier
    batch). ``replace`` mode writes the mixed rows over their sources (into ``images``
    itself when ``inplace``); ``append`` mode returns ``B + M`` rows, originals first.
    ``op``, if given, must be ``info.image_op``. ``check=False``: the caller checked the
    partners and options (the batch path, once per batch).
    """
    if check:
        check_op("image_op", op, info)
        check_partners(info, partners)
        check_inplace_mode(inplace, info.mode)
    out = _output_batch(images, info, inplace)
    if not info.applied:
        return out
    host, m = info.host, info.num_pairs
    if info.image_op == "mixup" and host is not None and host.halves:
        rows = slice(info.batch_size, None) if info.mode == "append" else slice(0, m)
        lam = info.lam if host.common_lam is None else host.common_lam
        partner_rows = images[m:2 * m] if partners is None else partners[:m]
        blend(images[:m], partner_rows, lam, out=out[rows])
        return out
    if info.image_op == "mixup" and host is not None and images.device.type == "cpu":
        return _blend_by_row(images, out, host, partners)
    return _place_gathered(images, info, out, partners)


def _place_gathered(images: Tensor, info: MixGenInfo, out: Tensor,
                    partners: Tensor | None = None) -> Tensor:
    """Gather the pairs, mix them, write the rows at their targets in ``out`` (which may
    be ``images``: every partner is read before any row is written). Partners come from
    ``partners`` when given, else from ``images``."""
    source, partner, target, _ = info.indices(images.device)
    others = images if partners is None else partners
    a, b = images.index_select(0, source), others.index_select(0, partner)
    if info.image_op == "mixup":
        mixed = blend(a, b, info.lam, out=a)
    elif info.image_op == "cutmix":
        mixed = cutmix_rows(a, b, info.boxes)
    else:
        mixed = concat_rows(a, b, info.lam)
    return out.index_copy_(0, target, mixed)


def _blend_by_row(images: Tensor, out: Tensor, host: HostRows,
                  partner_rows: Tensor | None = None) -> Tensor:
    """Mixup pair by pair (CPU): each mixed row is written once, straight from its two
    rows, with no gathered copy of the pairs (a gather of the whole batch costs more than
    the mixing). In place, pairs run in the order (forwards or backwards) that reads the
    most partners before they are overwritten; the rest are read from a copy. Partners
    in ``partner_rows`` (rows of an earlier batch) are never overwritten."""
    targets, sources, partners, lams = host.target, host.source, host.partner, host.lam
    order: Sequence[int] = range(len(targets))
    saved: dict[int, Tensor] = {}
    others = images if partner_rows is None else partner_rows
    if out is others:
        order, stale = min(((o, _overwritten_before_read(targets, partners, o))
                            for o in (order, order[::-1])), key=lambda pair: len(pair[1]))
        if stale:
            saved = dict(zip(stale, images.index_select(0, torch.tensor(stale)), strict=True))
    for k in order:
        partner = saved[partners[k]] if partners[k] in saved else others[partners[k]]
        blend(images[sources[k]], partner, lams[k], out=out[targets[k]])
    return out


def _overwritten_before_read(targets: list[int], partners: list[int],
                             order: Sequence[int]) -> list[int]:
    """Partner rows that an earlier pair of ``order`` overwrites before they are read."""
    step = {targets[k]: i for i, k in enumerate(order)}
    return list(dict.fromkeys(partners[k] for i, k in enumerate(order)
                              if step.get(partners[k], i) < i))


def _output_batch(images: Tensor, info: MixGenInfo, inplace: bool) -> Tensor:
    """The tensor the mixed batch is written into, with the unmixed rows already there.

    On the CPU only the rows no pair overwrites are copied, so every output row is
    written once; elsewhere one copy of the batch is fewer kernels than many runs.
    """
    if info.mode == "replace" and inplace:
        return images
    if info.mode == "append":
        out = new_batch_like(images, info.output_size)
        out[:info.batch_size].copy_(images)
        return out
    host = info.host
    if host is None or not (host.halves or images.device.type == "cpu"):
        return images.clone()
    out = torch.empty_like(images)
    for start, stop in _unmixed_runs(info.batch_size, host.target):
        out[start:stop].copy_(images[start:stop])
    return out


def _unmixed_runs(batch_size: int, targets: list[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the rows ``0..batch_size-1`` that are not targets."""
    mixed = set(targets)
    runs: list[tuple[int, int]] = []
    for row in range(batch_size):
        if row in mixed:
            continue
        if runs and runs[-1][1] == row:
            runs[-1] = (runs[-1][0], row + 1)
        else:
            runs.append((row, row + 1))
    return runs


def new_batch_like(images: Tensor, rows: int) -> Tensor:
    """An empty batch of ``rows`` rows shaped, typed and laid out like ``images``."""
    layout = (torch.channels_last if images.ndim == 4 and not images.is_contiguous()
              and images.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    return torch.empty((rows, *images.shape[1:]), dtype=images.dtype, device=images.device,
                       memory_format=layout)


def stack_mixed(samples: Sequence[Tensor], info: MixGenInfo, out: Tensor,
                partners: Sequence[Tensor] | None = None, *, check: bool = True) -> Tensor:
    """Collate and mix in one pass: write ``samples`` and their mixes into ``out``.

    ``out`` has ``info.output_size`` rows. For mixup each run of unmixed rows is stacked
    in one call, as ``default_collate`` does, and each mixed row is blended straight from
    the two samples, so the batch is written exactly once; other ops stack the samples,
    then mix the pairs into ``out``. ``partners``: the samples of an earlier batch that
    an info of ``pairing="previous"`` pairs with; ``check`` as in :func:`mix_images`.
    """
    if check:
        check_partners(info, partners)
    host, batch = info.host or info.to("cpu").host, info.batch_size
    if info.image_op != "mixup":
        torch.stack(list(samples), out=out[:batch])
        stacked = None if partners is None or not info.applied else torch.stack(list(partners))
        return _place_gathered(out[:batch], info, out, stacked)
    for start, stop in _unmixed_runs(batch, host.target if info.mode == "replace" else []):
        torch.stack(list(samples[start:stop]), out=out[start:stop])
    others = samples if partners is None else partners
    for target, source, partner, lam in zip(host.target, host.source, host.partner, host.lam,
                                            strict=True):
        blend(samples[source], others[partner], lam, out=out[target])
    return out


def append_rows(value: object, info: MixGenInfo) -> object:
    """A per-sample field (tensor or list of length B) grown by the sources' entries.

    In ``append`` mode the new pairs carry their source sample's other fields (ids,
    labels, keys); anything that is not per-sample is returned as it is.
    """
    if info.mode != "append":
        return value
    if isinstance(value, Tensor) and value.ndim and value.shape[0] == info.batch_size:
        return torch.cat([value, value.index_select(0, info.indices(value.device).source)])
    if isinstance(value, (list, tuple)) and len(value) == info.batch_size:
        return type(value)([*value, *(value[i] for i in info.source.tolist())])
    return value


def mixgen(images: Tensor, texts: Sequence[str], num_pairs: int | None = None,
           lam: float = 0.5, sep: str = " ") -> tuple[Tensor, list[str]]:
    """The paper's MixGen, out of place: the first ``num_pairs`` samples (default B // 4)
    become ``lam * image[i] + (1 - lam) * image[i + num_pairs]`` with captions joined.
    """
    check_images(images)
    check_texts(texts, images.shape[0])
    batch = images.shape[0]
    count = batch // 4 if num_pairs is None else num_pairs
    if not 0 <= count <= batch // 2:
        raise ValueError(f"num_pairs must be in [0, {batch // 2}] for a batch of {batch}, "
                         f"got {count}")
    check_unit_interval("lam", lam)
    source, partner = sample_pairs(batch, count, "first")
    info = MixGenInfo(batch_size=batch, mode="replace", pairing="first", source=source,
                      partner=partner, lam=torch.full((count,), float(lam)))
    return mix_images(images, info), mix_texts(texts, info, sep=sep)
