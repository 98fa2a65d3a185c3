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
batches MixGen rejects. It works with webdataset 0.2.86 (open_clip_train's) and 1.x.
With ``pairing="previous"`` the stage pairs each batch with the previous batch of its
own worker (the pipeline, and the stage's state, is copied into each worker).
Needs ``webdataset`` (``pip install mixgen[wds]``); ``import mixgen`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    from webdataset.filters import pipelinefilter, reraise_exception
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mixgen.wds needs webdataset: pip install 'mixgen[wds]'") from error

from mixgen.config import MixGenConfig
from mixgen.transform import MixGen

__all__ = ["mixgen"]


def _mix_batches(data: Iterable[Any], mix: MixGen,
                 handler: Callable[[Exception], bool] = reraise_exception) -> Iterator[Any]:
    """Mix every batch of ``data`` (lists or dicts from ``batched``) with ``mix``.

    A batch that raises is passed to ``handler``, webdataset's convention: it is skipped
    when the handler returns True (``warn_and_continue``, ``ignore_and_continue``), and
    the stage stops when it returns False.
    """
    for batch in data:
        try:
            mixed = mix(batch)
        except Exception as error:
            if handler(error):
                continue
            break
        yield mixed


_mix_stage = pipelinefilter(_mix_batches)


def mixgen(config: MixGenConfig | None = None, /, *,
           handler: Callable[[Exception], bool] = reraise_exception,
           **options: Any) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """A webdataset stage that applies ``MixGen(config, **options)`` to every batch.

    The options are checked here, when the pipeline is built, not in the workers.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword options replace its values.
        handler: webdataset's error handler, called with a batch's error: the batch is
            skipped when it returns True (``wds.warn_and_continue``), the stage stops when
            it returns False, and the default re-raises.
        **options: every other option of :class:`~mixgen.MixGen`, ``tokenizer`` and
            ``generator`` included.

    Example:
        >>> import torch
        >>> import mixgen.wds
        >>> stage = mixgen.wds.mixgen(ratio=0.5)  # wds.DataPipeline(..., wds.batched(4), stage)
        >>> batches = [(torch.zeros(4, 3, 2, 2), ["a", "b", "c", "d"])]
        >>> [texts for _, texts in stage(iter(batches))]
        [['a c', 'b d', 'c', 'd']]
    """
    return _mix_stage(MixGen(config, **options), handler=handler)
