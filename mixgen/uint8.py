"""Exact ``uint8`` blends: round half up, with no float copy of the batch.

``floor(lam * a + (1 - lam) * b + 0.5)`` is computed in float32 a few rows at a time; at
``lam = 0.5`` (the paper's default) it is ``ceil((a + b) / 2)``, computed in integer
arithmetic, and for large contiguous CPU tensors in one fused pass over 64-bit words
that ``torch.compile`` builds on first use (:data:`FUSED_MIDPOINT`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

FUSED_MIN_BYTES = 1 << 20
"""CPU tensors from this size on take the fused kernel; smaller ones run eagerly."""
CHUNK_ROWS = 16
_BYTE_LOW_BITS = 0x7F7F7F7F7F7F7F7F


def word_midpoint(out: Tensor, a: Tensor, b: Tensor) -> None:
    """Bytewise ``(a | b) - ((a ^ b) >> 1)`` on ``int64`` words; the mask clears the bit
    each byte receives from its neighbour in the shift, so no byte borrows from another."""
    out.copy_((a | b) - ((a ^ b) >> 1 & _BYTE_LOW_BITS))


class CompiledMidpoint:
    """:func:`word_midpoint` compiled by ``torch.compile`` on first use (a few seconds,
    once per process; DataLoader workers forked after the first use inherit it;
    ``TORCH_COMPILE_DISABLE=1`` runs the word formula eagerly).

    From its first failure on (no C++ compiler, a worker that may not start one, ...)
    it reports False and callers stay eager. ``kernel`` is the compiled function (None
    until built, or after a failure); :meth:`reset` forgets it (tests swap kernels).
    """

    def __init__(self) -> None:
        self.kernel: Callable[[Tensor, Tensor, Tensor], None] | None = None
        self.failed = False

    def reset(self) -> None:
        """Build the kernel again on next use."""
        self.kernel, self.failed = None, False

    def __call__(self, out: Tensor, a: Tensor, b: Tensor) -> bool:
        if self.failed:
            return False
        if self.kernel is None:
            # not fullgraph: where dynamo is disabled the function then simply runs eagerly
            self.kernel = torch.compile(word_midpoint, dynamic=True)
        try:
            self.kernel(out, a, b)
        except Exception:  # whatever the compiler's failure, the eager formula gives the same bytes
            self.kernel, self.failed = None, True
            return False
        return True


FUSED_MIDPOINT = CompiledMidpoint()


def midpoint(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``ceil((a + b) / 2)`` of ``uint8`` tensors, exactly and without overflow, into ``out``.

    It is ``(a | b) - ((a ^ b) >> 1)``. Stock ``uint8`` kernels make four passes over
    memory for it; a contiguous CPU tensor of :data:`FUSED_MIN_BYTES` or more takes one
    fused pass over 64-bit words instead (eight pixels at a time).
    """
    if out.device.type == "cpu" and a.numel() >= FUSED_MIN_BYTES:
        words = word_views(out, a, b)
        if words is not None and FUSED_MIDPOINT(*words):
            return out
    half_diff = torch.bitwise_xor(a, b).bitwise_right_shift_(1)
    torch.bitwise_or(a, b, out=out)
    return out.sub_(half_diff)


def word_views(out: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """Flat ``int64`` views of ``(out, a, b)`` for the fused kernel, or None.

    An ``out`` that is ``a`` (or ``b``) comes back as that input's very view object: the
    compiler handles an argument passed twice, not two views of the same memory. None
    when a tensor is not contiguous, not whole words, or ``out`` partly overlaps an input.
    """
    if not all(t.is_contiguous() and t.numel() % 8 == 0 and t.storage_offset() % 8 == 0
               for t in (out, a, b)):
        return None
    a_words, b_words = (t.view(-1).view(torch.int64) for t in (a, b))
    if out.data_ptr() == a.data_ptr():
        return a_words, a_words, b_words
    if out.data_ptr() == b.data_ptr():  # the formula is symmetric in a and b
        return b_words, b_words, a_words
    start, stop = out.data_ptr(), out.data_ptr() + out.numel()
    if any(t.data_ptr() < stop and start < t.data_ptr() + t.numel() for t in (a, b)):
        return None
    return out.view(-1).view(torch.int64), a_words, b_words


def weighted(a: Tensor, b: Tensor, weight: Tensor, out: Tensor) -> Tensor:
    """``floor(w * a + (1 - w) * b + 0.5)`` into ``out``; ``weight`` is 0-d or holds one
    weight per row, broadcastable to ``a``. Computed in float32, :data:`CHUNK_ROWS` rows
    at a time, so no float copy of the batch is made."""
    per_row = weight.ndim > 0
    for start in range(0, a.shape[0] if per_row else 1, CHUNK_ROWS if per_row else 1):
        part = slice(start, start + CHUNK_ROWS) if per_row else slice(None)
        w = weight[part].float()
        mixed = a[part].float() * w + b[part].float() * (1 - w) + 0.5
        out[part].copy_(mixed.floor_())
    return out
