"""Dropout whose random masks cost a tenth of nn.Dropout's on the CPU.

nn.Dropout draws its mask with ``bernoulli_``: one float uniform per element. At the seed's
settings that is the largest single cost of a CPU training step (a quarter to a third of it,
mostly for the T x T attention weights). keep_mask draws the same Bernoulli(1 - p) per element
from one random byte per element (``random_()`` over the full int64 range fills eight bytes per
generator call) and a sparse correction for the part of p a byte cannot express (see there).
Everything is drawn from torch's default generator, so ``torch.manual_seed`` and
``get_rng_state``/``set_rng_state`` govern the masks as they govern nn.Dropout.

On other devices (CUDA, MPS) nn.Dropout's own kernels are fast, and Dropout uses them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

_INT64_MIN = -(2**63)


def keep_mask(
    shape: tuple[int, ...] | torch.Size, p: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """1 where an element is kept (probability 1 - p, independently), 0 where it is dropped.

    A CPU float32 tensor of `shape`, or written into `out` (a contiguous CPU tensor of that
    shape, any floating dtype) and returned. Drawn in two independent parts, which together drop
    an element with probability exactly p (to float64 precision):
    - a random byte per element (eight per generator call), dropped when below floor(256 p):
      probability a = floor(256 p) / 256, just under p;
    - then a sparse set of further elements, each with probability r = (p - a) / (1 - a)
      (below 1/256; 1 in 1025 elements at p = 0.2), placed by geometric gaps between them. An
      element survives both with probability (1 - a)(1 - r) = 1 - p.
    """
    n = math.prod(shape)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    flat = out.view(-1)
    top = math.floor(p * 256)
    if top == 0:
        flat.fill_(1.0)
    else:
        words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(_INT64_MIN, None)
        torch.ge(words.view(torch.uint8)[:n], top, out=flat)
    rest = (p - top / 256) / (1 - top / 256)
    if rest > 0.0:
        flat[_bernoulli_positions(n, rest)] = 0.0
    return out


def _bernoulli_positions(n: int, r: float, draws: int | None = None) -> torch.Tensor:
    """The indices in [0, n) of a Bernoulli(r) process: each index independently with
    probability r. For small r this is far cheaper than a draw per index: the gaps between
    successive chosen indices are geometric, floor(log(U) / log(1 - r)) + 1 for uniform U."""
    expected = n * r
    chunks, end = [], 0
    log_miss = math.log1p(-r)
    while end < n:
        count = draws or int(expected + 6 * math.sqrt(expected)) + 16  # enough, nearly always
        uniform = 1.0 - torch.rand(count, dtype=torch.float64)  # (0, 1]: log is finite
        gaps = torch.floor(torch.log(uniform) / log_miss).to(torch.int64) + 1
        positions = torch.cumsum(gaps, 0) + (end - 1)
        chunks.append(positions)
        end = int(positions[-1]) + 1
    positions = torch.cat(chunks)
    return positions[positions < n]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout with cheaper masks on the CPU: zero each element with probability p, scale the
    rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    scaled_keep = keep_mask(x.shape, p, out=torch.empty_like(x, memory_format=torch.contiguous_format))
    return x * scaled_keep.mul_(1.0 / (1.0 - p))


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
