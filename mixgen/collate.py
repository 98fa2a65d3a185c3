"""``MixGenCollate``: a DataLoader ``collate_fn`` that collates and mixes in one pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from mixgen.batch import BatchMixer, MixerAdapter, caption_keys, rebuild, stack_ids
from mixgen.config import MixGenConfig


class MixGenCollate(MixerAdapter):
    """Drop-in ``collate_fn``: collate ``(image, text, ...)`` or dict samples, then MixGen.

    Like timm's ``FastCollateMixup``, mixing happens in the DataLoader workers, and the
    mixed rows are written straight into the batch tensor that collation allocates
    (shared memory in a worker, as ``default_collate`` does), so there is no second
    full-batch tensor and no second pass. ``tokenizer``, if given, is applied to the
    mixed captions when samples carry strings, so datasets can return raw strings; when
    samples carry token ids (open_clip's ``[L]`` tensors, a dict of ``input_ids`` and
    ``attention_mask``, or these fields flat in a dict sample beside the image, as tensors
    or lists, as transformers' data sets hold them), they are stacked and joined on the
    ids in the tokenizer's layout, masks rebuilt.

    With ``pairing="previous"`` it keeps references to the first M samples and captions
    of the last batch it collated (in each worker its own), the partners of the next
    batch's first M rows; the first batch of each worker passes through unmixed.

    ``collate.enabled = False`` switches mixing off, in running workers too (for example
    for the last epochs): samples are collated unmixed, the info is None.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword options replace its values.
        tokenizer: applied to string captions after mixing; for token-id captions, the
            tokenizer that made them, as in :class:`~mixgen.MixGen`.
        generator: a CPU ``torch.Generator``, as in :class:`~mixgen.MixGen`.
        **options: every other option of :class:`~mixgen.MixGen` but ``inplace`` (the
            collate function owns the batch it allocates and always mixes into it).

    Example:
        >>> import torch
        >>> from mixgen import MixGenCollate
        >>> samples = [(torch.full((3, 2, 2), float(i)), f"caption {i}") for i in range(4)]
        >>> images, texts = MixGenCollate(ratio=0.5)(samples)  # DataLoader(collate_fn=...)
        >>> images[:, 0, 0, 0].tolist()
        [1.0, 2.0, 2.0, 3.0]
        >>> texts
        ['caption 0 caption 2', 'caption 1 caption 3', 'caption 2', 'caption 3']
    """

    def __init__(self, config: MixGenConfig | None = None, /, *,
                 tokenizer: Callable[[list], Any] | None = None,
                 generator: torch.Generator | None = None, **options: Any) -> None:
        if "inplace" in options or (config is not None and config.inplace):
            raise TypeError("MixGenCollate has no inplace option: it always mixes into the "
                            "batch it allocates")
        self.mixer = BatchMixer(MixGenConfig.resolve(config, options), generator, tokenizer)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.config.summary()}, "
                f"tokenizer={self.mixer.tokenizer!r})")

    def __call__(self, samples: Sequence) -> Any:
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError("samples must be a non-empty list of (image, text) tuples or "
                             "dicts")
        first, extra = samples[0], None
        if isinstance(first, Mapping):
            keys = caption_keys(first, self.config, what="first sample")
            images = [s[self.config.image_key] for s in samples]
            named = None if keys.text is None else _collate_texts([s[keys.text] for s in samples])
            texts = named
            if keys.tokens:  # transformers' flat fields, as lists or tensors
                texts = {f: stack_ids([s[f] for s in samples], f) for f in keys.tokens}
                extra = named
            taken = {self.config.image_key, keys.text, *keys.tokens}
            structure = {k: (None if k in taken else default_collate([s[k] for s in samples]))
                         for k in first}
        elif isinstance(first, (tuple, list)) and len(first) >= 2:
            images = [s[0] for s in samples]
            texts = _collate_texts([s[1] for s in samples])
            structure = (None, None, *(default_collate([s[i] for s in samples])
                                       for i in range(2, len(first))))
        else:
            raise TypeError(f"samples must be (image, text, ...) tuples or dicts with keys "
                            f"{self.config.image_key!r} and {self.config.text_key!r}, "
                            f"got {type(first).__name__}")
        mixed = self.mixer.mix(images, texts, allocate=_new_shared_batch, extra=extra)
        texts = mixed.texts
        if self.mixer.tokenizer is not None and not isinstance(texts, (Tensor, Mapping)):
            texts = self.mixer.tokenizer(texts)
        return rebuild(structure, mixed.images, texts, mixed.info, self.config, mixed.extra)


def _collate_texts(texts: list) -> Any:
    """The captions of the samples: token ids (tensors, or dicts of them) stacked, strings
    and lists of strings as a list."""
    return default_collate(texts) if isinstance(texts[0], (Tensor, Mapping)) else texts


def _new_shared_batch(rows: int, elem: Tensor) -> Tensor:
    """An empty ``[rows, *elem.shape]`` batch; in a worker, in shared memory.

    This mirrors ``default_collate``: a batch born in shared memory crosses from the
    worker to the main process without a copy.
    """
    shape = (rows, *elem.shape)
    if get_worker_info() is None:
        return torch.empty(shape, dtype=elem.dtype, device=elem.device)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(shape)
