"""Input checks of the batch, its captions, and an info given for it: each raises
``TypeError``/``ValueError`` naming what is wrong, before anything is written. An
info's own consistency is checked where it is built (:mod:`mixgen.info`).

They read shapes, dtypes, strides and devices, and values only where these are already on
the host: reading a device tensor would wait for the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mixgen.info import MixGenInfo
from mixgen.tokens import TOKEN_FIELDS, token_fields


# ----------------------------------------------------------------------------- batches
def check_batch(images: Tensor | Sequence[Tensor], texts: Any, *, samples: bool,
                extra: Any = None, info: MixGenInfo | None = None, outside: bool = False,
                partners: tuple[Any, Any] | None = None,
                inplace: bool = False) -> tuple[int, tuple[int, int]]:
    """Every check of one batch that can fail, in one place, before anything is drawn or
    written: the images (a batch, or with ``samples`` a collate function's sample
    tensors), one caption per image in ``texts`` and ``extra``, an ``info`` given to
    replay (refused for ``outside`` pairings, whose partners are rows of an earlier
    batch), the ``partners`` kept of that batch (``(images, texts)``), and with
    ``inplace`` the writability of what is written. Returns the batch size and ``(H, W)``.
    """
    if samples:
        check_samples(images)
        size, image_size = len(images), tuple(images[0].shape[-2:])
    else:  # shapes only: even a view of a row is an op, costly with cold caches
        check_images(images)
        size, image_size = images.shape[0], tuple(images.shape[-2:])
    check_texts(texts, size)
    if extra is not None:
        check_texts(extra, size)
        if outside:
            raise ValueError("pairing='previous' mixes one form of captions: this batch keeps "
                             "its captions twice (token ids and another key); drop one")
    if info is not None and (outside or not info.partner_in_batch):
        raise ValueError("an info of pairing='previous' cannot be replayed: its partners are "
                         "rows of an earlier batch; MixGen with pairing='previous' draws "
                         "its own pairs")
    if partners is not None:
        check_partners_fit(images, texts, *partners)
    if info is not None:
        check_info_fits(info, size, image_size)
    if inplace:
        check_writable("images", images)
        for captions in (texts, extra):
            for name, value in token_fields(captions).items():
                if isinstance(value, Tensor):
                    check_writable(f"texts[{name!r}]" if isinstance(captions, Mapping)
                                   else "texts", value)
    return size, image_size


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


def check_samples(images: Sequence[Any]) -> None:
    """The images of a list of samples (a collate function's input) stack into a batch."""
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"the image of sample {i} must be a torch.Tensor, "
                            f"got {type(image).__name__}")
    shape, dtype = images[0].shape, images[0].dtype
    for i, image in enumerate(images):
        if image.shape != shape or image.dtype != dtype:
            raise ValueError(f"images must all have one shape and dtype: sample 0 is "
                             f"{tuple(shape)} {dtype}, sample {i} is {tuple(image.shape)} "
                             f"{image.dtype}")
    check_images(images[0].unsqueeze(0))


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
    fields = token_fields(texts)
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


def check_partners_fit(images: Tensor | Sequence[Tensor], texts: Any,
                       partner_images: Tensor | Sequence[Tensor], partner_texts: Any) -> None:
    """Rows kept of the previous batch mix with this batch: images of one shape, dtype
    and device; captions of one kind (strings, or token ids of one width and fields)."""
    for what, now, before in (("images", _row_kind(images), _row_kind(partner_images)),
                              ("captions", _caption_kind(texts), _caption_kind(partner_texts))):
        if now != before:
            raise ValueError(f"pairing='previous' mixes each batch with rows of the previous "
                             f"one, but their {what} differ: {before} before, {now} now")


def _row_kind(images: Tensor | Sequence[Tensor]) -> tuple:
    row = images[0] if not isinstance(images, Tensor) else images
    shape = row.shape if not isinstance(images, Tensor) else images.shape[1:]
    return tuple(shape), row.dtype, row.device


def _caption_kind(texts: Any) -> Any:
    if not isinstance(texts, (Tensor, Mapping)):
        return "strings"
    fields = token_fields(texts)
    return {name: (value.shape[1], value.dtype, value.device) for name, value in fields.items()}


def check_writable(name: str, tensor: Tensor) -> None:
    """Raise unless ``tensor`` can be written in place, row by row, without an error
    halfway: not a tensor autograd tracks, not an inference tensor outside inference
    mode, no rows sharing memory (an expanded view)."""
    if tensor.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} requires grad, and autograd forbids writing it in place: "
                         f"use inplace=False, or mix under torch.no_grad()")
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(f"{name} is an inference tensor (made under torch.inference_mode), "
                         f"read-only outside it: use inplace=False")
    strides = tensor.stride()
    if 0 in strides and any(stride == 0 and size > 1
                            for stride, size in zip(strides, tensor.shape, strict=True)):
        raise ValueError(f"{name} has overlapping memory (an expanded view, stride 0 in shape "
                         f"{tuple(tensor.shape)}): its rows cannot be written one by one; "
                         f"use inplace=False or pass a copy")


# ----------------------------------------------------------------------------- infos
def check_partners(info: MixGenInfo, partners: Sequence | Tensor | Mapping | None) -> None:
    """Partners are read from ``partners`` (the rows of an earlier batch) exactly when the
    info's partners are outside its batch, and every partner index is one of its rows."""
    if info.partner_in_batch:
        if partners is not None:
            raise ValueError(f"partners given, but info.pairing={info.pairing!r} pairs rows "
                             f"of the batch itself")
        return
    if not info.applied:
        return
    if partners is None:
        raise ValueError(f"info.pairing={info.pairing!r}: its partners are rows of an earlier "
                         f"batch, which must be given as partners=")
    rows = len(partners["input_ids"] if isinstance(partners, Mapping) else partners)
    host = info.host
    if host is not None and max(host.partner) >= rows:
        raise ValueError(f"info has partner indices up to {max(host.partner)} but partners "
                         f"has {rows} rows")


def check_info_fits(info: MixGenInfo, batch_size: int, image_size: tuple[int, int]) -> None:
    """A given info (a replay) describes this batch: its size, and its cutmix boxes lie
    inside the images (read when the boxes are on the host)."""
    if info.batch_size != batch_size:
        raise ValueError(f"info describes a batch of {info.batch_size} samples but images "
                         f"has {batch_size}")
    if info.boxes is None or info.boxes.device.type != "cpu" or not info.applied:
        return
    top, left, height, width = info.boxes.T
    inside = ((top >= 0) & (left >= 0) & (height >= 0) & (width >= 0)
              & (top + height <= image_size[0]) & (left + width <= image_size[1]))
    if not bool(inside.all()):
        raise ValueError(f"info.boxes has boxes outside the {image_size[0]}x{image_size[1]} "
                         f"images: {info.boxes[~inside].tolist()}")
