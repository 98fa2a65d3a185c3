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

Ids are checked against their layout where they are on the CPU (a DataLoader worker, a
collate function). On another device the check would wait for the device, so rows there
are trusted: a row that breaks the layout gives a wrong joined row, never an error.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

OPEN_CLIP_START = 49406
OPEN_CLIP_END = 49407
SIDES = ("right", "left")
TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")
"""The token fields of a Hugging Face encoding that MixGen rebuilds for joined captions."""


def token_fields(texts: Any) -> dict[str, Any]:
    """The fields of token-id captions by name: a dict's own, or ``{"input_ids": ids}``."""
    return dict(texts) if isinstance(texts, Mapping) else {"input_ids": texts}


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
    if ids.ndim == 2 and ids.shape[1] >= 2 and (
            not ids.is_cpu or bool((ids[:, 0] == OPEN_CLIP_START).all())):
        return OPEN_CLIP  # on a device, trusted: reading the ids would wait for it
    raise ValueError("texts are token ids that are not in open_clip's layout (not every row "
                     f"starts with {OPEN_CLIP_START}): pass the tokenizer that made them, "
                     "MixGen(tokenizer=...), so its special ids and padding side are known")


def caption_lengths(ids: Tensor, layout: TokenLayout, mask: Tensor | None = None) -> Tensor:
    """Number of ids of each row that are not padding, special tokens included.

    From ``mask`` when given; otherwise (right padding only) one past the first end id,
    since open_clip pads with 0, which is also a real token ("!"). Raises ``ValueError``
    naming the first row that does not follow ``layout`` (CPU ids only; see the module's
    note). A dozen tensor ops whatever the batch size: all rows are checked at once, and
    the message is worked out only when a row is bad.
    """
    width = ids.shape[1]
    if mask is not None:
        lengths = mask.sum(1, dtype=torch.long)
    elif layout.padding_side == "right" and layout.end:
        lengths = (ids == layout.end[-1]).byte().argmax(1).add_(1)
    else:
        raise ValueError("texts needs an attention_mask: with left padding or no end token "
                         "the caption lengths cannot be read from the ids")
    specials, expected, slope, base = _special_positions(layout, width, ids.dtype, ids.device)
    if not ids.is_cpu:
        return lengths.clamp_(specials, width)  # unchecked: a bad row still joins in bounds
    found = ids.gather(1, (lengths[:, None] * slope).add_(base).clamp_(0, width - 1))
    bad = (found != expected).any(1) | (lengths < specials)
    if bool(bad.any()):
        raise ValueError(_layout_error(ids, layout, mask, bad))
    return lengths


@functools.lru_cache(maxsize=64)
def _special_positions(layout: TokenLayout, width: int, dtype: torch.dtype,
                       device: torch.device) -> tuple[int, Tensor, Tensor, Tensor]:
    """Where the special ids of a row of ``length`` ids sit: the i-th start id at
    ``first + i`` and the j-th of ``E`` end ids at ``first + length - E + j``, where
    ``first`` is ``width - length`` for left padding and 0 for right padding; that is
    ``length * slope + base``. Returns their count, the ids, ``slope`` and ``base``."""
    n_start, n_end = len(layout.start), len(layout.end)
    left_pad = int(layout.padding_side == "left")
    slope = [-left_pad] * n_start + [1 - left_pad] * n_end
    base = [left_pad * width + offset for offset in [*range(n_start), *range(-n_end, 0)]]
    return (n_start + n_end, _to_device([*layout.start, *layout.end], dtype, device),
            _to_device(slope, torch.long, device), _to_device(base, torch.long, device))


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant made on the host and copied without waiting for the device."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _layout_error(ids: Tensor, layout: TokenLayout, mask: Tensor | None, bad: Tensor) -> str:
    """The message for the first row of ``ids`` that does not follow ``layout``."""
    if mask is None:
        missing = ~(ids == layout.end[-1]).any(1)
        if bool(missing.any()):
            row = int(missing.nonzero()[0])
            return (f"texts row {row} has no end token {layout.end[-1]}: "
                    f"not a row of this tokenizer's layout")
    row = int(bad.nonzero()[0])
    return (f"texts row {row} does not follow the tokenizer's layout (start "
            f"{list(layout.start)}, end {list(layout.end)}, "
            f"{layout.padding_side} padding): {ids[row].tolist()}")


