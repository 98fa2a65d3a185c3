"""The pieces :mod:`mixgen.open_clip_train` puts into open_clip_train while it runs.

- :class:`MixGenTraining` wraps open_clip_train's ``get_data`` and ``create_loss``: the
  training loader mixes in its workers (``MixGenCollate`` for CSV and synthetic data, a
  ``mixgen.wds`` stage after ``.batched()`` for webdataset), switched off from
  ``--mixgen-off-epoch`` on and returns ``(images, texts, info)``;
  :class:`InfoLoader` hands ``(images, texts)`` to ``train_one_epoch`` and the info to
  :class:`InfoFedLoss`, a MixGen loss of the run's family (``MixGenClipLoss``, or
  ``MixGenSigLipLoss`` with ``--siglip``) that scores exactly that batch.
- :class:`CpuDistributedDataParallel` lets open_clip_train's ``DistributedDataParallel(model,
  device_ids=[device])`` run on CPU (``--dist-backend gloo``), which torch refuses as is.

They live apart from :mod:`mixgen.open_clip_train` so that DataLoader workers unpickle
them from this module, also when that one runs as ``__main__``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from open_clip.loss import ClipLoss, SigLipLoss
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from webdataset import DataPipeline

import mixgen.wds
from mixgen.batch import BatchMixer
from mixgen.collate import MixGenCollate
from mixgen.info import MixGenInfo
from mixgen.losses import MixGenClipLoss, MixGenSigLipLoss
from mixgen.train_options import TrainOptions


class UnsupportedInternalsError(RuntimeError):
    """open_clip_train's internals are not the ones this module was written against."""


class CpuDistributedDataParallel(DistributedDataParallel):
    """``DistributedDataParallel`` that drops ``device_ids`` naming only CPUs.

    torch refuses ``device_ids`` for a CPU module; open_clip_train always passes them.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Any = None, *args: Any,
                 **kwargs: Any) -> None:
        if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
            device_ids = None
        super().__init__(module, device_ids, *args, **kwargs)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of MixGen's own generator for one rank and epoch (never torch's global
    RNG, so data order and initial weights are those of the run without MixGen)."""
    return hash((seed, rank, epoch)) % 2**63  # ints hash the same in every process


class _BatchInfos:
    """Hands each batch's info from the training loader to the loss that scores it."""

    _EMPTY = object()

    def __init__(self) -> None:
        self._info: Any = self._EMPTY
        self.scored = 0

    def put(self, info: MixGenInfo | None) -> None:
        if self._info is not self._EMPTY:
            raise RuntimeError("the MixGen loss did not score the previous batch before the "
                               "next one arrived")
        self._info = info

    def take(self) -> MixGenInfo | None:
        if self._info is self._EMPTY:
            raise RuntimeError("the MixGen loss was called without a batch from the MixGen "
                               "training loader")
        info, self._info = self._info, self._EMPTY
        self.scored += info is not None
        return info


class InfoFedLoss(torch.nn.Module):
    """A MixGen loss (``loss``) called as open_clip_train calls its loss, with the info
    of the batch it scores taken from the loader."""

    def __init__(self, infos: _BatchInfos, loss: MixGenClipLoss | MixGenSigLipLoss) -> None:
        super().__init__()
        self.infos, self.loss = infos, loss

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor, logit_bias: torch.Tensor | None = None,
                output_dict: bool = False) -> Any:
        return self.loss(image_features, text_features, logit_scale, logit_bias=logit_bias,
                         output_dict=output_dict, mixgen_info=self.infos.take())


class InfoLoader:
    """The training loader as ``train_one_epoch`` expects it, ``(images, texts)`` batches,
    with every other attribute (``num_batches``, ``num_samples``...) the wrapped loader's.

    Each ``iter()`` is one epoch: it switches the mixer on or off (``--mixgen-off-epoch``;
    the switch reaches running workers) and reseeds MixGen's generator for that epoch
    before the loader starts its workers, and hands each batch's info to the loss
    (``infos``; None when the loss is open_clip's own).
    """

    def __init__(self, loader: Any, *, mixer: BatchMixer, generator: torch.Generator,
                 infos: _BatchInfos | None, args: Any, start_epoch: int,
                 options: TrainOptions) -> None:
        self.loader, self.mixer, self.generator, self.infos = loader, mixer, generator, infos
        self.seed, self.rank = args.seed, args.rank
        self.epoch, self.options = start_epoch, options

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.mixer.enabled = self.options.mixing(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.rank, epoch))
        scored_before = self.infos.scored if self.infos is not None else 0
        batches = pairs = 0
        for images, texts, info in self.loader:
            batches += 1
            pairs += info.num_pairs if info is not None else 0
            if self.infos is not None:
                self.infos.put(info)
            yield images, texts
        scored = (f", {self.infos.scored - scored_before} scored with their info"
                  if self.infos is not None else "")
        logging.info(f"MixGen rank {self.rank} epoch {epoch}: {pairs} pairs mixed in "
                     f"{batches} batches{scored}")


