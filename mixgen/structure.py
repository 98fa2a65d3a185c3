"""Where a batch keeps its images and captions: :func:`find` takes them out of a tuple or
dict batch, :func:`rebuild` puts the mixed ones back into the same structure,
:func:`caption_keys` names a dict batch's caption keys and :func:`stack_ids` stacks a
token field of samples or columns. Part of the batch path
(:mod:`mixgen.batch`, which re-exports them for the adapters).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mixgen.config import MixGenConfig
from mixgen.functional import append_rows
from mixgen.info import MixGenInfo
from mixgen.tokens import TOKEN_FIELDS

INFO_KEY = "mixgen"
"""The key of the info in a dict batch returned with ``return_info``."""


class CaptionKeys(NamedTuple):
    """Where a dict batch (or a dict sample) keeps its captions.

    ``tokens``: the flat token fields beside the images, as transformers' tokenizers and
    run_clip's ``collate_fn`` make them (``input_ids`` and the ``attention_mask`` and
    ``token_type_ids`` present), mixed together as one caption; empty where there is no
    ``input_ids``. ``text``: the key of other captions (strings, ids, or a dict of token
    tensors), mixed with the same pairs; None where the batch has only the flat fields.
    """

    text: str | None
    tokens: tuple[str, ...]


def caption_keys(keys: Collection[Any], config: MixGenConfig, *, what: str = "dict batch",
                 key: str = "key", names: tuple[str, str] = ("image_key", "text_key")
                 ) -> CaptionKeys:
    """The keys of a dict batch's captions (see :class:`CaptionKeys`): ``text_key``, the
    flat token fields (selected by ``text_key="input_ids"``, or found where ``text_key``
    is not a key), or both. Raises a ``ValueError`` naming the keys when the images or
    both are missing; ``what``, ``key`` and ``names`` word it for the adapter."""
    flat = tuple(f for f in TOKEN_FIELDS if f in keys) if "input_ids" in keys else ()
    text = config.text_key if config.text_key in keys and config.text_key not in flat else None
    known = f"its {key}s are {sorted(map(str, keys))}"
    if config.image_key not in keys:
        raise ValueError(f"the {what} has no {key} {config.image_key!r} ({names[0]}); {known}")
    if text is None and not flat:
        alternative = "" if config.text_key == "input_ids" else " and no 'input_ids'"
        raise ValueError(f"the {what} has no {key} {config.text_key!r} ({names[1]})"
                         f"{alternative}; {known}")
    return CaptionKeys(text, flat)


def find(batch: Any, config: MixGenConfig) -> tuple[Any, Any, Any]:
    """Images and captions of a dict batch or of a sequence starting with them:
    ``(images, texts, extra)``, where a dict batch's flat token fields are ``texts`` (a
    dict of them) and its ``text_key`` captions beside them ``extra`` (else None)."""
    if isinstance(batch, Mapping):
        keys = caption_keys(batch, config)
        named = None if keys.text is None else batch[keys.text]
        if not keys.tokens:
            return batch[config.image_key], named, None
        return batch[config.image_key], {f: batch[f] for f in keys.tokens}, named
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1], None
    raise TypeError(f"MixGen expects (images, texts), a sequence starting with images and "
                    f"texts, or a dict batch; got {type(batch).__name__}")


def rebuild(batch: Any, images: Tensor, texts: Any, info: MixGenInfo | None,
            config: MixGenConfig, extra: Any = None) -> Any:
    """``batch``'s structure with the mixed images and captions in place of its own
    (``texts`` and ``extra`` as :func:`find` returns them).

    Other per-sample fields grow by the sources' entries in ``append`` mode; with
    ``return_info`` a dict gets the key ``"mixgen"``, a sequence one more element (None
    for a batch passed through unmixed).
    """
    def grow(value: Any) -> Any:
        return value if info is None else append_rows(value, info)

    if isinstance(batch, Mapping):
        keys = caption_keys(batch, config)
        out = {k: grow(v) for k, v in batch.items()}
        out[config.image_key] = images
        if keys.tokens:
            out.update(texts)
            if keys.text is not None:
                out[keys.text] = extra
        else:
            out[keys.text] = texts
        if config.return_info:
            out[INFO_KEY] = info
        return out if type(batch) is dict else type(batch)(out)
    rest = [grow(v) for v in batch[2:]]
    out = [images, texts, *rest, *([info] if config.return_info else [])]
    return tuple(out) if isinstance(batch, tuple) else out


def stack_ids(rows: Any, name: str) -> Tensor:
    """A token field of a batch as a ``[B, L]`` tensor: a tensor as it is, or the rows of a
    collate function's samples or a data set's column (tensors, or lists of ints, as a
    tokenizer without ``return_tensors`` makes them) stacked; they must have one length."""
    if isinstance(rows, Tensor):
        return rows
    lengths = sorted({len(row) for row in rows})
    if len(lengths) > 1:
        raise ValueError(f"the rows of {name!r} have different lengths {lengths}: tokenize "
                         f"with padding='max_length' so they stack")
    if rows and all(isinstance(row, Tensor) for row in rows):
        return torch.stack(list(rows))
    return torch.as_tensor([list(row) for row in rows])
