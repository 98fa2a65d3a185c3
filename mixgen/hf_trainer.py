"""MixGen in transformers' ``Trainer``, in the terms of its CLIP example (``run_clip.py``).

run_clip's ``collate_fn`` stacks ``pixel_values``, ``input_ids`` and ``attention_mask`` and
returns them with ``"return_loss": True``; it is passed as ``Trainer(data_collator=...)``.
:class:`MixGenDataCollator` returns the same batch, mixed: from pre-tokenized features
(joined on the ids, masks rebuilt), or from raw captions mixed as strings, then tokenized.
:class:`MixGenTrainer` is the ``Trainer`` that keeps evaluation batches unmixed and scores
the mixed ones with MixGen's targets, in the loss family of the model's own loss
(:data:`LOSS_FAMILIES`)::

    collator = MixGenDataCollator(tokenizer=tokenizer, return_info=True)
    trainer = MixGenTrainer(model=model, args=args, data_collator=collator,
                            train_dataset=train_dataset, eval_dataset=eval_dataset,
                            mixgen_targets="soft")

Needs transformers, accelerate and open_clip (``pip install 'mixgen[transformers]'``);
``import mixgen`` imports none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

try:
    import accelerate  # noqa: F401  (the Trainer needs it; say so here, not mid-training)
    from transformers import (
        CLIPModel,
        Siglip2Model,
        SiglipModel,
        Trainer,
        VisionTextDualEncoderModel,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mixgen.hf_trainer needs transformers and accelerate: "
                      "pip install 'mixgen[transformers]'") from error

from mixgen.batch import INFO_KEY, caption_keys
from mixgen.collate import MixGenCollate
from mixgen.config import LOSS_TARGETS, MixGenConfig, check_choice
from mixgen.losses import MixGenClipLoss, MixGenSigLipLoss

__all__ = ["LOSS_FAMILIES", "MixGenDataCollator", "MixGenTrainer"]

RUN_CLIP_FIELDS = ("input_ids", "attention_mask")
"""The token fields of run_clip's batches."""
LOSS_FAMILIES: tuple[tuple[tuple[type[nn.Module], ...], type[MixGenClipLoss | MixGenSigLipLoss]],
                     ...] = (
    ((CLIPModel, VisionTextDualEncoderModel), MixGenClipLoss),  # softmax cross-entropy
    ((SiglipModel, Siglip2Model), MixGenSigLipLoss),  # sigmoid, with the model's logit bias
)
"""The models :class:`MixGenTrainer` scores, each with MixGen's loss of the family of the
model's own loss (``return_loss=True``); subclasses count as their base."""


class MixGenDataCollator:
    """run_clip's ``collate_fn``, mixed: features -> ``{"pixel_values", "input_ids",
    "attention_mask", "return_loss": True}``, plus ``"mixgen"`` (the info) with
    ``return_info=True``.

    Each feature is a dict holding the image tensor under ``image_key`` and the caption
    either tokenized (``input_ids`` and ``attention_mask`` as lists or tensors of one
    length, ``padding="max_length"``) or raw under ``text_key`` (a string). Ids are joined
    in the tokenizer's layout and the masks rebuilt; raw captions are joined as strings
    and then tokenized (``padding="max_length"`` to ``max_length``, else to the longest,
    truncated). Other keys of the features are left out, as run_clip's ``collate_fn`` does.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword ``options`` replace its values.
        tokenizer: the Hugging Face tokenizer of the text tower (required: it tells the
            ids' layout and tokenizes raw captions).
        image_key: the features' image key (run_clip's ``pixel_values``).
        text_key: ``"input_ids"`` for tokenized features, else the key of raw captions
            (``"caption"``; keep that column with ``remove_unused_columns=False``).
        fields: the token fields the batch carries; add ``"token_type_ids"`` for a text
            tower that takes them.
        max_length: the length raw captions are padded and cut to.
        return_loss: add ``"return_loss": True``, as run_clip does.
        generator: a CPU ``torch.Generator``, as in :class:`~mixgen.MixGen`.
    """

    def __init__(self, config: MixGenConfig | None = None, /, *, tokenizer: Any,
                 image_key: str = "pixel_values", text_key: str = "input_ids",
                 fields: Sequence[str] = RUN_CLIP_FIELDS, max_length: int | None = None,
                 return_loss: bool = True, generator: torch.Generator | None = None,
                 **options: Any) -> None:
        if tokenizer is None or not callable(tokenizer):
            raise TypeError(f"tokenizer must be the Hugging Face tokenizer of the text tower, "
                            f"got {type(tokenizer).__name__}")
        if max_length is not None and (isinstance(max_length, bool)
                                       or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if "input_ids" not in fields or not set(fields) <= {"input_ids", "attention_mask",
                                                            "token_type_ids"}:
            raise ValueError(f"fields must name input_ids and optionally attention_mask and "
                             f"token_type_ids, got {list(fields)}")
        if not isinstance(return_loss, bool):
            raise TypeError(f"return_loss must be a bool, got {type(return_loss).__name__}")
        config = dataclasses.replace(MixGenConfig.resolve(config, options),
                                     image_key=image_key, text_key=text_key)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.fields, self.return_loss = tuple(fields), return_loss
        encode = functools.partial(tokenizer, padding="max_length" if max_length else "longest",
                                   max_length=max_length, truncation=True, return_tensors="pt")
        self.collate = MixGenCollate(config, tokenizer=encode, generator=generator)

    @property
    def config(self) -> MixGenConfig:
        return self.collate.config

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.config.summary()}, image_key="
                f"{self.config.image_key!r}, text_key={self.config.text_key!r}, "
                f"fields={list(self.fields)}, max_length={self.max_length})")

    def unmixed(self) -> MixGenDataCollator:
        """This collator without mixing, for evaluation: the same batches, no pairs drawn
        (its generator untouched), no info."""
        config = MixGenConfig(num_pairs=0, sep=self.config.sep)
        return type(self)(config, tokenizer=self.tokenizer, image_key=self.config.image_key,
                          text_key=self.config.text_key, fields=self.fields,
                          max_length=self.max_length, return_loss=self.return_loss)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not isinstance(features, Sequence) or not features or not all(
                isinstance(f, Mapping) for f in features):
            raise TypeError("features must be a non-empty list of dicts (the items of the "
                            "data set)")
        caption_keys(features[0], self.config, what="first feature")  # before any is left out
        wanted = {self.config.image_key, self.config.text_key, *self.fields}
        batch = self.collate([{k: v for k, v in f.items() if k in wanted} for f in features])
        text_key = self.config.text_key
        captions = batch.pop(text_key, None) if text_key != "input_ids" else None
        if isinstance(captions, Mapping):  # raw captions, mixed and then tokenized
            batch.update(captions)
        out = {k: v for k, v in batch.items() if k in (self.config.image_key, *self.fields)}
        if self.return_loss:
            out["return_loss"] = True
        if INFO_KEY in batch:
            out[INFO_KEY] = batch[INFO_KEY]
        return out


