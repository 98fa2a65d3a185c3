"""Pictures of what MixGen did: each pair's two originals and their mix side by side,
every tile with its caption wrapped under it.

Built on ``torchvision.utils.make_grid`` for the layout and PIL's ``ImageDraw`` for the
text, so it needs neither matplotlib nor a display: the result is a ``PIL.Image`` to
save, or to show inline in a notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from mixgen.checks import check_images, check_texts
from mixgen.info import MixGenInfo

__all__ = ["caption_grid", "gallery", "to_uint8"]

_PADDING = 4
_HEADER_COLOUR = (40, 90, 160)
_TEXT_COLOUR = (20, 20, 20)
_BOX_COLOUR = (255, 200, 0)
_RULE_COLOUR = (150, 150, 150)


def to_uint8(images: Tensor, *, mean: Sequence[float] | Tensor | None = None,
             std: Sequence[float] | Tensor | None = None) -> Tensor:
    """A display-ready ``[B, 3, H, W]`` uint8 copy of an image or video batch.

    Video batches ``[B, T, C, H, W]`` show their first frame; one-channel images are
    repeated to RGB. Float images are taken to lie in [0, 1] once ``mean``/``std`` (the
    per-channel values they were normalised with) are undone, and are clamped to it;
    uint8 images are shown as they are.
    """
    check_images(images)
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together (the normalisation to undo)")
    frames = images[:, 0] if images.ndim == 5 else images
    channels = frames.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels to be shown, got {channels} "
                         f"(shape {tuple(images.shape)})")
    frames = frames.detach().cpu()
    if mean is not None:
        if frames.dtype == torch.uint8:
            raise ValueError("mean and std undo the normalisation of float images; "
                             "these images are uint8")
        shift = _per_channel("mean", mean, channels)
        scale = _per_channel("std", std, channels)
        if bool((scale == 0).any()):
            raise ValueError("std must not contain 0")
        frames = frames.float() * scale + shift
    if frames.is_floating_point():  # rounded as torchvision.utils.save_image does
        frames = frames.float().clamp(0.0, 1.0).mul(255).round().to(torch.uint8)
    return frames.expand(-1, 3, -1, -1).clone(memory_format=torch.contiguous_format)


def caption_grid(images: Tensor, texts: Sequence, *, ncol: int = 4,
                 mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None, tile_size: int = 128,
                 font_size: int = 12, caption_lines: int = 4) -> Image.Image:
    """One image of a batch: ``ncol`` tiles a row, each with ``#row`` and its caption.

    ``texts`` is one ``str`` or list of ``str`` per image (several captions are shown one
    a line); decode token ids first. ``mean``/``std`` undo the images' normalisation
    (see :func:`to_uint8`); tiles are ``tile_size`` pixels high.
    """
    _check_layout(ncol=ncol, tile_size=tile_size, font_size=font_size,
                  caption_lines=caption_lines)
    tiles = to_uint8(images, mean=mean, std=std)
    _check_captions("texts", texts, tiles.shape[0])
    labels = [(f"#{row}", _caption_text(text)) for row, text in enumerate(texts)]
    return _render(tiles, labels, [None] * len(labels), ncol=ncol, tile_size=tile_size,
                   font_size=font_size, caption_lines=caption_lines)


def gallery(images: Tensor, texts: Sequence, mixed_images: Tensor, mixed_texts: Sequence,
            info: MixGenInfo, *, max_pairs: int = 4, pairs_per_row: int = 1,
            mean: Sequence[float] | Tensor | None = None,
            std: Sequence[float] | Tensor | None = None, tile_size: int = 128,
            font_size: int = 12, caption_lines: int = 4) -> Image.Image:
    """One image of the first ``max_pairs`` pairs of a MixGen call.

    Each pair is three tiles, left to right: the source (weight ``lam``), the partner
    (weight ``1 - lam``), both from the batch before mixing, and the mix from the batch
    after it, each with its caption; a cutmix box is outlined on the mix. Pass what went
    in and what came out, as ``MixGen(return_info=True)`` returns it::

        mixed_images, mixed_texts, info = MixGen(return_info=True)(images, texts)
        gallery(images, texts, mixed_images, mixed_texts, info).save("mixgen.png")
    """
    _check_layout(ncol=pairs_per_row, tile_size=tile_size, font_size=font_size,
                  caption_lines=caption_lines)
    if not isinstance(info, MixGenInfo):
        raise TypeError(f"info must be the MixGenInfo that MixGen(return_info=True) returns, "
                        f"got {type(info).__name__}")
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive int, got {max_pairs!r}")
    if not info.applied:
        raise ValueError("info has no pairs: this batch was not mixed (p < 1 drew no mix, "
                         "or the batch was too small for any pair)")
    if not info.partner_in_batch:
        raise ValueError(f"info.pairing={info.pairing!r}: the partners are rows of an earlier "
                         f"batch, which a gallery of this batch does not show")
    check_images(images)
    check_images(mixed_images)
    for name, batch, size in (("images", images, info.batch_size),
                              ("mixed_images", mixed_images, info.output_size)):
        if batch.shape[0] != size:
            raise ValueError(f"{name} has {batch.shape[0]} rows but info describes "
                             f"{size}: pass the batch before and after this MixGen call")
    _check_captions("texts", texts, info.batch_size)
    _check_captions("mixed_texts", mixed_texts, info.output_size)
    count = min(max_pairs, info.num_pairs)
    source = info.source[:count].tolist()
    partner = info.partner[:count].tolist()
    target = info.target[:count].tolist()
    before = to_uint8(images, mean=mean, std=std)
    after = to_uint8(mixed_images, mean=mean, std=std)
    tiles, labels, boxes = [], [], []
    for k in range(count):
        lam = float(info.lam[k])
        tiles += [before[source[k]], before[partner[k]], after[target[k]]]
        labels += [(f"#{source[k]}  lam {lam:.2f}", _caption_text(texts[source[k]])),
                   (f"#{partner[k]}  1-lam {1 - lam:.2f}", _caption_text(texts[partner[k]])),
                   (f"mix -> #{target[k]}", _caption_text(mixed_texts[target[k]]))]
        boxes += [None, None, None if info.boxes is None else info.boxes[k].tolist()]
    return _render(torch.stack(tiles), labels, boxes, ncol=3 * pairs_per_row,
                   tile_size=tile_size, font_size=font_size, caption_lines=caption_lines,
                   group=3)


# ----------------------------------------------------------------------------- helpers
def _per_channel(name: str, values: Sequence[float] | Tensor, channels: int) -> Tensor:
    """``values`` as a float ``[C, 1, 1]`` tensor, one value or one per channel."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a sequence of floats, got {values!r}") from error
    if tensor.numel() not in (1, channels):
        raise ValueError(f"{name} must have 1 or {channels} values (one per channel), "
                         f"got {tensor.numel()}")
    return tensor.expand(channels).reshape(channels, 1, 1)