def concat_ids(ids: Tensor, lengths: Tensor, source: Tensor, partner: Tensor,
               layout: TokenLayout) -> tuple[Tensor, Tensor]:
    """Join caption ``ids[source[k]]`` with caption ``ids[partner[k]]`` for every k, on the ids.

    Row k becomes ``start + content(source) + separator + content(partner) + end``, the
    content cut on the layout's truncation side to fit the width ``L`` (the end token
    stays last, as open_clip's and Hugging Face's tokenizers do), padded on its padding
    side. Because a cut row keeps the content the joined row needs, the result equals
    tokenizing the joined string even when an input row was itself truncated.
    ``lengths`` are the rows' :func:`caption_lengths`. Returns ``(ids, lengths)`` of the
    joined rows.

    A joined row is made of seven runs (padding, start, source content, separator,
    partner content, end, padding), each copying consecutive ids of one place. Where the
    runs begin and where they copy from are affine in the two lengths, the kept length
    and the two row numbers, so one small matrix product gives them for every row
    (:func:`_join_plan`); a cumulative sum spreads each run's offset over its positions
    and one ``take`` reads all rows: about twenty tensor ops whatever the batch size, no
    loop over rows.
    """
    width = ids.shape[1]
    if width < len(layout.start) + len(layout.end):
        raise ValueError(f"texts rows of {width} ids cannot hold the "
                         f"{len(layout.start) + len(layout.end)} special tokens of the layout")
    specials, coefficients, bias, positions = _join_plan(layout, width, ids.dtype, ids.device)
    len_a, len_b = lengths[source], lengths[partner]
    content = len(layout.separator) - 2 * (len(layout.start) + len(layout.end))
    keep = (len_a + len_b).add_(content).clamp_(max=width - len(layout.start) - len(layout.end))
    # float64 is exact on these small integers, and matrix products of integers are CPU-only
    basis = torch.stack([len_a, len_b, keep, source, partner], 1).double()
    plan = torch.addmm(bias, basis, coefficients).long()  # [M, 6 + 1 + 6 + 1]
    run_starts, first_offset, offset_steps = plan[:, :6], plan[:, 6:7], plan[:, 7:13]
    # the content runs are empty where truncation cut them away
    run_starts[:, 2:4].clamp_(run_starts[:, 1:2], run_starts[:, 4:5])
    # each position's offset: the first run's, changed by each later run where it begins
    steps = torch.zeros((len(plan), width + 1), dtype=plan.dtype, device=plan.device)
    steps.scatter_add_(1, run_starts, offset_steps)
    index = steps.cumsum_(1)[:, :width].add_(first_offset).add_(positions)
    table = torch.cat([specials, ids.reshape(-1)])
    return table.take(index), plan[:, 13]


@functools.lru_cache(maxsize=64)
def _join_plan(layout: TokenLayout, width: int, dtype: torch.dtype,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The constants of :func:`concat_ids` for one layout and width.

    Returns the ids the table starts with (start, separator, end, then ``width`` pads;
    the batch's rows follow), the coefficients and bias of the affine map from
    ``(len_a, len_b, keep, source, partner)`` to the runs' starts, offsets and the joined
    length (read off :func:`_join_runs` at the origin and at each unit vector), and the
    positions ``0..L-1``.
    """
    origin = _join_runs(0, 0, 0, 0, 0, layout, width)
    units = [_join_runs(*(int(i == j) for i in range(5)), layout, width) for j in range(5)]
    coefficients = [[unit - base for unit, base in zip(row, origin, strict=True)]
                    for row in units]
    specials = [*layout.start, *layout.separator, *layout.end, *[layout.pad_id] * width]
    return (_to_device(specials, dtype, device), _to_device(coefficients, torch.float64, device),
            _to_device(origin, torch.float64, device), torch.arange(width, device=device))


def _join_runs(len_a: int, len_b: int, keep: int, source: int, partner: int,
               layout: TokenLayout, width: int) -> list[int]:
    """For one joined row: where runs 1-6 begin (run 0, padding, begins at 0), the offset
    run 0 adds to a position to get its index in the table of :func:`concat_ids`, how
    much each later run changes that offset, and the row's length. Affine in the five
    row values, which is what :func:`_join_plan` relies on."""
    n_start, n_sep, n_end = len(layout.start), len(layout.separator), len(layout.end)
    at_sep = n_start
    at_end = at_sep + n_sep
    at_pad = at_end + n_end
    at_rows = at_pad + width
    left_pad = int(layout.padding_side == "left")
    content_a = len_a - n_start - n_end
    total = content_a + n_sep + len_b - n_start - n_end
    skip = (total - keep) * int(layout.truncation_side == "left")
    length = keep + n_start + n_end
    shift = (width - length) * left_pad  # where the joined caption begins in its row
    begin_a = (width - len_a) * left_pad + n_start  # where each content begins in its row
    begin_b = (width - len_b) * left_pad + n_start
    # position k of run r reads table[k + offset_r]; c = k - shift - n_start + skip is the
    # position in the joined content
    starts = [shift, shift + n_start, shift + n_start - skip + content_a,
              shift + n_start - skip + content_a + n_sep, shift + n_start + keep,
              shift + length]
    offsets = [at_pad + width - shift,                       # padding before (left padding)
               -shift,                                       # start ids
               at_rows + width * source + begin_a - n_start + skip - shift,
               at_sep - n_start + skip - content_a - shift,  # separator ids
               at_rows + width * partner + begin_b - n_start + skip - content_a - n_sep - shift,
               at_end - n_start - keep - shift,              # end ids
               at_pad - length - shift]                      # padding after
    steps = [after - before for before, after in itertools.pairwise(offsets)]
    return [*starts, offsets[0], *steps, length]


def attention_mask(lengths: Tensor, width: int, layout: TokenLayout,
                   dtype: torch.dtype = torch.long) -> Tensor:
    """``[rows, width]`` mask, 1 on each row's ``lengths`` ids on the non-padding side."""
    position = torch.arange(width, device=lengths.device)
    if layout.padding_side == "left":
        return (position >= width - lengths[:, None]).to(dtype)
    return (position < lengths[:, None]).to(dtype)
