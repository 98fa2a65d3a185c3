"""Write docs/gallery.png: what each image op of MixGen makes of the same pairs.

    .venv/bin/python benchmarks/gallery.py            # writes docs/gallery.png

One block per image op (mixup, cutmix, concat), each showing two pairs of the same
procedural batch: the source, its partner and their mix, captions under each tile.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from mixgen import MixGen
from mixgen.config import IMAGE_OPS
from mixgen.viz import gallery
from mixgen_bench.data import shapes

TITLE_HEIGHT = 24


def render(seed: int, image_size: int, tile_size: int) -> Image.Image:
    """The gallery: one titled block per image op, all on the same batch and pairs."""
    data = shapes(8, "train", image_size, seed)
    images, texts = data.images, data.captions
    blocks = []
    for op in IMAGE_OPS:
        mix = MixGen(image_op=op, num_pairs=2, return_info=True,
                     generator=torch.Generator().manual_seed(seed))
        mixed_images, mixed_texts, info = mix(images, texts)
        picture = gallery(images, texts, mixed_images, mixed_texts, info, pairs_per_row=2,
                          tile_size=tile_size, caption_lines=9)
        blocks.append((f"MixGen(image_op={op!r})", picture))
    width = max(picture.width for _, picture in blocks)
    height = sum(picture.height + TITLE_HEIGHT for _, picture in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    top = 0
    for title, picture in blocks:
        draw.text((6, top + 4), title, font=font, fill=(0, 0, 0))
        canvas.paste(picture, (0, top + TITLE_HEIGHT))
        top += picture.height + TITLE_HEIGHT
    return canvas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/gallery.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--tile-size", type=int, default=128)
    args = parser.parse_args(argv)
    picture = render(args.seed, args.image_size, args.tile_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the PNG small enough to commit
    picture.quantize(colors=256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({picture.width}x{picture.height}, "
          f"{args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
