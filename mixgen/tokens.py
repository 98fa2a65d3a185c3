"""Token-id layouts of caption batches, and caption concatenation done on the ids.

CLIP pipelines tokenize each caption before batching (open_clip's webdataset and CSV
loaders make every caption a ``[77]`` LongTensor), so a batch carries ``[B, L]`` ids, not
strings. Joining two captions on the ids gives what the tokenizer would give for the
joined string, ``[start] a b [end]``, without running it again:

- open_clip: ``[49406, tokens..., 49407, 0, 0, ...]``; a caption too long for ``L`` is cut
  to ``L`` with the end token kept last;
- Hugging Face: ``input_ids`` with an ``attention_mask``, the tokenizer's own special tokens
  (``[CLS] ... [SEP]`` for BERT), ``padding_side`` and ``truncation_side``.

A :class:`TokenLayout` holds what the ids alone cannot tell: the special ids around a
caption, the padding id and sides, and the ids of the separator. It is read from a
tokenizer object (:func:`layout_from_tokenizer`) or, for open_clip ids, from the ids
themselves (:func:`infer_layout`). This module imports nothing of ``mixgen`` and neither
open_clip nor transformers: tokenizers are only called, never imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

OPEN_CLIP_START = 49406
OPEN_CLIP_END = 49407
SIDES = ("right", "left")


@dataclass(frozen=True)
class TokenLayout:
    """How a tokenizer lays out one caption in a row of ``L`` ids.

    A row is ``start + content + end``, padded with ``pad_id`` on ``padding_side`` to
    ``L``; a content too long is cut on ``truncation_side``. ``separator`` holds the ids
    placed between two joined captions (none for a space).
    """

    start: tuple[int, ...]
    end: tuple[int, ...]
    pad_id: int = 0
    padding_side: str = "right"
    truncation_side: str = "right"
    separator: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) not in SIDES:
                raise ValueError(f"{name} must be 'right' or 'left', got {getattr(self, name)!r}")


OPEN_CLIP = TokenLayout(start=(OPEN_CLIP_START,), end=(OPEN_CLIP_END,), pad_id=0)
"""open_clip's ``SimpleTokenizer``: start 49406, end 49407, zero padding on the right."""


def layout_from_tokenizer(tokenizer: Any, sep: str = " ") -> TokenLayout:
    """Read the layout (special ids, padding, separator ids) from a tokenizer object.

    Accepts open_clip's ``SimpleTokenizer`` (or anything with ``sot_token_id`` and
    ``eot_token_id``), open_clip's ``HFTokenizer`` wrapper, a Hugging Face tokenizer, or a
    ``functools.partial`` of one of these. The Hugging Face special tokens are found by
    tokenizing a probe word with and without ``add_special_tokens``, which works for any
    tokenizer (BERT ``[CLS] x [SEP]``, RoBERTa ``<s> x </s>``, T5 ``x </s>``, GPT-2 ``x``).
    """
    while isinstance(tokenizer, functools.partial):
        tokenizer = tokenizer.func
    if hasattr(tokenizer, "sot_token_id") and hasattr(tokenizer, "eot_token_id"):
        return TokenLayout(start=(int(tokenizer.sot_token_id),),
                           end=(int(tokenizer.eot_token_id),),
                           separator=_encode_separator(tokenizer.encode, sep))
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "padding_side"):  # open_clip's HFTokenizer
        tokenizer = inner
    if hasattr(tokenizer, "padding_side") and callable(tokenizer):
        probe = "a"
        full = list(tokenizer(probe)["input_ids"])
        plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        at = next((i for i in range(len(full) - len(plain) + 1)
                   if full[i:i + len(plain)] == plain), None)
        if not plain or at is None:
            raise ValueError(f"could not find the special tokens of {type(tokenizer).__name__}: "
                             f"{probe!r} tokenizes to {full} with them and {plain} without")
        pad_id = tokenizer.pad_token_id
        return TokenLayout(
            start=tuple(full[:at]), end=tuple(full[at + len(plain):]),
            pad_id=0 if pad_id is None else int(pad_id),
            padding_side=tokenizer.padding_side,
            truncation_side=getattr(tokenizer, "truncation_side", "right"),
            separator=_encode_separator(
                lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], sep))
    raise TypeError(f"tokenizer must be an open_clip tokenizer or a Hugging Face tokenizer "
                    f"(or a functools.partial of one), got {type(tokenizer).__name__}: "
                    f"its special token ids cannot be read")


def _encode_separator(encode: Callable[[str], Any], sep: str) -> tuple[int, ...]:
    return tuple(int(i) for i in encode(sep)) if sep.strip() else ()


def infer_layout(ids: Tensor, sep: str = " ") -> TokenLayout:
    """open_clip's layout when every row starts with 49406; otherwise a ``ValueError``.

    Without a tokenizer only open_clip's ids identify themselves; any other layout needs
    the tokenizer to tell its special ids, padding side and the separator's ids.
    """
    if sep.strip():
        raise ValueError(f"sep={sep!r} cannot be turned into token ids without a tokenizer: "
                         f"pass tokenizer= to MixGen")
    if ids.ndim == 2 and ids.shape[1] >= 2 and bool((ids[:, 0] == OPEN_CLIP_START).all()):
        return OPEN_CLIP
    raise ValueError("texts are token ids that are not in open_clip's layout (not every row "
                     f"starts with {OPEN_CLIP_START}): pass the tokenizer that made them, "
                     "MixGen(tokenizer=...), so its special ids and padding side are known")


