"""Shared test helpers: small batches, folders of generated image-caption pairs, and the
reference code the library is checked against (the paper's published loops, from
:mod:`benchmarks.reference`, which ``benchmarks/throughput.py`` times too, and a plain
loop over an info's pairs).
"""

import socket
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import torch
from PIL import Image

from benchmarks.reference import published_mixgen, published_mixgen_batch
from mixgen import MixGenInfo

__all__ = ["captions", "free_port", "image_batch", "loss_features", "make_info",
           "published_mixgen", "published_mixgen_batch", "red_square", "reference_mix",
           "tiny_clip", "tiny_dual_encoder", "tiny_siglip", "write_pairs"]


def captions(n: int) -> list[str]:
    return [f"caption {i}" for i in range(n)]


def image_batch(n: int, *, dtype=torch.float32, shape=(3, 4, 5), seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    return torch.rand((n, *shape), generator=gen).to(dtype)


def make_info(source, partner, lam, *, batch_size=4, mode="replace", pairing="first",
              keep_source_text=None) -> MixGenInfo:
    """The info of pairs ``(source[k], partner[k])`` with weights ``lam[k]``."""
    return MixGenInfo(batch_size=batch_size, mode=mode, pairing=pairing,
                      source=torch.tensor(source), partner=torch.tensor(partner),
                      lam=torch.tensor(lam, dtype=torch.float32),
                      keep_source_text=keep_source_text)


def loss_features(rows, dim=6, seed=0, requires_grad=False):
    """Unit-norm random image and text features, ``[rows, dim]`` each."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1)
    return image.requires_grad_(requires_grad), text.requires_grad_(requires_grad)


def free_port() -> int:
    """A TCP port free on this machine now (for a process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_towers(tok, image_size: int, context_length: int) -> tuple[dict, dict]:
    """Keywords of a one-layer text tower of ``tok``'s vocabulary and a one-layer vision
    tower of ``image_size`` px in 4 x 4 patches (32 x 32 above 64 px)."""
    text = dict(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=context_length, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=image_size,
                  patch_size=4 if image_size <= 64 else 32)
    return text, vision


def tiny_clip(tok, seed=0, *, image_size=8, context_length=16):
    """A randomly initialised transformers CLIPModel whose text tower reads ``tok``'s ids
    (it pools at the first end token, [SEP] for the MiniLM tokenizer)."""
    import transformers

    torch.manual_seed(seed)
    text, vision = _tiny_towers(tok, image_size, context_length)
    text.update(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    return transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                          projection_dim=8))


def tiny_siglip(tok, seed=0, *, version=1, image_size=8, context_length=16):
    """A randomly initialised transformers SiglipModel (``version=2``: Siglip2Model, which
    takes images as rows of patches, 4 of them) that reads ``tok``'s ids."""
    import transformers

    torch.manual_seed(seed)
    text, vision = _tiny_towers(tok, image_size, context_length)
    if version == 2:
        vision = {**vision, "num_patches": 4}
        del vision["image_size"]
        return transformers.Siglip2Model(transformers.Siglip2Config(text_config=text,
                                                                    vision_config=vision))
    return transformers.SiglipModel(transformers.SiglipConfig(text_config=text,
                                                              vision_config=vision))


def tiny_dual_encoder(tok, seed=0, *, image_size=8, context_length=16):
    """A randomly initialised transformers VisionTextDualEncoderModel: a CLIP vision tower
    and a BERT text tower of ``tok``'s vocabulary."""
    import transformers

    torch.manual_seed(seed)
    text, vision = _tiny_towers(tok, image_size, context_length)
    return transformers.VisionTextDualEncoderModel(
        transformers.VisionTextDualEncoderConfig.from_vision_text_configs(
            transformers.CLIPVisionConfig(**vision), transformers.BertConfig(**text),
            projection_dim=8))


def red_square(i: int) -> Image.Image:
    """An 8 x 8 image of red level ``20 * i``."""
    return Image.new("RGB", (8, 8), (20 * i, 0, 0))


def write_pairs(folder: Path, count: int, *, csv: str = "pairs.csv", images: str = "images",
                image: Callable[[int], Image.Image] = red_square,
                name: Callable[[int], str] = "{}.png".format,
                caption: Callable[[int], str] = "red level {}".format,
                sep: str = "\t", prefix: str = "") -> Path:
    """A folder of ``count`` generated pairs as open_clip_train and the harness read them:
    ``image(i)`` saved as ``folder/images/name(i)`` (the format follows the suffix), and
    ``folder/csv`` with a ``filepath``/``title`` header, separated by ``sep``, whose row
    ``i`` is ``prefix + images/name(i)`` and ``caption(i)``. Returns the CSV's path."""
    (folder / images).mkdir(parents=True, exist_ok=True)
    rows = [f"filepath{sep}title"]
    for i in range(count):
        relative = PurePosixPath(images, name(i)).as_posix()
        image(i).save(folder / relative)
        rows.append(f"{prefix}{relative}{sep}{caption(i)}")
    path = folder / csv
    path.write_text("\n".join(rows) + "\n")
    return path


def reference_mix(images, texts, info, sep=" "):
    """Mixup and joined captions by plain loops over the pairs of ``info``, reading only
    the original batch: ``lam * a + (1 - lam) * b`` in float64, rounded half up for
    uint8. ``texts`` may be None (images only)."""
    out = list(images.clone()) + [None] * (info.output_size - info.batch_size)
    out_texts = None if texts is None else list(texts) + [None] * len(out[info.batch_size:])
    for t, s, p, lam in zip(info.target.tolist(), info.source.tolist(),
                            info.partner.tolist(), info.lam.tolist(), strict=True):
        mixed = lam * images[s].double() + (1 - lam) * images[p].double()
        out[t] = (torch.floor(mixed + 0.5) if images.dtype == torch.uint8
                  else mixed).to(images.dtype)
        if texts is not None:
            out_texts[t] = texts[s] + sep + texts[p]
    return torch.stack(out), out_texts
