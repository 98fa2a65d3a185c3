"""mixgen.viz: tiles hold the right rows, normalisation is undone, captions are drawn."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from mixgen import MixGen
from mixgen.viz import caption_grid, gallery, to_uint8

PAD = 4  # the grid's padding, in pixels
FONT_SIZE = 12
LINE = FONT_SIZE + 3


def batch(size=8, channels=3, height=16, width=16, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size, channels, height, width, generator=generator)
    if dtype == torch.uint8:
        images = (images * 255).round().to(torch.uint8)
    return images, [f"caption {i}" for i in range(size)]


def tile(picture: Image.Image, row: int, col: int, size: int, caption_lines: int = 4):
    """The pixels of tile (row, col) as a [3, size, size] uint8 tensor."""
    cell_h = size + (caption_lines + 1) * LINE + 2 * PAD
    left, top = PAD + col * (size + PAD), PAD + row * cell_h
    crop = picture.crop((left, top, left + size, top + size))
    return torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8).view(
        size, size, 3).permute(2, 0, 1)


def as_uint8(images):
    """Reference display conversion of float images in [0, 1]: round to nearest."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------- to_uint8
def test_to_uint8_undoes_mean_std():
    images, _ = batch(4)
    mean, std = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]
    normalised = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    shown = to_uint8(normalised, mean=mean, std=std)
    assert shown.dtype == torch.uint8 and shown.shape == (4, 3, 16, 16)
    assert (shown.int() - as_uint8(images).int()).abs().max() <= 1


def test_to_uint8_clamps_float_and_keeps_uint8():
    images = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(images)[0, 0, 0].tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds to even
    raw, _ = batch(3, dtype=torch.uint8)
    shown = to_uint8(raw)
    assert torch.equal(shown, raw)
    shown[0] = 0  # a copy: drawing on it leaves the batch alone
    assert torch.equal(raw, batch(3, dtype=torch.uint8)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_to_uint8_other_float_dtypes(dtype):
    images = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3).expand(2, 3, 1, 3).to(dtype)
    assert to_uint8(images)[1, 2, 0].tolist() == [0, 64, 255]


def test_to_uint8_video_first_frame_and_grey_to_rgb():
    clips = torch.rand(2, 5, 1, 8, 8)
    shown = to_uint8(clips)
    assert shown.shape == (2, 3, 8, 8)
    for channel in range(3):
        assert torch.equal(shown[:, channel], as_uint8(clips[:, 0, 0]))


def test_to_uint8_does_not_modify_input():
    images, _ = batch(2)
    before = images.clone()
    to_uint8(images, mean=[0.5], std=[0.5])
    assert torch.equal(images, before)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"mean": [0.5, 0.5, 0.5]}, ValueError, "mean and std must be given together"),
    ({"mean": [0.5, 0.5], "std": [0.5, 0.5]}, ValueError, "mean must have 1 or 3 values"),
    ({"mean": [0.5], "std": [0.0]}, ValueError, "std must not contain 0"),
    ({"mean": "grey", "std": [1.0]}, TypeError, "mean must be a sequence of floats"),
])
def test_to_uint8_bad_normalisation(kwargs, error, match):
    with pytest.raises(error, match=match):
        to_uint8(torch.rand(2, 3, 4, 4), **kwargs)


def test_to_uint8_bad_images():
    with pytest.raises(ValueError, match="mean and std undo the normalisation of float"):
        to_uint8(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="images must have 1 or 3 channels"):
        to_uint8(torch.rand(2, 4, 4, 4))
    with pytest.raises(TypeError, match=r"images must be a torch\.Tensor"):
        to_uint8([[0.0]])


# ----------------------------------------------------------------------------- gallery
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_gallery_tiles_are_source_partner_mix(mode):
    images, texts = batch(8)
    mixed, mixed_texts, info = MixGen(return_info=True, pairing="permute", ratio=0.5,
                                      mode=mode, generator=torch.Generator().manual_seed(1)
                                      )(images, texts)
    picture = gallery(images, texts, mixed, mixed_texts, info, max_pairs=3, tile_size=16)
    assert picture.size == (PAD + 3 * (16 + PAD), 3 * (16 + 5 * LINE + 2 * PAD) + PAD)
    for k in range(3):
        source, partner = int(info.source[k]), int(info.partner[k])
        target = int(info.target[k])
        assert torch.equal(tile(picture, k, 0, 16), as_uint8(images[source]))
        assert torch.equal(tile(picture, k, 1, 16), as_uint8(images[partner]))
        assert torch.equal(tile(picture, k, 2, 16), as_uint8(mixed[target]))
        expected = 0.5 * images[source] + 0.5 * images[partner]
        assert (tile(picture, k, 2, 16).int() - as_uint8(expected).int()).abs().max() <= 1


