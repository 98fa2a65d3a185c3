import torch


def captions(n: int) -> list[str]:
    return [f"caption {i}" for i in range(n)]


def image_batch(n: int, *, dtype=torch.float32, shape=(3, 4, 5), seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    return torch.rand((n, *shape), generator=gen).to(dtype)
