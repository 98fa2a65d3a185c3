"""MixGen as a webdataset pipeline stage, for use after ``batched()``.

``mixgen.wds.mixgen(**options)`` is built like webdataset's own filters (``batched``,
``map``, ``decode``): :func:`webdataset.filters.pipelinefilter` curries it into a
picklable stage, so it travels into ``WebLoader`` workers with the rest of the pipeline::

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.decode("torchrgb", handler=wds.warn_and_continue),
        wds.to_tuple("jpg", "txt", handler=wds.warn_and_continue),
        wds.batched(64),
        mixgen.wds.mixgen(ratio=0.25),
    )

It takes a :class:`~mixgen.MixGenConfig` and/or every option of :class:`~mixgen.MixGen`
(``tokenizer`` included, for batches of token ids) and webdataset's ``handler`` for
batches MixGen rejects; :func:`stage` makes the stage of a
:class:`~mixgen.batch.BatchMixer` you hold (its ``enabled`` switch). It works with
webdataset 0.2.86 (open_clip_train's) and 1.x. With ``pairing="previous"`` the stage
pairs each batch with the previous batch of its own worker (the pipeline, and the
stage's state, is copied into each worker).
Needs ``webdataset`` (``pip install mixgen[wds]``); ``import mixgen`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    from webdataset.filters import pipelinefilter, reraise_exception
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mixgen.wds needs webdataset: pip install 'mixgen[wds]'") from error

import torch

from mixgen.batch import BatchMixer
from mixgen.config import MixGenConfig

__all__ = ["mixgen", "stage"]


def _mix_batches(data: Iterable[Any], mixer: BatchMixer,
                 handler: Callable[[Exception], bool] = reraise_exception) -> Iterator[Any]:
    """Mix every batch of ``data`` (lists or dicts from ``batched``) with ``mixer``.

    A batch that raises is passed to ``handler``, webdataset's convention: it is skipped
    when the handler returns True (``warn_and_continue``, ``ignore_and_continue``), and
    the stage stops when it returns False.
    """
    for batch in data:
        try:
            mixed = mixer(batch)
        except Exception as error:
            if handler(error):
                continue
            break
        yield mixed


_mix_stage = pipelinefilter(_mix_batches)


def mixgen(config: MixGenConfig | None = None, /, *,
           handler: Callable[[Exception], bool] = reraise_exception,
           generator: torch.Generator | None = None, tokenizer: Any = None,
           **options: Any) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """A webdataset stage that mixes every batch as ``MixGen(config, **options)`` does.

    The options are checked here, when the pipeline is built, not in the workers.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword options replace its values.
        handler: webdataset's error handler, called with a batch's error: the batch is
            skipped when it returns True (``wds.warn_and_continue``), the stage stops when
            it returns False, and the default re-raises.
        generator: a CPU ``torch.Generator``, as in :class:`~mixgen.MixGen`.
        tokenizer: the tokenizer of token-id captions, as in :class:`~mixgen.MixGen`.
        **options: every other option of :class:`~mixgen.MixGen`.

    Example:
        >>> import torch
        >>> import mixgen.wds
        >>> stage = mixgen.wds.mixgen(ratio=0.5)  # wds.DataPipeline(..., wds.batched(4), stage)
        >>> batches = [(torch.zeros(4, 3, 2, 2), ["a", "b", "c", "d"])]
        >>> [texts for _, texts in stage(iter(batches))]
        [['a c', 'b d', 'c', 'd']]
    """
    return stage(BatchMixer(MixGenConfig.resolve(config, options), generator, tokenizer),
                 handler=handler)


def stage(mixer: BatchMixer, *, handler: Callable[[Exception], bool] = reraise_exception
          ) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """The stage of a :class:`~mixgen.batch.BatchMixer` that the caller keeps, for
    example to switch mixing off with ``mixer.enabled = False`` (which reaches the
    workers the pipeline was copied into); ``handler`` as in :func:`mixgen`."""
    return _mix_stage(mixer, handler=handler)
