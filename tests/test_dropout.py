"""The CPU dropout masks and the chunked causal attention that uses them."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from model.dropout import Dropout, dropout, keep_mask
from model.gpt import _chunked_causal_attention


def _assert_drop_rate(mask: torch.Tensor, p: float) -> None:
    n = mask.numel()
    dropped = 1.0 - mask.float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(dropped - p) <= 6 * sigma + 1e-12, (dropped, p)


@pytest.mark.parametrize("p", [0.0, 0.001, 0.1, 0.2, 0.5, 0.9])
def test_keep_mask_drops_at_the_requested_rate(p: float) -> None:
    torch.manual_seed(0)
    _assert_drop_rate(keep_mask((2000, 1000), p), p)


def test_keep_mask_resolves_ties_of_the_top_byte() -> None:
    # p = 51.5 / 256: the top byte alone would drop 51/256 (0.19922); the ties (top byte == 51)
    # must drop half of their elements more, for 0.20117. 4M elements tell them apart by >10 sigma.
    torch.manual_seed(0)
    _assert_drop_rate(keep_mask((4000, 1000), 51.5 / 256), 51.5 / 256)


def test_keep_mask_follows_the_default_generator() -> None:
    torch.manual_seed(3)
    a = keep_mask((64, 100), 0.2)
    torch.manual_seed(3)
    b = keep_mask((64, 100), 0.2)
    c = keep_mask((64, 100), 0.2)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_dropout_scales_what_it_keeps_and_has_gradients() -> None:
    torch.manual_seed(0)
    x = torch.ones(500, 400, requires_grad=True)
    y = dropout(x, 0.25)
    assert torch.equal(y.unique(), torch.tensor([0.0, 1 / 0.75]))
    _assert_drop_rate(y != 0, 0.25)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * scaled_keep)/dx = scaled_keep
    module = Dropout(0.25).eval()
    assert module(x) is x


def _qkv(B: int, nh: int, T: int, hs: int) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(B, nh, T, hs, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("T,chunk", [(100, 64), (64, 64), (33, 8), (1, 64)])
def test_chunked_attention_without_dropout_equals_sdpa(T: int, chunk: int) -> None:
    q, k, v = _qkv(2, 3, T, 8)
    grad = torch.randn(2, 3, T, 8)
    ours = _chunked_causal_attention(q, k, v, 0.0, chunk)
    ours.backward(grad)
    ours_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref.backward(grad)
    torch.testing.assert_close(ours, ref)
    for a, t in zip(ours_grads, (q, k, v)):
        torch.testing.assert_close(a, t.grad)


def test_chunked_attention_drops_weights_below_the_diagonal_only() -> None:
    # q = k = 0 gives uniform weights 1/(t+1) over positions 0..t; with v the identity, the
    # output row t *is* that weight row after dropout, so the masks can be read off.
    B, nh, T, p = 16, 4, 40, 0.2
    q = torch.zeros(B, nh, T, T)
    v = torch.eye(T).expand(B, nh, T, T)
    torch.manual_seed(0)
    y = _chunked_causal_attention(q, q, v, p, chunk=16)
    weights = y * (1 - p) * torch.arange(1, T + 1).view(T, 1)  # kept: 1, dropped: 0
    below = torch.tril(torch.ones(T, T, dtype=torch.bool))
    assert torch.all(weights[..., ~below] == 0)
    kept = weights[..., below]
    torch.testing.assert_close(kept, kept.round())
    _assert_drop_rate(kept.round() == 1, p)
