"""What MixGen does to one batch: a short demo until the retrieval harness lands."""

import torch

from mixgen import MixGen

images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 2, 2)
texts = [f"caption {i}" for i in range(8)]
mixed_images, mixed_texts, info = MixGen(return_info=True)(images, texts)
for row in range(8):
    print(f"row {row}: pixel {mixed_images[row, 0, 0, 0].item():4.1f}  text {mixed_texts[row]!r}")
print(f"pairs {info.source.tolist()} <- {info.partner.tolist()}, lam {info.lam.tolist()}")
