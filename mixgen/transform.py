"""``MixGen``: the transform, in the style of torchvision's v2 MixUp and CutMix."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from mixgen.batch import BatchMixer, MixerAdapter
from mixgen.config import MixGenConfig
from mixgen.info import MixGenInfo
from mixgen.tokens import TokenLayout

_OPTIONS = frozenset(f.name for f in dataclasses.fields(MixGenConfig))


class MixGen(MixerAdapter, nn.Module):
    """Make new image-text pairs inside a batch: ``lam * image_i + (1 - lam) * image_j``
    with caption ``text_i + sep + text_j``.

    The defaults are the paper's: ``lam = 0.5``, the first quarter of the batch replaced
    by mixes of sample ``i`` with sample ``i + B/4``, on every batch.

    Call it as ``mix(images, texts)``, ``mix((images, texts))`` or ``mix(batch_dict)``;
    it returns the same structure. ``mix(..., info=saved)`` replays a saved
    :class:`~mixgen.MixGenInfo` instead of drawing: its pairs, lambdas and ops.
    ``images`` is a float or uint8 tensor ``[B, C, H, W]`` or ``[B, T, C, H, W]`` on any
    device; ``texts`` a list of str, a list of lists of str, ``[B, L]`` token ids or a
    dict of ``input_ids`` and ``attention_mask`` tensors. A dict batch may also hold its
    captions flat, as transformers does (``{"pixel_values", "input_ids",
    "attention_mask"}``, selected by ``text_key="input_ids"`` or found without a
    ``text_key`` key): ``input_ids``, ``attention_mask`` and ``token_type_ids`` are mixed
    together, and caption strings kept beside them under ``text_key`` with the same pairs.
    Extra elements of a tuple and extra keys of a dict pass through (grown by the sources'
    entries in ``append`` mode).

    With ``pairing="previous"`` the first M rows are mixed with the rows 0..M-1 of the
    previous batch this transform mixed, as they were before mixing (a copy of those rows
    is kept, taken before the batch is written), so a partner's own pair is not in the
    batch. The first batch (in each process and DataLoader worker) passes through with
    an info of zero pairs; a batch after a smaller one gets at most as many pairs as that
    one kept. The info's ``partner_in_batch`` is False; it cannot be replayed.

    ``mix.enabled = False`` switches mixing off (like timm's ``mixup_enabled``): batches
    pass through unmixed, nothing is drawn, the info is None; it reaches the DataLoader
    workers the transform was copied into, persistent ones too.

    Args:
        config: a :class:`~mixgen.MixGenConfig`; keyword options (``lam``, ``alpha``,
            ``ratio``, ``num_pairs``, ``pairing``, ``mode``, ``p``, ``image_op``,
            ``text_op``, ``sep``, ``multi_caption``, ``inplace``, ``return_info``,
            ``image_key``, ``text_key``; see its fields) replace its values, or stand
            alone.
        generator: a CPU ``torch.Generator`` for every random draw (else torch's global
            RNG). Parameters are drawn on the host and copied to the images' device
            without waiting for it. In DataLoader workers it is reseeded from the
            worker's seed, so workers never repeat one stream and runs with the same seed
            repeat exactly.
        tokenizer: the open_clip or Hugging Face tokenizer that made token-id captions;
            its special ids, padding side and the ids of ``sep`` say how to join them.
            Without it only open_clip's ids (every row starting with 49406) are read.
        **options: the fields of :class:`~mixgen.MixGenConfig`, as above.

    Example:
        >>> import torch
        >>> from mixgen import MixGen
        >>> images = torch.arange(8.0).view(8, 1, 1, 1)  # image i has the value i
        >>> texts = [f"caption {i}" for i in range(8)]
        >>> mixed_images, mixed_texts = MixGen()(images, texts)
        >>> mixed_images.flatten().tolist()  # rows 0, 1 mixed with rows 2, 3 at lam 0.5
        [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        >>> mixed_texts[:3]
        ['caption 0 caption 2', 'caption 1 caption 3', 'caption 2']
    """

    def __init__(self, config: MixGenConfig | None = None, /, *,
                 generator: torch.Generator | None = None, tokenizer: Any = None,
                 **options: Any) -> None:
        super().__init__()
        self.mixer = BatchMixer(MixGenConfig.resolve(config, options), generator, tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name in _OPTIONS:  # mix.ratio, mix.text_op, ...: the config's
            return getattr(self.__dict__["mixer"].config, name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTIONS:
            raise AttributeError(f"MixGen's options are its frozen config: make a new one, "
                                 f"MixGen(mix.config, {name}=...)")
        super().__setattr__(name, value)

    @property
    def generator(self) -> torch.Generator | None:
        return self.mixer.generator.generator

    @property
    def tokenizer(self) -> Any:
        return self.mixer.tokenizer

    def extra_repr(self) -> str:
        return self.config.summary()

    def draw_params(self, batch_size: int, image_size: tuple[int, int]) -> MixGenInfo:
        """Draw the pairs and lambdas for a batch, from this transform's generator."""
        return self.mixer.draw(batch_size, image_size)

    def token_layout(self, texts: Any) -> TokenLayout | None:
        """How token-id ``texts`` are joined: the tokenizer's layout (read once), or None
        (open_clip's, read from the ids; or string captions)."""
        return self.mixer.layout(texts)

    def mix(self, images: Tensor, texts: Any, info: MixGenInfo) -> tuple[Tensor, Any]:
        """Replay ``info`` (for example a saved one) on a batch: it is mixed with the
        pairs, lambdas and ops the info records; an info that does not fit the batch is
        refused."""
        mixed = self.mixer.mix(images, texts, info)
        return mixed.images, mixed.texts

    def forward(self, *inputs: Any, info: MixGenInfo | None = None) -> Any:
        if len(inputs) not in (1, 2):
            raise TypeError(f"MixGen takes (images, texts), a (images, texts, ...) sequence "
                            f"or a dict batch; got {len(inputs)} positional arguments")
        return self.mixer(inputs[0] if len(inputs) == 1 else tuple(inputs), info)
