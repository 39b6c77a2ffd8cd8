"""Dropout whose random masks cost a fifth of nn.Dropout's on the CPU.

nn.Dropout draws its mask with ``bernoulli_``: one float uniform per element. At the seed's
settings that is the largest single cost of a CPU training step (a quarter to a third of it,
mostly for the T x T attention weights). Here an element is kept when a 32-bit random integer is
at or above ``round(p * 2**32)``: the same Bernoulli(1 - p) per element, with p represented to
within 2**-33 (finer than a float32 uniform resolves it). Random bytes come from ``random_()``
over the full int64 range, which fills 8 bytes per generator call, and only one byte per
element is needed in 255 cases of 256 (see keep_mask): the masks cost about a fifth of
``bernoulli_``'s. They are drawn from torch's default generator, so ``torch.manual_seed`` and
``get_rng_state``/``set_rng_state`` govern them as they govern nn.Dropout.

On other devices (CUDA, MPS) nn.Dropout's own kernels are fast, and Dropout uses them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

_INT64_MIN = -(2**63)


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A CPU bool tensor of `shape`, each element True with probability 1 - p, independently.

    Conceptually each element gets a uniform 32-bit integer u and is dropped when u < P, where
    P = round(p * 2**32). Only u's top byte is drawn for every element (eight per generator
    call); it decides alone unless it equals P's top byte (1 element in 256), and only for those
    ties are u's low 24 bits drawn. The result is exactly the 32-bit rule's distribution.
    """
    n = math.prod(shape)
    threshold = round(p * 2**32)
    top, low = divmod(threshold, 2**24)  # top byte and low 24 bits of the threshold
    words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(_INT64_MIN, None)
    top_bytes = words.view(torch.int8)[:n]  # uniform signed bytes: u's top byte minus 128
    keep = top_bytes >= top - 128
    if low:
        ties = (top_bytes == top - 128).nonzero().squeeze(1)
        if ties.numel():
            low_bits = torch.empty(ties.numel(), dtype=torch.int32).random_(0, 2**24)
            keep[ties] = low_bits >= low
    return keep.view(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout with cheaper masks on the CPU: zero each element with probability p, scale the
    rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    scaled_keep = keep_mask(x.shape, p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scaled_keep


class Dropout(nn.Module):
    """nn.Dropout with the masks of `dropout` above."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
