"""The chunked causal attention with dropout (model/attention.py) and its hand-written backward."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from model.attention import _ChunkedAttentionWithDropout, causal_self_attention
from model.dropout import keep_mask


def _chunked(qkv: torch.Tensor, n_heads: int, p: float, chunk: int) -> torch.Tensor:
    return _ChunkedAttentionWithDropout.apply(qkv, n_heads, p, chunk)


def _sdpa(qkv: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.view(B, T, n_heads, C // n_heads).transpose(1, 2) for t in qkv.split(C, dim=2))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)


def _autograd_reference(qkv: torch.Tensor, n_heads: int, p: float, chunk: int) -> torch.Tensor:
    """The same chunks and the same masks (drawn in the same order), written plainly for autograd:
    the full T x T causal softmax of each chunk's rows, times the mask, @ v, over 1 - p."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_heads
    q, k, v = (t.view(B, T, n_heads, hs).transpose(1, 2) for t in qkv.split(C, dim=2))
    rows = []
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        scores = q[:, :, s:e] @ k[:, :, :e].transpose(-2, -1) * hs**-0.5
        causal = torch.ones(e - s, e, dtype=torch.bool).tril(s)
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        mask = keep_mask((B * n_heads, e - s, e), p).to(qkv.dtype).view(B, n_heads, e - s, e)
        rows.append(weights * mask @ v[:, :, :e] / (1 - p))
    return torch.cat(rows, dim=2).transpose(1, 2).reshape(B, T, C)


@pytest.mark.parametrize("T,chunk", [(100, 64), (64, 64), (33, 8), (1, 64)])
def test_without_dropout_it_equals_sdpa_values_and_gradients(T: int, chunk: int) -> None:
    torch.manual_seed(1)
    qkv = torch.randn(2, T, 3 * 12, requires_grad=True)
    grad = torch.randn(2, T, 12)
    ours = _chunked(qkv, 3, 0.0, chunk)  # p = 0: every element kept
    (ours_grad,) = torch.autograd.grad(ours, qkv, grad)
    ref = _sdpa(qkv, 3)
    (ref_grad,) = torch.autograd.grad(ref, qkv, grad)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


@pytest.mark.parametrize("T,chunk", [(40, 16), (37, 8), (16, 64)])
def test_with_dropout_it_equals_autograd_on_the_same_masks(T: int, chunk: int) -> None:
    torch.manual_seed(2)
    qkv = torch.randn(3, T, 3 * 8, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, T, 8, dtype=torch.float64)
    torch.manual_seed(7)
    ours = _chunked(qkv, 2, 0.3, chunk)
    (ours_grad,) = torch.autograd.grad(ours, qkv, grad)
    torch.manual_seed(7)
    ref = _autograd_reference(qkv, 2, 0.3, chunk)
    (ref_grad,) = torch.autograd.grad(ref, qkv, grad)
    assert (ours == 0).any()  # some weights were dropped
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


def test_its_backward_passes_gradcheck() -> None:
    torch.manual_seed(3)
    qkv = torch.randn(2, 11, 3 * 6, dtype=torch.float64, requires_grad=True)

    def attention_with_fixed_masks(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(11)  # the same masks at every evaluation
        return _chunked(x, 2, 0.25, 4)

    assert torch.autograd.gradcheck(attention_with_fixed_masks, (qkv,))


def test_causal_self_attention_uses_the_chunked_version_only_with_dropout_on_the_cpu() -> None:
    torch.manual_seed(4)
    qkv = torch.randn(2, 10, 3 * 8, requires_grad=True)
    assert causal_self_attention(qkv, 2, 0.0).grad_fn.name() != "_ChunkedAttentionWithDropoutBackward"
    assert causal_self_attention(qkv, 2, 0.2).grad_fn.name() == "_ChunkedAttentionWithDropoutBackward"


def test_it_drops_weights_below_the_diagonal_only() -> None:
    # q = k = 0 gives uniform weights 1/(t+1) over positions 0..t; with v the identity, the
    # output row t *is* that weight row after dropout, so the masks can be read off.
    B, T, p = 16, 40, 0.2
    zeros = torch.zeros(B, T, T)
    qkv = torch.cat([zeros, zeros, torch.eye(T).expand(B, T, T)], dim=2)  # one head of size T
    torch.manual_seed(0)
    y = _chunked(qkv, 1, p, 16)
    weights = y * (1 - p) * torch.arange(1, T + 1).view(T, 1)  # kept: 1, dropped: 0
    below = torch.tril(torch.ones(T, T, dtype=torch.bool))
    assert torch.all(weights[:, ~below] == 0)
    kept = weights[:, below]
    torch.testing.assert_close(kept, kept.round())
    dropped = 1.0 - (kept.round() == 1).float().mean().item()
    sigma = (p * (1 - p) / kept.numel()) ** 0.5
    assert abs(dropped - p) <= 6 * sigma


def test_in_bfloat16_it_stays_in_bfloat16_and_close_to_float32() -> None:
    torch.manual_seed(5)
    qkv = torch.randn(2, 48, 3 * 16)
    torch.manual_seed(9)
    ref = _chunked(qkv, 4, 0.2, 16)
    torch.manual_seed(9)
    low = _chunked(qkv.bfloat16().requires_grad_(), 4, 0.2, 16)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.05, rtol=0.05)
    low.sum().backward()
