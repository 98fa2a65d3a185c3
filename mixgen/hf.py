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

from mixgen.batch import BatchMixer, rebuild
from mixgen.captions import mix_texts
from mixgen.config import MixGenConfig
from mixgen.tokens import TOKEN_FIELDS

__all__ = ["BatchTransform"]


class BatchTransform:
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
        image_column, text_column = config.image_key, config.text_key
        if image_column not in batch:
            raise ValueError(f"the batch has no column {image_column!r} (image_column); its "
                             f"columns are {sorted(batch)}")
        token_columns = [c for c in TOKEN_FIELDS if c in batch]
        if text_column not in batch and not token_columns:
            raise ValueError(f"the batch has no column {text_column!r} (text_column) and no "
                             f"input_ids; its columns are {sorted(batch)}")
        columns = dict(batch)
        columns[image_column] = self._stack_images(batch[image_column])
        strings = None
        if token_columns:
            texts = {c: _as_id_tensor(columns.pop(c), c) for c in token_columns}
            strings = columns.pop(text_column, None)
            columns[text_column] = texts
        images, texts, info = self.mixer.mix(columns[image_column], columns[text_column])
        out = rebuild(columns, images, texts, info, config)
        if token_columns:
            out.update(out.pop(text_column))
        if strings is not None:
            out[text_column] = mix_texts(list(strings), info, sep=config.sep,
                                         multi_caption=config.multi_caption)
        return out

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


def _as_id_tensor(column: Any, name: str) -> Tensor:
    """A token column as a ``[B, L]`` tensor; the rows must have one length (pad them)."""
    if isinstance(column, Tensor):
        return column
    lengths = {len(row) for row in column}
    if len(lengths) > 1:
        raise ValueError(f"the rows of column {name!r} have different lengths {sorted(lengths)}: "
                         f"tokenize with padding='max_length' so they stack")
    return torch.as_tensor([list(row) for row in column])
