"""``MixGenCollate``: a DataLoader ``collate_fn`` that collates and mixes in one pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from mixgen.batch import BatchMixer, rebuild
from mixgen.config import MixGenConfig


class MixGenCollate:
    """Drop-in ``collate_fn``: collate ``(image, text, ...)`` or dict samples, then MixGen.

    Like timm's ``FastCollateMixup``, mixing happens in the DataLoader workers, and the
    mixed rows are written straight into the batch tensor that collation allocates
    (shared memory in a worker, as ``default_collate`` does), so there is no second
    full-batch tensor and no second pass. ``tokenizer``, if given, is applied to the
    mixed captions when samples carry strings, so datasets can return raw strings; when
    samples carry token ids (open_clip's ``[L]`` tensors, or a dict of ``input_ids`` and
    ``attention_mask``), they are stacked and joined on the ids in the tokenizer's layout.

    With ``pairing="previous"`` it keeps references to the first M samples and captions
    of the last batch it collated (in each worker its own), the partners of the next
    batch's first M rows; the first batch of each worker passes through unmixed.

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

    @property
    def config(self) -> MixGenConfig:
        return self.mixer.config

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.config.summary()}, "
                f"tokenizer={self.mixer.tokenizer!r})")

    def __call__(self, samples: Sequence) -> Any:
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError("samples must be a non-empty list of (image, text) tuples or "
                             "dicts")
        first = samples[0]
        keys = self.config.image_key, self.config.text_key
        if isinstance(first, Mapping):
            images = [s[keys[0]] for s in samples]
            texts = [s[keys[1]] for s in samples]
            structure = {k: (None if k in keys else default_collate([s[k] for s in samples]))
                         for k in first}
        elif isinstance(first, (tuple, list)) and len(first) >= 2:
            images = [s[0] for s in samples]
            texts = [s[1] for s in samples]
            structure = (None, None, *(default_collate([s[i] for s in samples])
                                       for i in range(2, len(first))))
        else:
            raise TypeError(f"samples must be (image, text, ...) tuples or dicts with keys "
                            f"{keys[0]!r} and {keys[1]!r}, got {type(first).__name__}")
        if isinstance(texts[0], (Tensor, Mapping)):
            texts = default_collate(texts)
        images, texts, info = self.mixer.mix(images, texts, allocate=_new_shared_batch)
        if self.mixer.tokenizer is not None and not isinstance(texts, (Tensor, Mapping)):
            texts = self.mixer.tokenizer(texts)
        return rebuild(structure, images, texts, info, self.config)


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
