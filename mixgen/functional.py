"""Pure MixGen kernels: no randomness, no classes, no I/O.

Each kernel takes the batch and a :class:`~mixgen.params.MixGenInfo` (the pairs and
lambdas) and returns the mixed batch. Every dtype and layout decision lives here:
float images are blended with one ``torch.lerp`` pass, ``uint8`` images exactly with
round-half-up, ``channels_last`` is kept, and any number of leading dimensions after the
batch works (``[B, C, H, W]`` images, ``[B, T, C, H, W]`` clips).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from mixgen import tokens
from mixgen.params import MixGenInfo, sample_pairs

MULTI_CAPTION = ("by_position", "pick_one")
TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")
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
    """Raise unless ``texts`` holds one caption per image: ``list[str]``, ``list[list[str]]``,
    ``[B, L]`` token ids, or a dict of ``input_ids`` (+ ``attention_mask``) tensors."""
    if isinstance(texts, (Tensor, Mapping)):
        check_token_texts(texts, batch_size)
        return
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


def check_token_texts(texts: object, batch_size: int) -> None:
    """Raise unless ``texts`` is a ``[B, L]`` integer id tensor or a dict of such tensors
    (``input_ids``, optional ``attention_mask`` and ``token_type_ids``)."""
    fields = dict(texts) if isinstance(texts, Mapping) else {"input_ids": texts}
    if "input_ids" not in fields:
        raise ValueError(f"texts is a dict without 'input_ids'; its keys are {sorted(fields)}")
    unknown = sorted(set(fields) - set(TOKEN_FIELDS))
    if unknown:
        raise ValueError(f"texts has keys {unknown} that MixGen cannot rebuild for joined "
                         f"captions; keep only {list(TOKEN_FIELDS)}")
    for name, value in fields.items():
        where = "texts" if not isinstance(texts, Mapping) else f"texts[{name!r}]"
        if not isinstance(value, Tensor):
            raise TypeError(f"{where} must be a torch.Tensor of token ids (tokenize with "
                            f"return_tensors='pt'), got {type(value).__name__}")
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{where} must hold integer token ids, got {value.dtype}")
        if value.ndim != 2 or value.shape[0] != batch_size:
            raise ValueError(f"{where} must have shape [B, L] with B = {batch_size} images, "
                             f"got {tuple(value.shape)}")
        if value.shape != fields["input_ids"].shape:
            raise ValueError(f"{where} has shape {tuple(value.shape)} but input_ids has "
                             f"{tuple(fields['input_ids'].shape)}")


# ----------------------------------------------------------------------------- images
_FUSED_MIN_BYTES = 1 << 20
_BYTE_LOW_BITS = 0x7F7F7F7F7F7F7F7F
_compiled: dict[str, Callable[..., None] | None] = {}


def blend(a: Tensor, b: Tensor, lam: Tensor | float, out: Tensor | None = None) -> Tensor:
    """``lam * a + (1 - lam) * b`` row by row, written into ``out`` when given.

    ``lam`` holds one weight per row of ``a`` (or is 0-d, or a float, for one weight).
    Float dtypes use ``torch.lerp`` (one pass; equal to the formula within float rounding).
    ``uint8`` is exact with round-half-up: ``floor(lam*a + (1-lam)*b + 0.5)`` in float32,
    computed a few rows at a time so no float batch is materialised; when every lambda
    is 0.5 (the paper's default) it is ``ceil((a + b) / 2)`` in integer arithmetic.
    """
    if out is None:
        out = torch.empty_like(a)
    if a.numel() == 0:
        return out
    lam = _common_value(lam)
    if not isinstance(lam, Tensor):
        if a.is_floating_point():
            return torch.lerp(a, b, 1.0 - lam, out=out)
        if lam == 0.5:
            return _uint8_midpoint(a, b, out)
        lam = torch.tensor(lam, dtype=torch.float32)
    weight = lam.to(device=a.device).reshape(lam.shape + (1,) * (a.ndim - lam.ndim))
    if a.is_floating_point():
        return torch.lerp(a, b, (1 - weight).to(a.dtype), out=out)
    rows = a.shape[0] if lam.ndim else 1
    chunk = _UINT8_CHUNK_ROWS if lam.ndim else 1
    for start in range(0, rows, chunk):
        part = slice(start, start + chunk) if lam.ndim else slice(None)
        w = weight[part].float()
        mixed = a[part].float() * w + b[part].float() * (1 - w) + 0.5
        out[part].copy_(mixed.floor_())
    return out


def _common_value(lam: Tensor | float) -> Tensor | float:
    """``lam`` as one float when every weight is the same (fixed lambdas: the paper's
    default), so the blend runs with a scalar weight and no per-row weight tensor.
    Lambdas on another device stay a tensor: reading them would wait for the device."""
    if not isinstance(lam, Tensor) or lam.device.type != "cpu":
        return lam
    values = lam.tolist()
    if not isinstance(values, list):
        return values
    return values[0] if values and values.count(values[0]) == len(values) else lam


def _uint8_midpoint(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``ceil((a + b) / 2)`` of ``uint8`` tensors, exactly and without overflow, into ``out``.

    It is ``(a | b) - ((a ^ b) >> 1)``. Stock ``uint8`` kernels make four passes over
    memory for it; a contiguous CPU tensor of 1 MiB or more takes one fused pass over
    64-bit words instead (eight pixels at a time), compiled by ``torch.compile`` on first
    use (a few seconds, once per process; DataLoader workers forked after the first use
    inherit it; ``TORCH_COMPILE_DISABLE=1`` skips it and runs the word formula eagerly).
    """
    if out.device.type == "cpu" and a.numel() >= _FUSED_MIN_BYTES:
        words = _word_views(out, a, b)
        if words is not None and _fused_midpoint(*words):
            return out
    half_diff = torch.bitwise_xor(a, b).bitwise_right_shift_(1)
    torch.bitwise_or(a, b, out=out)
    return out.sub_(half_diff)


def _word_views(out: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """Flat ``int64`` views of ``(out, a, b)`` for the fused kernel, or None.

    An ``out`` that is ``a`` (or ``b``) comes back as that input's very view object: the
    compiler handles an argument passed twice, not two views of the same memory. None
    when a tensor is not contiguous, not whole words, or ``out`` partly overlaps an input.
    """
    if not all(t.is_contiguous() and t.numel() % 8 == 0 and t.storage_offset() % 8 == 0
               for t in (out, a, b)):
        return None
    a_words, b_words = (t.view(-1).view(torch.int64) for t in (a, b))
    if out.data_ptr() == a.data_ptr():
        return a_words, a_words, b_words
    if out.data_ptr() == b.data_ptr():  # the formula is symmetric in a and b
        return b_words, b_words, a_words
    start, stop = out.data_ptr(), out.data_ptr() + out.numel()
    if any(t.data_ptr() < stop and start < t.data_ptr() + t.numel() for t in (a, b)):
        return None
    return out.view(-1).view(torch.int64), a_words, b_words


def _word_midpoint(out: Tensor, a: Tensor, b: Tensor) -> None:
    """Bytewise ``(a | b) - ((a ^ b) >> 1)`` on ``int64`` words; the mask clears the bit
    each byte receives from its neighbour in the shift, so no byte borrows from another."""
    out.copy_((a | b) - ((a ^ b) >> 1 & _BYTE_LOW_BITS))


def _fused_midpoint(out: Tensor, a: Tensor, b: Tensor) -> bool:
    """Run :func:`_word_midpoint` compiled; False from its first failure on (no C++
    compiler, a DataLoader worker that may not start one, ...), so callers stay eager."""
    if "midpoint" not in _compiled:
        # not fullgraph: where dynamo is disabled the function then simply runs eagerly
        _compiled["midpoint"] = torch.compile(_word_midpoint, dynamic=True)
    kernel = _compiled["midpoint"]
    if kernel is None:
        return False
    try:
        kernel(out, a, b)
    except Exception:  # whatever the compiler's failure, the eager formula gives the same bytes
        _compiled["midpoint"] = None
        return False
    return True


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
    if info.source.device != images.device:
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
        sources = images[:m]
        target = mixed_rows if append else sources if out is images else out[:m]
        blend(sources, images[m:2 * m], info.lam, out=target)
        return out
    if op == "mixup" and images.device.type == "cpu":
        return _blend_by_row(images, info, out)
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


def _blend_by_row(images: Tensor, info: MixGenInfo, out: Tensor) -> Tensor:
    """Mixup pair by pair (CPU): each mixed row is written once, straight from its two
    rows, with no gathered copy of the pairs (a gather of the whole batch costs more than
    the mixing). In place, pairs run in the order (forwards or backwards) that reads the
    most partners before they are overwritten; the rest are read from a copy."""
    targets, sources, partners = (t.tolist() for t in (info.target, info.source, info.partner))
    lams = info.lam.tolist()
    order: Sequence[int] = range(len(targets))
    saved: dict[int, Tensor] = {}
    if out is images:
        order, stale = min(((o, _overwritten_before_read(targets, partners, o))
                            for o in (order, order[::-1])), key=lambda pair: len(pair[1]))
        if stale:
            saved = dict(zip(stale, images.index_select(0, torch.tensor(stale)), strict=True))
    for k in order:
        partner = saved[partners[k]] if partners[k] in saved else images[partners[k]]
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

    Only the rows no pair overwrites are copied, so every output row is written once
    (row indices are read on the CPU only; elsewhere that would wait for the device).
    """
    if info.mode == "replace" and inplace:
        return images
    if info.mode == "replace" and info.pairing != "first" and images.device.type != "cpu":
        return images.clone()
    out = (torch.empty_like(images) if info.mode == "replace"
           else new_batch_like(images, info.output_size))
    for start, stop in _unmixed_runs(info):
        out[start:stop].copy_(images[start:stop])
    return out


def _unmixed_runs(info: MixGenInfo) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the input rows that stay as they are in the output."""
    if info.mode == "append":
        return [(0, info.batch_size)]
    if info.pairing == "first":
        return [(info.num_pairs, info.batch_size)]
    mixed = set(info.target.tolist())
    runs: list[tuple[int, int]] = []
    for row in range(info.batch_size):
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


def stack_mixed(samples: Sequence[Tensor], info: MixGenInfo, out: Tensor) -> Tensor:
    """Collate and mixup in one pass: write ``samples`` and their mixes into ``out``.

    ``out`` has ``info.output_size`` rows. Each run of unmixed rows is stacked in one
    call, as ``default_collate`` does, and each mixed row is blended straight from the
    two samples, so the batch is written exactly once.
    """
    for start, stop in _unmixed_runs(info):
        torch.stack(list(samples[start:stop]), out=out[start:stop])
    for target, source, partner, lam in zip(info.target.tolist(), info.source.tolist(),
                                            info.partner.tolist(), info.lam.tolist(),
                                            strict=True):
        blend(samples[source], samples[partner], lam, out=out[target])
    return out


# ----------------------------------------------------------------------------- captions
def mix_texts(texts: Sequence | Tensor | Mapping, info: MixGenInfo, *, op: str = "concat",
              sep: str = " ", multi_caption: str = "by_position", inplace: bool = False,
              layout: tokens.TokenLayout | None = None):
    """The captions with each pair of ``info`` mixed by ``op`` (``concat`` or ``select``).

    ``concat`` joins source and partner captions with ``sep``; ``select`` keeps the
    caption of the image with the larger weight (``info.keep_source_text``). With several
    captions per image, ``multi_caption="by_position"`` joins caption k of the source with
    caption k of the partner (cycling the shorter list), ``"pick_one"`` joins one caption
    of each, chosen by ``info.caption_choice``. Token ids (a tensor or a dict with
    ``input_ids``) go to :func:`mix_token_texts` with ``layout`` (default: open_clip's,
    if the ids are in it).
    """
    if isinstance(texts, (Tensor, Mapping)):
        ids = texts["input_ids"] if isinstance(texts, Mapping) else texts
        return mix_token_texts(texts, info, op=op, inplace=inplace,
                               layout=layout or tokens.infer_layout(ids, sep))
    sources = info.source.tolist()
    new = [_mixed_caption(texts[s], texts[p], k, info, op, sep, multi_caption)
           for k, (s, p) in enumerate(zip(sources, info.partner.tolist(), strict=True))]
    out = texts if inplace and isinstance(texts, list) else list(texts)
    if info.mode == "append":
        out.extend(new)
    else:
        for target, caption in zip(sources, new, strict=True):
            out[target] = caption
    return out


def mix_token_texts(texts: Tensor | Mapping, info: MixGenInfo, *, layout: tokens.TokenLayout,
                    op: str = "concat", inplace: bool = False) -> Tensor | Mapping:
    """Token-id captions with each pair of ``info`` joined (or selected) on the ids.

    ``texts`` is a ``[B, L]`` id tensor or a dict with ``input_ids`` and optionally
    ``attention_mask`` and ``token_type_ids``; the same structure comes back, masks
    rebuilt for the joined rows, ``token_type_ids`` zero there (one sequence). Joined rows
    equal the tokenizer's output for the joined string (:func:`mixgen.tokens.concat_ids`).
    """
    fields = dict(texts) if isinstance(texts, Mapping) else {"input_ids": texts}
    ids, mask = fields["input_ids"], fields.get("attention_mask")
    lengths = tokens.caption_lengths(ids, layout, mask)
    if info.source.device != ids.device:
        info = info.to(ids.device)
    source, partner = info.source, info.partner
    if op == "concat":
        new_ids, new_lengths = tokens.concat_ids(ids, lengths, source, partner, layout)
    elif op == "select":
        chosen = torch.where(info.keep_source_text, source, partner)
        new_ids, new_lengths = ids.index_select(0, chosen), lengths[chosen]
    else:
        raise ValueError(f"op must be 'concat' or 'select', got {op!r}")
    new_rows = {"input_ids": new_ids}
    if mask is not None:
        new_rows["attention_mask"] = tokens.attention_mask(new_lengths, ids.shape[1], layout,
                                                           mask.dtype)
    if "token_type_ids" in fields:
        new_rows["token_type_ids"] = torch.zeros_like(new_ids,
                                                      dtype=fields["token_type_ids"].dtype)
    out = {name: _place_rows(fields[name], rows, info, inplace)
           for name, rows in new_rows.items()}
    if not isinstance(texts, Mapping):
        return out["input_ids"]
    return out if type(texts) is dict else type(texts)(out)


def _place_rows(batch: Tensor, rows: Tensor, info: MixGenInfo, inplace: bool) -> Tensor:
    """``batch`` with the mixed ``rows`` at their targets: over the sources, or appended."""
    if info.mode == "append":
        return torch.cat([batch, rows])
    out = batch if inplace else batch.clone()
    return out.index_copy_(0, info.source, rows)


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
        if info.caption_choice is None:
            raise ValueError("multi_caption='pick_one' needs parameters drawn with "
                             "multi_caption='pick_one' (info.caption_choice is None)")
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
