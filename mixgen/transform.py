"""``MixGen``: the transform, in the style of torchvision's v2 MixUp and CutMix."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import get_worker_info

from mixgen import functional as F
from mixgen.params import DEFAULT_RATIO, MixGenInfo, check_options, sample_params
from mixgen.tokens import TokenLayout, infer_layout, layout_from_tokenizer


class MixGen(nn.Module):
    """Make new image-text pairs inside a batch: ``lam * image_i + (1 - lam) * image_j``
    with caption ``text_i + sep + text_j``.

    The defaults are the paper's: ``lam = 0.5``, the first quarter of the batch replaced
    by mixes of sample ``i`` with sample ``i + B/4``, on every batch.

    Call it as ``mix(images, texts)``, ``mix((images, texts))`` or ``mix(batch_dict)``;
    it returns the same structure. ``images`` is a float or uint8 tensor ``[B, C, H, W]``
    or ``[B, T, C, H, W]``; ``texts`` a list of str, a list of lists of str, ``[B, L]``
    token ids or a dict of ``input_ids`` and ``attention_mask`` tensors. Extra
    elements of a tuple and extra keys of a dict pass through (grown by the sources'
    entries in ``append`` mode).

    Args:
        lam: the source's weight when ``alpha`` is None.
        alpha: draw one lambda per pair from ``Beta(alpha, alpha)`` instead.
        ratio: fraction of the batch that becomes new pairs, rounded down (0.25 when
            neither ``ratio`` nor ``num_pairs`` is given; at most 0.5 for ``first``).
        num_pairs: an absolute number of pairs instead of ``ratio``.
        pairing: ``first`` (i with i + M), ``permute`` (random, no self-pairs),
            ``roll`` (i with i - 1) or ``flip`` (i with B - 1 - i).
        mode: ``replace`` keeps the batch size (the paper); ``append`` adds M new pairs.
        p: probability of mixing a batch at all.
        image_op: ``mixup`` (interpolate), ``cutmix`` (paste a box of area 1 - lam from
            the partner) or ``concat`` (side by side).
        text_op: ``concat`` (join with ``sep``) or ``select`` (the larger weight's caption).
        sep: the separator of joined captions.
        multi_caption: with several captions per image, ``by_position`` or ``pick_one``.
        inplace: write into the caller's tensor and list instead of new ones.
        generator: a ``torch.Generator`` for every random draw (else torch's global RNG).
            In DataLoader workers it is reseeded from the worker's seed, so workers
            never repeat one stream and runs with the same seed repeat exactly.
        return_info: also return the :class:`~mixgen.params.MixGenInfo` used.
        image_key, text_key: where images and captions are in a dict batch.
        tokenizer: the open_clip or Hugging Face tokenizer that made token-id captions;
            its special ids, padding side and the ids of ``sep`` say how to join them.
            Without it only open_clip's ids (every row starting with 49406) are read.
    """

    def __init__(self, *, lam: float = 0.5, alpha: float | None = None,
                 ratio: float | None = None, num_pairs: int | None = None,
                 pairing: str = "first", mode: str = "replace", p: float = 1.0,
                 image_op: str = "mixup", text_op: str = "concat", sep: str = " ",
                 multi_caption: str = "by_position", inplace: bool = False,
                 generator: torch.Generator | None = None, return_info: bool = False,
                 image_key: str = "image", text_key: str = "text",
                 tokenizer: Any = None) -> None:
        super().__init__()
        check_options(lam=lam, alpha=alpha, ratio=ratio, num_pairs=num_pairs,
                      pairing=pairing, mode=mode, p=p, image_op=image_op, text_op=text_op)
        if not isinstance(sep, str):
            raise TypeError(f"sep must be a str, got {type(sep).__name__}")
        if multi_caption not in F.MULTI_CAPTION:
            raise ValueError(f"multi_caption must be one of {F.MULTI_CAPTION}, "
                             f"got {multi_caption!r}")
        if inplace and mode == "append":
            raise ValueError("inplace=True cannot be combined with mode='append': "
                             "the batch grows, so a new tensor is returned")
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(f"tokenizer must be callable, got {type(tokenizer).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, "
                            f"got {type(generator).__name__}")
        self.lam, self.alpha, self.ratio, self.num_pairs = lam, alpha, ratio, num_pairs
        self.pairing, self.mode, self.p = pairing, mode, p
        self.image_op, self.text_op, self.sep = image_op, text_op, sep
        self.multi_caption, self.inplace = multi_caption, inplace
        self.generator, self.return_info = generator, return_info
        self.image_key, self.text_key = image_key, text_key
        self.tokenizer = tokenizer
        self._token_layout: TokenLayout | None = None
        self._seeded_worker: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        weight = f"lam={self.lam}" if self.alpha is None else f"alpha={self.alpha}"
        size = (f"num_pairs={self.num_pairs}" if self.num_pairs is not None
                else f"ratio={DEFAULT_RATIO if self.ratio is None else self.ratio}")
        return (f"{weight}, {size}, pairing={self.pairing!r}, mode={self.mode!r}, "
                f"p={self.p}, image_op={self.image_op!r}, text_op={self.text_op!r}, "
                f"sep={self.sep!r}, inplace={self.inplace}")

    # ------------------------------------------------------------------ parameters
    def draw_params(self, batch_size: int, image_size: tuple[int, int]) -> MixGenInfo:
        """Draw the pairs and lambdas for a batch, from this transform's generator."""
        return sample_params(batch_size, image_size, lam=self.lam, alpha=self.alpha,
                             ratio=self.ratio, num_pairs=self.num_pairs,
                             pairing=self.pairing, mode=self.mode, p=self.p,
                             image_op=self.image_op, text_op=self.text_op,
                             multi_caption=self.multi_caption,
                             generator=self.process_generator())

    def process_generator(self) -> torch.Generator | None:
        """The generator, reseeded once per DataLoader worker from that worker's seed.

        A generator pickled into worker processes would otherwise hand every worker the
        same stream. The worker's seed derives from the loader's base seed, so two runs
        under the same ``torch.manual_seed`` still draw identical parameters.
        """
        worker = get_worker_info()
        if self.generator is None or worker is None:
            return self.generator
        key = (os.getpid(), worker.seed)
        if self._seeded_worker != key:
            base = self.generator.initial_seed()
            self.generator.manual_seed((base * 0x9E3779B1 + worker.seed) % 2**63)
            self._seeded_worker = key
        return self.generator

    def token_layout(self, texts: Any) -> TokenLayout | None:
        """How token-id ``texts`` are laid out: read from the tokenizer (once), or open_clip's
        when every row starts with 49406; None for string captions."""
        if not isinstance(texts, (Tensor, Mapping)):
            return None
        if self.tokenizer is None:
            ids = texts["input_ids"] if isinstance(texts, Mapping) else texts
            return infer_layout(ids, self.sep)
        if self._token_layout is None:
            self._token_layout = layout_from_tokenizer(self.tokenizer, self.sep)
        return self._token_layout

    # ------------------------------------------------------------------ mixing
    def check_batch(self, images: Any, texts: Any) -> None:
        """Raise ``TypeError``/``ValueError`` naming what is wrong with a batch."""
        F.check_images(images)
        F.check_texts(texts, images.shape[0])
        self.token_layout(texts)
        if self.generator is not None and self.generator.device != images.device:
            raise ValueError(f"generator is on {self.generator.device} but images are on "
                             f"{images.device}: pass a generator on the images' device")

    def mix(self, images: Tensor, texts: Sequence,
            info: MixGenInfo) -> tuple[Tensor, list]:
        """Apply given parameters (for example a saved ``info``) to a batch.

        Captions are mixed first: token ids that do not follow the layout raise before
        an ``inplace`` call has written into the images.
        """
        mixed_texts = F.mix_texts(texts, info, op=self.text_op, sep=self.sep,
                                  multi_caption=self.multi_caption, inplace=self.inplace,
                                  layout=self.token_layout(texts))
        mixed_images = F.mix_images(images, info, op=self.image_op, inplace=self.inplace)
        return mixed_images, mixed_texts

    def forward(self, *inputs: Any) -> Any:
        batch = _as_batch(inputs)
        images, texts = _find(batch, self.image_key, self.text_key)
        self.check_batch(images, texts)
        info = self.draw_params(images.shape[0], tuple(images.shape[-2:]))
        mixed_images, mixed_texts = self.mix(images, texts, info)
        return repack(batch, mixed_images, mixed_texts, info, return_info=self.return_info,
                      image_key=self.image_key, text_key=self.text_key)


def _as_batch(inputs: tuple) -> Any:
    """The batch of a call: ``mix(batch)`` or ``mix(images, texts)``."""
    if len(inputs) == 1:
        return inputs[0]
    if len(inputs) == 2:
        return tuple(inputs)
    raise TypeError(f"MixGen takes (images, texts), a (images, texts, ...) sequence or "
                    f"a dict batch; got {len(inputs)} positional arguments")


def _find(batch: Any, image_key: str, text_key: str) -> tuple[Any, Any]:
    """Images and captions of a dict batch or of a sequence starting with them."""
    if isinstance(batch, Mapping):
        for key, name in ((image_key, "image_key"), (text_key, "text_key")):
            if key not in batch:
                raise ValueError(f"the dict batch has no key {key!r} ({name}); its keys are "
                                 f"{sorted(map(str, batch))}")
        return batch[image_key], batch[text_key]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"MixGen expects (images, texts), a sequence starting with images and "
                    f"texts, or a dict batch; got {type(batch).__name__}")


def repack(batch: Any, images: Tensor, texts: Any, info: MixGenInfo, *, return_info: bool,
           image_key: str = "image", text_key: str = "text") -> Any:
    """``batch``'s structure with the mixed images and captions in place of its own.

    Other per-sample fields grow by the sources' entries in ``append`` mode; with
    ``return_info`` a dict gets the key ``"mixgen"``, a sequence one more element.
    """
    if isinstance(batch, Mapping):
        out = {k: F.append_rows(v, info) for k, v in batch.items()}
        out[image_key], out[text_key] = images, texts
        if return_info:
            out["mixgen"] = info
        return out if type(batch) is dict else type(batch)(out)
    rest = [F.append_rows(v, info) for v in batch[2:]]
    out = [images, texts, *rest, *([info] if return_info else [])]
    return tuple(out) if isinstance(batch, tuple) else out