class MixGenTraining:
    """What ``--mixgen`` changes in open_clip_train: ``get_data`` and ``create_loss``.

    Args:
        options: the run's :class:`~mixgen.train_options.TrainOptions`.
    """

    def __init__(self, options: TrainOptions) -> None:
        self.options = options
        self.infos = _BatchInfos() if options.targets is not None else None

    def get_data(self, original: Callable) -> Callable:
        """``get_data`` whose training loader mixes its batches."""

        def get_data(args: Any, preprocess_fns: Any, epoch: int = 0,
                     tokenizer: Any = None) -> dict:
            data = original(args, preprocess_fns, epoch=epoch, tokenizer=tokenizer)
            if "train" in data:
                train = data["train"]
                train.dataloader = self.mixing_loader(train.dataloader, args, epoch, tokenizer)
            return data

        return get_data

    def create_loss(self, original: Callable) -> Callable:
        """``create_loss`` that returns the MixGen loss of the run's family, with this
        run's targets and mixed weight and open_clip's options: ``MixGenClipLoss`` for
        ``ClipLoss``, ``MixGenSigLipLoss`` for ``SigLipLoss`` (``--siglip``)."""

        def create_loss(args: Any) -> InfoFedLoss:
            loss = original(args)
            targets, weight, infos = self.options.targets, self.options.mixed_weight, self.infos
            assert targets is not None and infos is not None  # wrapped only for such runs
            mixgen_loss: MixGenClipLoss | MixGenSigLipLoss
            if type(loss) is ClipLoss:
                mixgen_loss = MixGenClipLoss(
                    targets, weight, local_loss=loss.local_loss,
                    gather_with_grad=loss.gather_with_grad, cache_labels=loss.cache_labels,
                    rank=loss.rank, world_size=loss.world_size, use_horovod=loss.use_horovod)
            elif type(loss) is SigLipLoss:
                mixgen_loss = MixGenSigLipLoss(
                    targets, weight, cache_labels=loss.cache_labels, rank=loss.rank,
                    world_size=loss.world_size, dist_impl=loss.dist_impl)
            else:
                raise ValueError(
                    f"{self.options.loss_flag} needs open_clip's ClipLoss or SigLipLoss "
                    f"(--siglip), which MixGenClipLoss and MixGenSigLipLoss replace, but "
                    f"this run uses {type(loss).__name__}: train CoCa models and "
                    f"distillation with --mixgen-loss clip and --mixgen-mixed-weight 1")
            return InfoFedLoss(infos, mixgen_loss)

        return create_loss

    def mixing_loader(self, loader: Any, args: Any, start_epoch: int,
                      tokenizer: Any) -> InfoLoader:
        """``loader`` mixing in its workers, wrapped in an :class:`InfoLoader`."""
        generator = torch.Generator()
        config = dataclasses.replace(self.options.config, return_info=True)
        torch_loader = loader if isinstance(loader, DataLoader) else _first_stage(loader)
        if isinstance(torch_loader, DataLoader) and isinstance(torch_loader.dataset,
                                                               DataPipeline):
            mixer = BatchMixer(config, generator, tokenizer)
            torch_loader.dataset.append(mixgen.wds.stage(mixer))
        elif isinstance(torch_loader, DataLoader) and torch_loader.batch_size is not None:
            collate = MixGenCollate(config, generator=generator, tokenizer=tokenizer)
            torch_loader.collate_fn, mixer = collate, collate.mixer
        else:
            raise UnsupportedInternalsError(f"the training loader is a {type(loader).__name__} "
                                            f"that MixGen cannot reach into")
        return InfoLoader(loader, mixer=mixer, generator=generator, infos=self.infos,
                          args=args, start_epoch=start_epoch, options=self.options)


def _first_stage(loader: Any) -> Any:
    """The torch ``DataLoader`` inside a webdataset ``WebLoader`` (its first stage)."""
    stages = getattr(loader, "pipeline", None)
    return stages[0] if isinstance(stages, list) and stages else None