def _check_captions(name: str, texts: object, batch_size: int) -> None:
    """Captions must be strings to be drawn: token ids are refused with a hint."""
    if isinstance(texts, (Tensor, Mapping)):
        raise TypeError(f"{name} holds token ids; decode them to a list of str to show them "
                        f"(for example with your tokenizer's decode)")
    check_texts(texts, batch_size)


def _check_layout(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _caption_text(text: str | Sequence[str]) -> str:
    return text if isinstance(text, str) else "\n".join(text)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int,
          max_lines: int) -> list[str]:
    """Lines of at most ``width`` pixels, words kept whole; '...' marks a cut."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 1], lines[max_lines - 1] + " ..."]
    return [_fit(line, font, width) for line in lines]


def _fit(line: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """``line`` cut to ``width`` pixels, with '...' at the cut."""
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "...") > width:
        line = line[:-1]
    return line + "..."


def _render(tiles: Tensor, labels: list[tuple[str, str]], boxes: list[list[int] | None], *,
            ncol: int, tile_size: int, font_size: int, caption_lines: int,
            group: int | None = None) -> Image.Image:
    """Lay out uint8 ``tiles`` with a header and a wrapped caption under each tile.

    ``boxes`` holds, per tile, an optional ``(top, left, height, width)`` to outline, in
    the tile's own pixels. With ``group``, a vertical rule follows every ``group`` columns.
    """
    height, width = tiles.shape[-2:]
    scale = tile_size / height
    tile_width = max(1, round(width * scale))
    upscale = tile_size >= height
    mode = TF.InterpolationMode.NEAREST_EXACT if upscale else TF.InterpolationMode.BILINEAR
    tiles = TF.resize(tiles, [tile_size, tile_width], interpolation=mode, antialias=not upscale)
    font = _font(font_size)
    line_height = font_size + 3
    caption_height = (caption_lines + 1) * line_height + _PADDING
    tiles = nnf.pad(tiles, (0, 0, 0, caption_height), value=255)
    grid = make_grid(tiles, nrow=ncol, padding=_PADDING, pad_value=255)
    picture = TF.to_pil_image(grid)
    draw = ImageDraw.Draw(picture)
    cell_w, cell_h = tile_width + _PADDING, tile_size + caption_height + _PADDING
    for index, ((header, caption), box) in enumerate(zip(labels, boxes, strict=True)):
        left = _PADDING + (index % ncol) * cell_w
        top = _PADDING + (index // ncol) * cell_h
        if box is not None:
            y, x, h, w = (round(v * scale) for v in box)
            draw.rectangle([left + x, top + y, left + x + w - 1, top + y + h - 1],
                           outline=_BOX_COLOUR, width=2)
        text_top = top + tile_size + _PADDING // 2
        draw.text((left, text_top), _fit(header, font, tile_width), font=font,
                  fill=_HEADER_COLOUR)
        for line_no, line in enumerate(_wrap(caption, font, tile_width, caption_lines), 1):
            draw.text((left, text_top + line_no * line_height), line, font=font,
                      fill=_TEXT_COLOUR)
    columns_used = min(ncol, len(labels))
    for column in range(group, columns_used, group) if group is not None else ():
        x = column * cell_w + _PADDING // 2 - 1
        draw.line([(x, 0), (x, picture.height)], fill=_RULE_COLOUR, width=2)
    return picture
