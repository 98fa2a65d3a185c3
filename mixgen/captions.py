"""Caption kernels: the captions of each pair joined (or one selected), as the info says.

Strings and lists of strings are joined in Python; token ids (a ``[B, L]`` tensor or a
dict with ``input_ids``) are joined on the ids (:mod:`mixgen.tokens`), on their device.
Mixing is two steps, so that an in-place call fails before writing anything:
:func:`caption_rows` makes the M new captions (every check that can fail happens here),
:func:`place_captions` puts them in the output (over the sources, or appended).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mixgen import tokens
from mixgen.checks import check_partners
from mixgen.config import MULTI_CAPTIONS, check_choice
from mixgen.info import MixGenInfo

Captions = Sequence | Tensor | Mapping


def check_op(name: str, op: str | None, info: MixGenInfo) -> None:
    """An op given beside an info must be the one it records: an info is mixed as it says."""
    recorded = getattr(info, name)
    if op is not None and op != recorded:
        raise ValueError(f"op={op!r} but info.{name}={recorded!r}: an info is mixed with the "
                         f"ops it records")


def mix_texts(texts: Captions, info: MixGenInfo, *, op: str | None = None, sep: str = " ",
              multi_caption: str = "by_position", inplace: bool = False,
              layout: tokens.TokenLayout | None = None,
              partners: Captions | None = None) -> Any:
    """The captions with each pair of ``info`` mixed by ``info.text_op``.

    ``concat`` joins source and partner captions with ``sep``; ``select`` keeps the
    caption of the image with the larger weight (``info.keep_source_text``). With several
    captions per image, ``multi_caption="by_position"`` joins caption k of the source with
    caption k of the partner (cycling the shorter list), ``"pick_one"`` joins one caption
    of each, chosen by ``info.caption_choice``. Token ids (a tensor or a dict with
    ``input_ids``) are joined on the ids in ``layout`` (default: open_clip's, if the ids
    are in it). ``op``, if given, must be ``info.text_op``. ``partners``: the captions of
    the rows of an earlier batch that an info of ``pairing="previous"`` pairs with.
    """
    check_op("text_op", op, info)
    check_choice("multi_caption", multi_caption, MULTI_CAPTIONS)
    check_partners(info, partners)
    rows = caption_rows(texts, info, sep=sep, multi_caption=multi_caption, layout=layout,
                        partners=partners)
    return place_captions(texts, rows, info, inplace=inplace)


def mix_token_texts(texts: Tensor | Mapping, info: MixGenInfo, *, layout: tokens.TokenLayout,
                    op: str | None = None, inplace: bool = False,
                    partners: Tensor | Mapping | None = None) -> Tensor | Mapping:
    """Token-id captions with each pair of ``info`` joined (or selected) on the ids.

    ``texts`` is a ``[B, L]`` id tensor or a dict with ``input_ids`` and optionally
    ``attention_mask`` and ``token_type_ids``; the same structure comes back, masks
    rebuilt for the joined rows, ``token_type_ids`` zero there (one sequence). Joined rows
    equal the tokenizer's output for the joined string (:func:`mixgen.tokens.concat_ids`).
    ``partners`` as in :func:`mix_texts`.
    """
    check_op("text_op", op, info)
    check_partners(info, partners)
    return place_captions(texts, token_rows(texts, info, layout, partners), info,
                          inplace=inplace)


def caption_rows(texts: Captions, info: MixGenInfo, *, sep: str, multi_caption: str,
                 layout: tokens.TokenLayout | None,
                 partners: Captions | None = None) -> list | dict[str, Tensor]:
    """The M mixed captions, in pair order; nothing of ``texts`` is written. Partners are
    read from ``partners`` when given (an info of ``pairing="previous"``, whose partners
    the caller checked), else ``texts``."""
    if isinstance(texts, (Tensor, Mapping)):
        ids = texts["input_ids"] if isinstance(texts, Mapping) else texts
        return token_rows(texts, info, layout or tokens.infer_layout(ids, sep), partners)
    if not info.applied:
        return []
    host = info.host
    sources, partner_rows = ((host.source, host.partner) if host is not None
                             else (info.source.tolist(), info.partner.tolist()))
    others = texts if partners is None else partners
    if info.text_op == "select":
        keep = info.keep_source_text.tolist()
        return [texts[s] if kept else others[p]
                for s, p, kept in zip(sources, partner_rows, keep, strict=True)]
    choices = None
    if multi_caption == "pick_one":
        if info.caption_choice is None:
            raise ValueError("multi_caption='pick_one' needs parameters drawn with "
                             "multi_caption='pick_one' (info.caption_choice is None)")
        choices = info.caption_choice.tolist()
    return [_joined(texts[s], others[p], sep, None if choices is None else choices[k])
            for k, (s, p) in enumerate(zip(sources, partner_rows, strict=True))]


def _joined(first: str | Sequence[str], second: str | Sequence[str], sep: str,
            choice: list[float] | None) -> str | list[str]:
    """One joined caption; with lists of captions, joined by position or by ``choice``."""
    if isinstance(first, str) and isinstance(second, str):
        return first + sep + second
    first = [first] if isinstance(first, str) else list(first)
    second = [second] if isinstance(second, str) else list(second)
    if choice is not None:
        return [first[int(choice[0] * len(first))] + sep + second[int(choice[1] * len(second))]]
    count = max(len(first), len(second))
    return [first[i % len(first)] + sep + second[i % len(second)] for i in range(count)]


def token_rows(texts: Tensor | Mapping, info: MixGenInfo, layout: tokens.TokenLayout,
               partners: Tensor | Mapping | None = None) -> dict[str, Tensor]:
    """The M mixed rows of each token field, on the ids' device; partners read from
    ``partners`` when given (the rows of an earlier batch, checked by the caller), else
    from ``texts``."""
    fields = tokens.token_fields(texts)
    ids, mask = fields["input_ids"], fields.get("attention_mask")
    on_device = info.indices(ids.device)
    source, partner = on_device.source, on_device.partner
    if partners is not None:  # one table: the batch's rows, then the partner rows
        others = tokens.token_fields(partners)
        ids = torch.cat([ids, others["input_ids"]])
        mask = None if mask is None else torch.cat([mask, others["attention_mask"]])
        partner = partner + fields["input_ids"].shape[0]
    lengths = tokens.caption_lengths(ids, layout, mask)
    if info.text_op == "concat":
        new_ids, new_lengths = tokens.concat_ids(ids, lengths, source, partner, layout)
    else:
        chosen = torch.where(on_device.keep_source_text, source, partner)
        new_ids, new_lengths = ids.index_select(0, chosen), lengths[chosen]
    rows = {"input_ids": new_ids}
    if mask is not None:
        rows["attention_mask"] = tokens.attention_mask(new_lengths, ids.shape[1], layout,
                                                       mask.dtype)
    if "token_type_ids" in fields:
        rows["token_type_ids"] = torch.zeros_like(new_ids, dtype=fields["token_type_ids"].dtype)
    return rows


def place_captions(texts: Captions, rows: list | dict[str, Tensor], info: MixGenInfo, *,
                   inplace: bool) -> Any:
    """``texts`` with the mixed ``rows`` at their targets: over the sources, or appended;
    into the caller's list and tensors when ``inplace``."""
    if not isinstance(texts, (Tensor, Mapping)):
        out = texts if inplace and isinstance(texts, list) else list(texts)
        if info.mode == "append":
            out.extend(rows)
        else:
            for target, caption in zip(info.host.target if info.host else
                                       info.source.tolist(), rows, strict=True):
                out[target] = caption
        return out
    fields = tokens.token_fields(texts)
    out = {name: _place_rows(fields[name], new, info, inplace) for name, new in rows.items()}
    if not isinstance(texts, Mapping):
        return out["input_ids"]
    return out if type(texts) is dict else type(texts)(out)


def _place_rows(batch: Tensor, rows: Tensor, info: MixGenInfo, inplace: bool) -> Tensor:
    if info.mode == "append":
        return torch.cat([batch, rows])
    out = batch if inplace else batch.clone()
    return out.index_copy_(0, info.indices(batch.device).source, rows)
