"""Pure MixGen kernels: no randomness, no classes, no I/O.

Each kernel takes the batch and a :class:`~mixgen.params.MixGenInfo` (the pairs and
lambdas) and returns the mixed batch. Every dtype and layout decision lives here:
float images are blended with one ``torch.lerp`` pass, ``uint8`` images exactly with
round-half-up, ``channels_last`` is kept, and any number of leading dimensions after the
batch works (``[B, C, H, W]`` images, ``[B, T, C, H, W]`` clips).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from mixgen.params import MixGenInfo, sample_pairs

MULTI_CAPTION = ("by_position", "pick_one")
_UINT8_CHUNK_ROWS = 16


# ----------------------------------------------------------------------------- checks
def check_images(images: object) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``images`` is a non-empty image batch."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape [B, C, H, W] or "
                        f"[B, T, C, H, W], got {type(images).__name__}")
    if images.ndim not in (4, 5):
        raise ValueError(f"images must have 4 dimensions [B, C, H, W] or 5 [B, T, C, H, W], "
                         f"got {images.ndim} (shape {tuple(images.shape)})")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images must be a floating point or uint8 tensor, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (batch size 0)")


def check_texts(texts: object, batch_size: int) -> None:
    """Raise unless ``texts`` is ``list[str]`` or ``list[list[str]]`` with one entry per image."""
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of str or a list of lists of str, "
                        f"got {type(texts).__name__}")
    if len(texts) != batch_size:
        raise ValueError(f"texts has {len(texts)} captions but images has {batch_size} "
                         f"images: there must be one entry per image")
    for i, caption in enumerate(texts):
        if isinstance(caption, str):
            continue
        if isinstance(caption, (list, tuple)) and caption and all(isinstance(c, str)
                                                                   for c in caption):
            continue
        if isinstance(caption, (list, tuple)) and not caption:
            raise ValueError(f"texts[{i}] is an empty list: each image needs at least one "
                             f"caption")
        raise TypeError(f"texts[{i}] must be a str or a list of str, "
                        f"got {type(caption).__name__}: {caption!r:.60}")


# ----------------------------------------------------------------------------- images
def blend(a: Tensor, b: Tensor, lam: Tensor, out: Tensor | None = None) -> Tensor:
    """``lam * a + (1 - lam) * b`` row by row, written into ``out`` when given.

    ``lam`` holds one weight per row of ``a`` (or is 0-d for a single sample). Float
    dtypes use ``torch.lerp`` (one pass; equal to the formula within float rounding).
    ``uint8`` is exact with round-half-up: ``floor(lam*a + (1-lam)*b + 0.5)`` in float32,
    computed a few rows at a time so no float batch is materialised, and with integer
    bit operations alone when every lambda is 0.5.
    """
    if out is None:
        out = torch.empty_like(a)
    if a.numel() == 0:
        return out
    weight = lam.to(device=a.device).reshape(lam.shape + (1,) * (a.ndim - lam.ndim))
    if a.is_floating_point():
        return torch.lerp(a, b, (1 - weight).to(a.dtype), out=out)
    if bool((lam == 0.5).all()):
        # ceil((a + b) / 2) without overflow: (a | b) - ((a ^ b) >> 1)
        half_diff = torch.bitwise_xor(a, b).bitwise_right_shift_(1)
        torch.bitwise_or(a, b, out=out)
        return out.sub_(half_diff)
    rows = a.shape[0] if lam.ndim else 1
    chunk = _UINT8_CHUNK_ROWS if lam.ndim else 1
    for start in range(0, rows, chunk):
        part = slice(start, start + chunk) if lam.ndim else slice(None)
        w = weight[part].float()
        mixed = a[part].float() * w + b[part].float() * (1 - w) + 0.5
        out[part].copy_(mixed.floor_())
    return out


def cutmix_rows(a: Tensor, b: Tensor, boxes: Tensor) -> Tensor:
    """Rows of ``a`` with the box ``(top, left, height, width)`` of each taken from ``b``."""
    out = a.clone()
    for row, (top, left, height, width) in enumerate(boxes.tolist()):
        region = (..., slice(top, top + height), slice(left, left + width))
        out[row][region] = b[row][region]
    return out


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


def mix_images(images: Tensor, info: MixGenInfo, *, op: str = "mixup",
               inplace: bool = False) -> Tensor:
    """The image batch with each pair of ``info`` mixed by ``op`` (mixup, cutmix, concat).

    Partners are always read from the original batch, never from a row already mixed.
    ``replace`` mode writes the mixed rows over their sources (into ``images`` itself
    when ``inplace``); ``append`` mode returns ``B + M`` rows, originals first.
    """
    info = info.to(images.device)
    m, batch = info.num_pairs, info.batch_size
    append = info.mode == "append"
    if inplace and append:
        raise ValueError("inplace=True cannot be combined with mode='append': the batch grows")
    out = _output_batch(images, info, inplace)
    if m == 0:
        return out
    mixed_rows = out[batch:] if append else None
    if op == "mixup" and info.pairing == "first":
        # contiguous halves: blend straight into the output rows, no gather
        target = mixed_rows if append else out[:m]
        blend(images[:m], images[m:2 * m], info.lam, out=target)
        return out
    a, b = images.index_select(0, info.source), images.index_select(0, info.partner)
    if op == "mixup":
        mixed = blend(a, b, info.lam, out=mixed_rows)
    elif op == "cutmix":
        mixed = cutmix_rows(a, b, info.boxes)
    elif op == "concat":
        mixed = concat_rows(a, b, info.lam)
    else:
        raise ValueError(f"op must be 'mixup', 'cutmix' or 'concat', got {op!r}")
    if append:
        if mixed is not mixed_rows:
            mixed_rows.copy_(mixed)
    else:
        out.index_copy_(0, info.source, mixed)
    return out


def _output_batch(images: Tensor, info: MixGenInfo, inplace: bool) -> Tensor:
    """The tensor the mixed batch is written into, with the unmixed rows already there."""
    if info.mode == "replace":
        if inplace:
            return images
        if info.pairing == "first" and info.num_pairs:
            out = torch.empty_like(images)
            out[info.num_pairs:].copy_(images[info.num_pairs:])
            return out
        return images.clone()
    out = new_batch_like(images, info.output_size)
    out[:info.batch_size].copy_(images)
    return out


def new_batch_like(images: Tensor, rows: int) -> Tensor:
    """An empty batch of ``rows`` rows shaped, typed and laid out like ``images``."""
    layout = (torch.channels_last if images.ndim == 4 and not images.is_contiguous()
              and images.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    return torch.empty((rows, *images.shape[1:]), dtype=images.dtype, device=images.device,
                       memory_format=layout)


def stack_mixed(samples: Sequence[Tensor], info: MixGenInfo, out: Tensor) -> Tensor:
    """Collate and mixup in one pass: write ``samples`` and their mixes into ``out``.

    ``out`` has ``info.output_size`` rows. Each unmixed row is copied once and each mixed
    row is blended straight from the two samples, so the batch is written exactly once.
    """
    mixed_targets = set(info.target.tolist())
    for row, sample in enumerate(samples):
        if info.mode == "append" or row not in mixed_targets:
            out[row].copy_(sample)
    for target, source, partner, lam in zip(info.target.tolist(), info.source.tolist(),
                                            info.partner.tolist(), info.lam, strict=True):
        blend(samples[source], samples[partner], lam, out=out[target])
    return out


# ----------------------------------------------------------------------------- captions
def mix_texts(texts: Sequence, info: MixGenInfo, *, op: str = "concat", sep: str = " ",
              multi_caption: str = "by_position", inplace: bool = False) -> list:
    """The captions with each pair of ``info`` mixed by ``op`` (``concat`` or ``select``).

    ``concat`` joins source and partner captions with ``sep``; ``select`` keeps the
    caption of the image with the larger weight (``info.keep_source_text``). With several
    captions per image, ``multi_caption="by_position"`` joins caption k of the source with
    caption k of the partner (cycling the shorter list), ``"pick_one"`` joins one caption
    of each, chosen by ``info.caption_choice``.
    """
    new = [_mixed_caption(texts[s], texts[p], k, info, op, sep, multi_caption)
           for k, (s, p) in enumerate(zip(info.source.tolist(), info.partner.tolist(),
                                          strict=True))]
    out = texts if inplace and isinstance(texts, list) else list(texts)
    if info.mode == "append":
        out.extend(new)
    else:
        for target, caption in zip(info.source.tolist(), new, strict=True):
            out[target] = caption
    return out


def _mixed_caption(first, second, k: int, info: MixGenInfo, op: str, sep: str,
                   multi_caption: str):
    if op == "select":
        return first if bool(info.keep_source_text[k]) else second
    if op != "concat":
        raise ValueError(f"op must be 'concat' or 'select', got {op!r}")
    if isinstance(first, str) and isinstance(second, str):
        return first + sep + second
    first = [first] if isinstance(first, str) else list(first)
    second = [second] if isinstance(second, str) else list(second)
    if multi_caption == "pick_one":
        u = info.caption_choice[k].tolist()
        return [first[int(u[0] * len(first))] + sep + second[int(u[1] * len(second))]]
    if multi_caption != "by_position":
        raise ValueError(f"multi_caption must be one of {MULTI_CAPTION}, got {multi_caption!r}")
    count = max(len(first), len(second))
    return [first[i % len(first)] + sep + second[i % len(second)] for i in range(count)]


def append_rows(value, info: MixGenInfo):
    """A per-sample field (tensor or list of length B) grown by the sources' entries.

    In ``append`` mode the new pairs carry their source sample's other fields (ids,
    labels, keys); anything that is not per-sample is returned as it is.
    """
    if info.mode != "append":
        return value
    if isinstance(value, Tensor) and value.ndim and value.shape[0] == info.batch_size:
        return torch.cat([value, value.index_select(0, info.source.to(value.device))])
    if isinstance(value, (list, tuple)) and len(value) == info.batch_size:
        return type(value)([*value, *(value[i] for i in info.source.tolist())])
    return value


# ----------------------------------------------------------------------------- paper default
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
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    source, partner = sample_pairs(batch, count, "first")
    info = MixGenInfo(batch_size=batch, mode="replace", pairing="first", source=source,
                      partner=partner, lam=torch.full((count,), float(lam)))
    return mix_images(images, info), mix_texts(texts, info, sep=sep)
