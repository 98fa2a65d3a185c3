"""The one batch path: every adapter (``MixGen``, ``MixGenCollate``, ``mixgen.wds``,
``mixgen.hf``, ``mixgen.hf_trainer`` and the data path of ``mixgen.open_clip_train``)
mixes through a :class:`BatchMixer` and :func:`mix_batch`, and finds and rebuilds its
batch's structure with :func:`find` and :func:`rebuild`.

A batch goes down once: checked (:func:`mixgen.checks.check_batch`), drawn
(:func:`mixgen.draw.draw`), its caption rows made, its images mixed, its captions placed.
That order is what makes ``inplace=True`` fail cleanly: every check that can fail (the
batch, the info, the writability of what is written, the captions' layout) runs before
the images are written, and the captions are written last.

``pairing="previous"`` is the one pairing with state: :class:`BatchMixer` keeps the
unmixed rows of the last batch it mixed that the next batch may pair with
(:class:`PartnerRows`), per process and DataLoader worker. Its ``enabled`` switch
(:class:`Switch`, like timm's ``mixup_enabled``) turns mixing off and on, also in the
DataLoader workers it was copied into.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import get_spawning_popen
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mixgen.captions import caption_rows, place_captions
from mixgen.checks import check_batch
from mixgen.config import MixGenConfig
from mixgen.draw import HostGenerator, count_pairs, draw, process_key
from mixgen.functional import mix_images, stack_mixed
from mixgen.info import MixGenInfo
from mixgen.structure import INFO_KEY, CaptionKeys, caption_keys, find, rebuild, stack_ids
from mixgen.tokens import TokenLayout, layout_from_tokenizer, token_fields

__all__ = ["INFO_KEY", "BatchMixer", "CaptionKeys", "Mixed", "PartnerRows", "Switch",
           "caption_keys", "find", "keep_rows", "mix_batch", "rebuild", "stack_ids"]

Allocate = Callable[[int, Tensor], Tensor]


@dataclass(frozen=True)
class PartnerRows:
    """The unmixed rows of a batch that the next batch pairs with (``pairing="previous"``):
    their images (a ``[P, ...]`` tensor, or P sample tensors of a collate function) and
    captions (P strings or lists of strings, ``[P, L]`` ids, or a dict of such tensors)."""

    images: Tensor | Sequence[Tensor] | None
    texts: Any

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)


class Mixed(NamedTuple):
    """What :func:`mix_batch` returns; ``info`` None: a batch a switched-off
    :class:`BatchMixer` passed through; ``kept``: the rows the next batch may pair with
    (``pairing="previous"`` only, else None); ``extra``: the mixed ``extra`` captions."""

    images: Tensor
    texts: Any
    info: MixGenInfo | None
    kept: PartnerRows | None
    extra: Any = None


def mix_batch(config: MixGenConfig, images: Tensor | Sequence[Tensor], texts: Any,
              generator: torch.Generator | HostGenerator | None = None, *,
              info: MixGenInfo | None = None,
              layout: TokenLayout | None = None, allocate: Allocate | None = None,
              previous: PartnerRows | None = None, extra: Any = None) -> Mixed:
    """Mix one batch; returns ``(images, texts, info, kept, extra)``.

    Args:
        config: the options.
        images: a ``[B, ...]`` batch, or, with ``allocate``, a collate function's list of
            B sample tensors, stacked and mixed in one pass.
        texts: one caption per image (see :class:`~mixgen.MixGen`).
        generator: the CPU generator the parameters are drawn from, on the host (or an
            adapter's :class:`~mixgen.draw.HostGenerator`).
        info: a :class:`~mixgen.MixGenInfo` to replay instead of drawing.
        layout: how token ids are laid out (default: read from the ids, open_clip's).
        allocate: ``allocate(rows, first_sample)`` makes the batch tensor to stack into.
        previous: with ``pairing="previous"``, the partner rows of the last batch (none:
            no pairs); ``kept`` then holds this batch's rows for the next one, taken
            before anything is written.
        extra: the same captions kept a second time (strings beside their token ids),
            mixed with the same pairs.

    Example:
        >>> import torch
        >>> from mixgen import MixGenConfig
        >>> from mixgen.batch import mix_batch
        >>> mixed = mix_batch(MixGenConfig(ratio=0.5), torch.zeros(4, 3, 2, 2), list("abcd"))
        >>> mixed.texts, mixed.info.source.tolist(), mixed.info.partner.tolist()
        (['a c', 'b d', 'c', 'd'], [0, 1], [2, 3])
    """
    samples, outside = allocate is not None, config.pairing == "previous"
    inplace = config.inplace and not samples
    size, image_size = check_batch(
        images, texts, samples=samples, extra=extra, info=info, outside=outside,
        partners=None if previous is None else (previous.images, previous.texts),
        inplace=inplace)
    if info is None:  # drawn to fit the partner rows kept: no check of them needed
        info = draw(config, size, image_size, generator,
                    partner_rows=len(previous) if previous is not None else 0)
    partners = previous if previous is not None and info.applied else PartnerRows(None, None)
    rows = caption_rows(texts, info, sep=config.sep, multi_caption=config.multi_caption,
                        layout=layout, partners=partners.texts)
    extra_rows = None if extra is None else caption_rows(
        extra, info, sep=config.sep, multi_caption=config.multi_caption, layout=layout)
    kept = keep_rows(config, images, texts, copy=not samples) if outside else None
    if samples:
        out = stack_mixed(images, info, allocate(info.output_size, images[0]),
                          partners.images, check=False)
    else:
        out = mix_images(images, info, inplace=inplace, partners=partners.images, check=False)
    return Mixed(out, place_captions(texts, rows, info, inplace=inplace), info, kept,
                 None if extra is None else place_captions(extra, extra_rows, info,
                                                           inplace=inplace))


def keep_rows(config: MixGenConfig, images: Tensor | Sequence[Tensor], texts: Any, *,
              copy: bool) -> PartnerRows:
    """The rows of a batch that the next one may pair with: its first M rows (M: the
    sources of a batch of this size), unmixed. ``copy``: cloned (a batch mixed, perhaps
    in place, and returned to the caller); else references (a collate function's samples
    and the captions it collated, never written)."""
    count = count_pairs(len(images), ratio=config.ratio, num_pairs=config.num_pairs,
                        pairing=config.pairing)
    if isinstance(texts, (Tensor, Mapping)):
        fields = token_fields(texts)
        rows = {name: value[:count].clone() if copy else value[:count]
                for name, value in fields.items()}
        texts = rows if isinstance(texts, Mapping) else rows["input_ids"]
    else:
        texts = list(texts[:count])
    images = images[:count].clone() if copy else list(images[:count])
    return PartnerRows(images, texts)


class Switch:
    """An on/off value in shared memory: set in the main process, it is read by the
    DataLoader workers (persistent ones too) that the adapter holding it was copied into,
    as they start, forked or spawned. Any other copy (``pickle``, ``copy.deepcopy``) is a
    switch of its own, with the same value."""

    def __init__(self, on: bool = True) -> None:
        self._value = multiprocessing.RawValue("b", on)

    def __bool__(self) -> bool:
        return bool(self._value.value)

    def set(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"enabled must be a bool, got {type(on).__name__}")
        self._value.value = on

    def __reduce__(self) -> tuple:
        if get_spawning_popen() is not None:  # into a worker being started: shared memory
            return _shared_switch, (self._value,)
        return Switch, (bool(self),)


def _shared_switch(value: Any) -> Switch:
    switch = object.__new__(Switch)
    switch._value = value
    return switch


class BatchMixer:
    """What every adapter holds: the config, the host generator (reseeded once per
    DataLoader worker), the token layout of its tokenizer (read once), the ``enabled``
    switch and, for ``pairing="previous"``, the rows of the last batch it mixed in this
    process or worker (a worker never starts from rows its parent process kept).

    Switched off (``enabled = False``), it passes every batch through unmixed, drawing
    nothing (its generator untouched); the info, with ``return_info``, is None. A
    collate function's samples are still collated.
    """

    def __init__(self, config: MixGenConfig, generator: torch.Generator | None = None,
                 tokenizer: Any = None) -> None:
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        self.config = config
        self.generator = HostGenerator(generator)
        self.tokenizer = tokenizer
        self._layout: TokenLayout | None = None
        self._previous: tuple[tuple[int, int | None], PartnerRows] | None = None
        self.switch = Switch()

    @property
    def enabled(self) -> bool:
        """Whether batches are mixed (True, the default); set it to switch mixing off and
        on, here and in the DataLoader workers this mixer was copied into."""
        return bool(self.switch)

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.switch.set(on)

    @property
    def previous(self) -> PartnerRows | None:
        """The rows kept of the last batch mixed in this process or worker (None: none
        yet, or another pairing)."""
        if self._previous is None or self._previous[0] != process_key():
            return None
        return self._previous[1]

    def layout(self, texts: Any) -> TokenLayout | None:
        """The tokenizer's layout of token-id ``texts`` (read once); None for strings, or
        without a tokenizer (the ids are then read as open_clip's)."""
        if self.tokenizer is None or not isinstance(texts, (Tensor, Mapping)):
            return None
        if self._layout is None:
            self._layout = layout_from_tokenizer(self.tokenizer, self.config.sep)
        return self._layout

    def draw(self, batch_size: int, image_size: tuple[int, int]) -> MixGenInfo:
        """Draw the pairs and lambdas for a batch from this adapter's generator."""
        previous = self.previous
        return draw(self.config, batch_size, image_size, self.generator,
                    partner_rows=0 if previous is None else len(previous))

    def mix(self, images: Tensor | Sequence[Tensor], texts: Any,
            info: MixGenInfo | None = None, allocate: Allocate | None = None,
            extra: Any = None) -> Mixed:
        """:func:`mix_batch` with this adapter's config, generator, layout and, for
        ``pairing="previous"``, the rows kept of its last batch (replaced by this batch's
        once it is mixed); switched off, the batch as it is (samples stacked)."""
        if not self.switch:
            if allocate is not None:
                images = torch.stack(list(images), out=allocate(len(images), images[0]))
            return Mixed(images, texts, None, None, extra)
        mixed = mix_batch(self.config, images, texts, self.generator, info=info,
                          layout=self.layout(texts), allocate=allocate, previous=self.previous,
                          extra=extra)
        if mixed.kept is not None:
            self._previous = (process_key(), mixed.kept)
        return mixed

    def __call__(self, batch: Any, info: MixGenInfo | None = None) -> Any:
        images, texts, extra = find(batch, self.config)
        mixed = self.mix(images, texts, info, extra=extra)
        return rebuild(batch, mixed.images, mixed.texts, mixed.info, self.config, mixed.extra)


class MixerAdapter:
    """What every adapter shares: its :class:`BatchMixer` (``self.mixer``), whose config it
    shows and whose ``enabled`` switch it exposes."""

    mixer: BatchMixer

    @property
    def config(self) -> MixGenConfig:
        return self.mixer.config

    @property
    def enabled(self) -> bool:
        """Whether batches are mixed; ``False`` passes them through unmixed (info None; a
        collate function still collates), also in the DataLoader workers the adapter was
        copied into (persistent ones too)."""
        return self.mixer.enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.mixer.enabled = on
