"""MixGen for Hugging Face ``datasets``: one callable for ``with_transform`` and ``map``.

``datasets`` hands a transform a batch as a dict of columns (lists, or tensors with the
torch format). :class:`BatchTransform` stacks the image column, mixes it with the
caption column (strings, or the ``input_ids``/``attention_mask``/``token_type_ids``
columns of a tokenized data set) and returns the columns::

    ds = ds.with_transform(BatchTransform(preprocess=T.PILToTensor()))  # fresh mix per batch
    ds = ds.map(BatchTransform(preprocess=T.PILToTensor()), batched=True)  # one mix, stored

With ``with_transform`` every access draws new pairs; a ``DataLoader`` over the data set
fetches each batch with one ``__getitems__`` call, so the transform sees whole batches.
``map(batched=True)`` stores one draw, e.g. ``mode="append"`` to add mixed pairs to a
data set once. Other columns pass through (grown by the sources' rows in append mode).
``datasets`` is not imported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from mixgen.batch import BatchMixer, MixerAdapter, caption_keys, stack_ids
from mixgen.config import MixGenConfig

__all__ = ["BatchTransform"]


class BatchTransform(MixerAdapter):
    """Mix one batch of a ``datasets.Dataset``: ``dict[column, list] -> dict[column, ...]``.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword options replace its values.
        preprocess: applied to each image before stacking (e.g. ``T.PILToTensor()``); not
            needed when the image column already holds tensors.
        image_column, text_column: the columns of images and caption strings.
        tokenizer: for tokenized data sets (an ``input_ids`` column), the tokenizer that
            made them, as in :class:`~mixgen.MixGen`. Token columns are mixed, and the
            caption strings too, when the data set still has them, with the same pairs.
        generator: a CPU ``torch.Generator``, as in :class:`~mixgen.MixGen`.
        **options: every other option of :class:`~mixgen.MixGen` but ``return_info``
            (a column cannot hold it).

    Example:
        >>> import torch
        >>> from mixgen.hf import BatchTransform
        >>> transform = BatchTransform(ratio=0.5)  # ds.with_transform(transform)
        >>> batch = {"image": [torch.full((3, 2, 2), float(i)) for i in range(4)],
        ...          "text": ["a", "b", "c", "d"], "id": [0, 1, 2, 3]}
        >>> mixed = transform(batch)
        >>> mixed["image"][:, 0, 0, 0].tolist(), mixed["text"], mixed["id"]
        ([1.0, 2.0, 2.0, 3.0], ['a c', 'b d', 'c', 'd'], [0, 1, 2, 3])
    """

    def __init__(self, config: MixGenConfig | None = None, /, *,
                 preprocess: Callable[[Any], Tensor] | None = None,
                 image_column: str = "image", text_column: str = "text",
                 tokenizer: Any = None, generator: torch.Generator | None = None,
                 **options: Any) -> None:
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable, got {type(preprocess).__name__}")
        if "return_info" in options or (config is not None and config.return_info):
            raise TypeError("BatchTransform has no return_info option: a column cannot hold "
                            "the MixGenInfo; use MixGen(return_info=True) on the batches")
        config = dataclasses.replace(MixGenConfig.resolve(config, options),
                                     image_key=image_column, text_key=text_column)
        if config.pairing == "previous":
            raise ValueError("BatchTransform has no pairing='previous': a data set's batches "
                             "are fetched in any order and stored by map(); mix the loader's "
                             "batches with MixGen or MixGenCollate instead")
        self.mixer = BatchMixer(config, generator, tokenizer)
        self.preprocess = preprocess

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.mixer.config.summary()}, "
                f"preprocess={self.preprocess!r})")

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        config = self.mixer.config
        keys = caption_keys(batch, config, what="batch", key="column",
                            names=("image_column", "text_column"))
        columns = dict(batch)
        columns[config.image_key] = self._stack_images(batch[config.image_key])
        for field in keys.tokens:
            columns[field] = stack_ids(columns[field], field)
        return self.mixer(columns)

    def _stack_images(self, images: Any) -> Tensor:
        if isinstance(images, Tensor):
            return images
        if self.preprocess is not None:
            images = [self.preprocess(image) for image in images]
        for i, image in enumerate(images):
            if not isinstance(image, Tensor):
                raise TypeError(f"image {i} of the batch is a {type(image).__name__}, not a "
                                f"tensor: pass preprocess= (e.g. T.PILToTensor()) or use "
                                f"ds.with_format('torch')")
        return torch.stack(list(images))