def test_gallery_pairs_per_row_and_upscaled_uint8_video():
    clips = torch.randint(0, 256, (8, 2, 3, 8, 8), dtype=torch.uint8)
    texts = [f"clip {i}" for i in range(8)]
    mixed, mixed_texts, info = MixGen(return_info=True)(clips, texts)
    picture = gallery(clips, texts, mixed, mixed_texts, info, pairs_per_row=2, tile_size=32)
    assert picture.size == (PAD + 6 * (32 + PAD), 32 + 5 * LINE + 2 * PAD + PAD)
    # pair 1 starts in column 3; tiles are the first frame, upscaled 4x by repeating pixels
    upscaled = clips[1, 0].repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.equal(tile(picture, 0, 3, 32), upscaled)
    mix = mixed[1, 0].repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.equal(tile(picture, 0, 5, 32), mix)


def test_gallery_undoes_normalisation():
    images, texts = batch(4)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.25])
    normalised = (images - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    mixed, mixed_texts, info = MixGen(return_info=True)(normalised, texts)
    picture = gallery(normalised, texts, mixed, mixed_texts, info, mean=mean, std=std,
                      tile_size=16)
    assert (tile(picture, 0, 0, 16).int() - as_uint8(images[0]).int()).abs().max() <= 1


def test_gallery_outlines_cutmix_box():
    images = torch.zeros(4, 3, 16, 16)
    texts = ["a", "b", "c", "d"]
    mixed, mixed_texts, info = MixGen(return_info=True, image_op="cutmix", lam=0.75,
                                      generator=torch.Generator().manual_seed(0)
                                      )(images, texts)
    top, left, height, width = info.boxes[0].tolist()
    shown = tile(gallery(images, texts, mixed, mixed_texts, info, tile_size=16), 0, 2, 16)
    yellow = torch.tensor([255, 200, 0], dtype=torch.uint8)
    assert torch.equal(shown[:, top, left], yellow)
    assert torch.equal(shown[:, top + height - 1, left + width - 1], yellow)
    assert torch.equal(shown[:, top + height // 2, left + width // 2], torch.zeros(3).byte())


def test_gallery_draws_header_and_caption_with_pil_font():
    images, texts = batch(4)
    mixed, mixed_texts, info = MixGen(return_info=True)(images, texts)
    picture = gallery(images, texts, mixed, mixed_texts, info, tile_size=128)
    # the mix tile's label area, against the same text drawn by PIL on a white strip
    left, top = PAD + 2 * (128 + PAD), PAD + 128 + PAD // 2
    expected = Image.new("RGB", (128, 2 * LINE), "white")
    draw = ImageDraw.Draw(expected)
    font = ImageFont.load_default(size=FONT_SIZE)
    draw.text((0, 0), "mix -> #0", font=font, fill=(40, 90, 160))
    draw.text((0, LINE), "caption 0 caption 1", font=font, fill=(20, 20, 20))
    drawn = picture.crop((left, top, left + 128, top + 2 * LINE))
    assert drawn.tobytes() == expected.tobytes()


def test_gallery_wraps_and_cuts_long_captions():
    images, _ = batch(4)
    texts = ["word " * 60] * 4
    mixed, mixed_texts, info = MixGen(return_info=True)(images, texts)
    picture = gallery(images, texts, mixed, mixed_texts, info, tile_size=64, caption_lines=2)
    cell_h = 64 + 3 * LINE + 2 * PAD
    assert picture.size == (PAD + 3 * (64 + PAD), cell_h + PAD)
    # no ink to the right of the tile, inside the padding column between tiles
    gap = picture.crop((PAD + 64, PAD, 2 * PAD + 64, cell_h)).convert("L")
    assert gap.getextrema() == (255, 255)
    # two caption lines below the header, each with ink
    for line in (1, 2):
        top = PAD + 64 + PAD // 2 + line * LINE
        strip = picture.crop((PAD, top, PAD + 64, top + LINE)).convert("L")
        assert strip.getextrema()[0] < 100


def test_gallery_does_not_modify_inputs():
    images, texts = batch(8)
    mixed, mixed_texts, info = MixGen(return_info=True)(images, texts)
    copies = images.clone(), list(texts), mixed.clone(), list(mixed_texts)
    gallery(images, texts, mixed, mixed_texts, info)
    assert torch.equal(images, copies[0]) and texts == copies[1]
    assert torch.equal(mixed, copies[2]) and mixed_texts == copies[3]


def test_gallery_multi_caption_lines():
    images, _ = batch(4)
    texts = [[f"first {i}", f"second {i}"] for i in range(4)]
    mixed, mixed_texts, info = MixGen(return_info=True)(images, texts)
    picture = gallery(images, texts, mixed, mixed_texts, info, tile_size=96)
    for line in (1, 2):  # "first 0", then "second 0" on its own line
        top = PAD + 96 + PAD // 2 + line * LINE
        assert picture.crop((PAD, top, PAD + 96, top + LINE)).convert("L").getextrema()[0] < 100
    top = PAD + 96 + PAD // 2 + 3 * LINE
    assert picture.crop((PAD, top, PAD + 96, top + LINE)).convert("L").getextrema() == (255, 255)


def test_bad_gallery_input():
    images, texts = batch(8)
    mixed, mixed_texts, info = MixGen(return_info=True)(images, texts)
    with pytest.raises(TypeError, match="info must be the MixGenInfo"):
        gallery(images, texts, mixed, mixed_texts, {"source": [0]})
    with pytest.raises(ValueError, match="mixed_images has 4 rows but info describes 8"):
        gallery(images, texts, mixed[:4], mixed_texts, info)
    with pytest.raises(ValueError, match="images has 9 rows but info describes 8"):
        gallery(torch.rand(9, 3, 16, 16), texts, mixed, mixed_texts, info)
    with pytest.raises(TypeError, match="texts holds token ids; decode them"):
        gallery(images, torch.zeros(8, 77, dtype=torch.long), mixed, mixed_texts, info)
    with pytest.raises(TypeError, match="mixed_texts holds token ids; decode them"):
        gallery(images, texts, mixed, {"input_ids": torch.zeros(8, 4)}, info)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str or a list of str"):
        gallery(images, ["a", 1, *texts[2:]], mixed, mixed_texts, info)
    with pytest.raises(ValueError, match="max_pairs must be a positive int"):
        gallery(images, texts, mixed, mixed_texts, info, max_pairs=0)
    with pytest.raises(ValueError, match="tile_size must be a positive int"):
        gallery(images, texts, mixed, mixed_texts, info, tile_size=0)
    unmixed, unmixed_texts, none = MixGen(return_info=True, p=0.0)(images, texts)
    with pytest.raises(ValueError, match="info has no pairs"):
        gallery(images, texts, unmixed, unmixed_texts, none)


# ----------------------------------------------------------------------------- caption_grid
def test_caption_grid_layout_and_tiles():
    images, texts = batch(6, height=16, width=24)
    picture = caption_grid(images, texts, ncol=4, tile_size=16)
    assert picture.size == (PAD + 4 * (24 + PAD), 2 * (16 + 5 * LINE + 2 * PAD) + PAD)
    cell_h = 16 + 5 * LINE + 2 * PAD
    crop = picture.crop((PAD + 24 + PAD, PAD + cell_h, 2 * (PAD + 24), PAD + cell_h + 16))
    shown = torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8).view(16, 24, 3)
    assert torch.equal(shown.permute(2, 0, 1), as_uint8(images[5]))


def test_caption_grid_bad_texts():
    images, texts = batch(4)
    with pytest.raises(ValueError, match="texts has 3 captions but images has 4"):
        caption_grid(images, texts[:3])
    with pytest.raises(ValueError, match="ncol must be a positive int"):
        caption_grid(images, texts, ncol=0)


def test_viz_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import mixgen.viz; "
            "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "['matplotlib']"


def test_gallery_script_reproduces_docs_png(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gallery.png"
    subprocess.run([sys.executable, str(root / "benchmarks" / "gallery.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.stat().st_size < 300_000
    with Image.open(out) as fresh, Image.open(root / "docs" / "gallery.png") as committed:
        assert fresh.size == committed.size
        fresh_pixels = torch.frombuffer(bytearray(fresh.convert("RGB").tobytes()),
                                        dtype=torch.uint8)
        committed_pixels = torch.frombuffer(bytearray(committed.convert("RGB").tobytes()),
                                            dtype=torch.uint8)
    # tiles must match; a little slack lets another Pillow render the captions' glyphs
    mean_difference = (fresh_pixels.float() - committed_pixels.float()).abs().mean().item()
    assert mean_difference < 1.0, (
        "docs/gallery.png is stale: run .venv/bin/python benchmarks/gallery.py")