def caption_lengths(ids: Tensor, layout: TokenLayout, mask: Tensor | None = None) -> Tensor:
    """Number of ids of each row that are not padding, special tokens included.

    From ``mask`` when given; otherwise (right padding only) one past the first end id,
    since open_clip pads with 0, which is also a real token ("!"). Raises ``ValueError``
    naming the first row that does not follow ``layout``.
    """
    width = ids.shape[1]
    if mask is not None:
        lengths = mask.sum(1).long()
    elif layout.padding_side == "right" and layout.end:
        is_end = ids == layout.end[-1]
        lengths = is_end.int().argmax(1) + 1
        missing = ~is_end.any(1)
        if bool(missing.any()):
            row = int(missing.nonzero()[0])
            raise ValueError(f"texts row {row} has no end token {layout.end[-1]}: "
                             f"not a row of this tokenizer's layout")
    else:
        raise ValueError("texts needs an attention_mask: with left padding or no end token "
                         "the caption lengths cannot be read from the ids")
    specials = len(layout.start) + len(layout.end)
    first = width - lengths if layout.padding_side == "left" else torch.zeros_like(lengths)
    bad = lengths < specials
    for offset, token in enumerate(layout.start):
        bad |= ids.gather(1, (first + offset).clamp(max=width - 1)[:, None])[:, 0] != token
    for offset, token in enumerate(layout.end):
        position = first + lengths - len(layout.end) + offset
        bad |= ids.gather(1, position.clamp(0, width - 1)[:, None])[:, 0] != token
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"texts row {row} does not follow the tokenizer's layout (start "
                         f"{list(layout.start)}, end {list(layout.end)}, "
                         f"{layout.padding_side} padding): {ids[row].tolist()}")
    return lengths


def concat_ids(first: Tensor, first_lengths: Tensor, second: Tensor, second_lengths: Tensor,
               layout: TokenLayout) -> tuple[Tensor, Tensor]:
    """Join caption ``first[k]`` with caption ``second[k]`` for every row k, on the ids.

    Row k becomes ``start + content(first[k]) + separator + content(second[k]) + end``,
    the content cut on the layout's truncation side to fit the width ``L`` (the end
    token stays last, as open_clip's and Hugging Face's tokenizers do), padded on its
    padding side. Because a cut row keeps the content the joined row needs, the result
    equals tokenizing the joined string even when an input row was itself truncated.
    One ``gather`` over the batch, no loop over rows. Returns ``(ids, lengths)``.
    """
    rows, width = first.shape
    n_start, n_sep, n_end = len(layout.start), len(layout.separator), len(layout.end)
    room = width - n_start - n_end
    if room < 0:
        raise ValueError(f"texts rows of {width} ids cannot hold the {n_start + n_end} "
                         f"special tokens of the layout")
    left_pad = layout.padding_side == "left"
    len_a, len_b = first_lengths.long(), second_lengths.long()
    content_a, content_b = len_a - n_start - n_end, len_b - n_start - n_end
    # where each caption's content begins in its row
    begin_a = (width - len_a) * left_pad + n_start
    begin_b = (width - len_b) * left_pad + n_start
    total = content_a + n_sep + content_b
    keep = total.clamp(max=room)
    skip = total - keep if layout.truncation_side == "left" else torch.zeros_like(total)
    lengths = keep + n_start + n_end
    shift = (width - lengths) * left_pad

    # one table per row: [first | second | start | separator | end | pad]
    constants = torch.tensor([*layout.start, *layout.separator, *layout.end, layout.pad_id],
                             dtype=first.dtype, device=first.device)
    table = torch.cat([first, second, constants.expand(rows, -1)], dim=1)
    at_start, at_sep = 2 * width, 2 * width + n_start
    at_end, at_pad = at_sep + n_sep, at_sep + n_sep + n_end

    k = torch.arange(width, device=first.device) - shift[:, None]  # position in the caption
    c = k - n_start + skip[:, None]                                 # position in the content
    ca = content_a[:, None]
    from_content = torch.where(
        c < ca, begin_a[:, None] + c,
        torch.where(c < ca + n_sep, at_sep + c - ca, width + begin_b[:, None] + c - ca - n_sep))
    index = torch.where(k < lengths[:, None], at_end + k - n_start - keep[:, None], at_pad)
    index = torch.where(k < n_start + keep[:, None], from_content, index)
    index = torch.where(k < n_start, at_start + k, index)
    index = torch.where(k < 0, at_pad, index)
    return table.gather(1, index), lengths


def attention_mask(lengths: Tensor, width: int, layout: TokenLayout,
                   dtype: torch.dtype = torch.long) -> Tensor:
    """``[rows, width]`` mask, 1 on each row's ``lengths`` ids on the non-padding side."""
    position = torch.arange(width, device=lengths.device)
    if layout.padding_side == "left":
        return (position >= width - lengths[:, None]).to(dtype)
    return (position < lengths[:, None]).to(dtype)
