"""``MixGenCollate``: a DataLoader ``collate_fn`` that collates and mixes in one pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from mixgen import functional as F
from mixgen.transform import MixGen, repack


class MixGenCollate:
    """Drop-in ``collate_fn``: collate ``(image, text, ...)`` or dict samples, then MixGen.

    Like timm's ``FastCollateMixup``, mixing happens in the DataLoader workers, and the
    mixed rows are written straight into the batch tensor that collation allocates
    (shared memory in a worker, as ``default_collate`` does), so there is no second
    full-batch tensor and no second pass. ``tokenizer``, if given, is applied to the
    mixed captions when samples carry strings, so datasets can return raw strings; when
    samples carry token ids (open_clip's ``[L]`` tensors, or a dict of ``input_ids`` and
    ``attention_mask``), they are stacked and joined on the ids in the tokenizer's layout.

    Takes every keyword argument of :class:`~mixgen.MixGen` (``inplace`` excepted: the
    collate function owns the batch it allocates and always mixes into it).
    """

    def __init__(self, *, tokenizer: Callable[[list], Any] | None = None,
                 **mixgen_options: Any) -> None:
        if "inplace" in mixgen_options:
            raise TypeError("MixGenCollate has no inplace option: it always mixes into the "
                            "batch it allocates")
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        self.mixgen = MixGen(tokenizer=tokenizer, **mixgen_options)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixgen.extra_repr()}, tokenizer={self.tokenizer!r})"

    def __call__(self, samples: Sequence) -> Any:
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError("samples must be a non-empty list of (image, text) tuples or "
                             "dicts")
        first = samples[0]
        keys = self.mixgen.image_key, self.mixgen.text_key
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
        _check_samples(images)
        if isinstance(texts[0], (Tensor, Mapping)):
            texts = default_collate(texts)
        F.check_texts(texts, len(images))
        layout = self.mixgen.token_layout(texts)
        info = self.mixgen.draw_params(len(images), tuple(images[0].shape[-2:]))
        batch = _new_shared_batch(images[0], info.output_size)
        if self.mixgen.image_op == "mixup":
            F.stack_mixed(images, info, batch)
        else:
            torch.stack(images, out=batch[:info.batch_size])
            batch = F.mix_images(batch[:info.batch_size], info, op=self.mixgen.image_op,
                                 inplace=info.mode == "replace")
        texts = F.mix_texts(texts, info, op=self.mixgen.text_op, sep=self.mixgen.sep,
                            multi_caption=self.mixgen.multi_caption, inplace=True,
                            layout=layout)
        if self.tokenizer is not None and layout is None:
            texts = self.tokenizer(texts)
        options = self.mixgen
        return repack(structure, batch, texts, info, return_info=options.return_info,
                      image_key=options.image_key, text_key=options.text_key)


def _check_samples(images: list) -> None:
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
    F.check_images(images[0].unsqueeze(0))


def _new_shared_batch(elem: Tensor, rows: int) -> Tensor:
    """An empty ``[rows, *elem.shape]`` batch; in a worker, in shared memory.

    This mirrors ``default_collate``: a batch born in shared memory crosses from the
    worker to the main process without a copy.
    """
    shape = (rows, *elem.shape)
    if get_worker_info() is None:
        return torch.empty(shape, dtype=elem.dtype, device=elem.device)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(shape)