class MixGenTrainer(Trainer):
    """transformers' ``Trainer`` for batches of :class:`MixGenDataCollator`.

    Evaluation and test batches are collated by ``data_collator.unmixed()``: never mixed.
    A training batch with an info (``MixGenDataCollator(return_info=True)``) is scored on
    the model's own logits, the info taken off the batch, by MixGen's loss of the model's
    family (:data:`LOSS_FAMILIES`): :class:`~mixgen.losses.MixGenClipLoss` on
    ``logits_per_image`` and ``logits_per_text`` of ``CLIPModel`` and
    ``VisionTextDualEncoderModel``, :class:`~mixgen.losses.MixGenSigLipLoss` on
    ``logits_per_image`` (the logit bias included) of ``SiglipModel`` and
    ``Siglip2Model``. Other batches are scored by the model's own loss. With one-hot
    targets both are the model's own loss. Another model is refused: its loss is not
    guessed.

    Args:
        *args, **kwargs: those of ``transformers.Trainer``.
        mixgen_targets: ``"soft"``, ``"mask"`` or ``"onehot"``, the ``targets`` of the
            MixGen loss.
    """

    loss_is_scaled_for_ga = False  # a mean over one batch, as CLIP's own loss

    def __init__(self, *args: Any, mixgen_targets: str = "soft", **kwargs: Any) -> None:
        check_choice("mixgen_targets", mixgen_targets, LOSS_TARGETS)
        super().__init__(*args, **kwargs)
        self.mixgen_loss = mixgen_loss_of(self.model, mixgen_targets)
        collator = self.data_collator
        if (mixgen_targets != "onehot" and isinstance(collator, MixGenDataCollator)
                and not collator.config.return_info):
            raise ValueError(f"mixgen_targets={mixgen_targets!r} needs the info of each "
                             f"batch: pass MixGenDataCollator(return_info=True)")

    @contextlib.contextmanager
    def _unmixed_collator(self) -> Iterator[None]:
        collator = self.data_collator
        unmixed: Callable[[], Any] | None = getattr(collator, "unmixed", None)
        if unmixed is None:
            yield
            return
        self.data_collator = unmixed()
        try:
            yield
        finally:
            self.data_collator = collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        with self._unmixed_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        with self._unmixed_collator():
            return super().get_test_dataloader(test_dataset)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False,
                     num_items_in_batch: Tensor | int | None = None) -> Any:
        """The MixGen loss of a batch with an info; the Trainer's otherwise."""
        if INFO_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)
        info = inputs.pop(INFO_KEY)
        inputs["return_loss"] = False
        outputs = model(**inputs)
        if isinstance(self.mixgen_loss, MixGenSigLipLoss):
            loss = self.mixgen_loss.loss_from_logits(outputs.logits_per_image, info)
        else:
            loss = self.mixgen_loss.loss_from_logits(outputs.logits_per_image,
                                                     outputs.logits_per_text, info)
        return (loss, outputs) if return_outputs else loss


def mixgen_loss_of(model: object, targets: str) -> MixGenClipLoss | MixGenSigLipLoss:
    """MixGen's loss, with ``targets``, of the family of ``model``'s own loss
    (:data:`LOSS_FAMILIES`); ``TypeError`` for a model of another kind."""
    for models, loss in LOSS_FAMILIES:
        if isinstance(model, models):
            return loss(targets=targets)
    supported = "; ".join(f"{', '.join(m.__name__ for m in models)} ({loss.__name__})"
                          for models, loss in LOSS_FAMILIES)
    raise TypeError(f"MixGenTrainer cannot tell the loss family of a {type(model).__name__}: "
                    f"it scores these models and their subclasses, each with MixGen's loss "
                    f"of its own loss's family: {supported}")
