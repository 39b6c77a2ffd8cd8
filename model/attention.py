"""Causal self-attention of all heads at once, given their queries, keys and values side by side.

`causal_self_attention(qkv, n_heads, dropout_p)` is softmax(q k^T / sqrt(hs), causally masked),
dropout on those weights, then @ v, for every head; qkv is the (B, T, 3C) output of
MultiHeadAttention's one projection (queries, then keys, then values, head after head), and
the result is (B, T, C) with the heads side by side, ready for the output projection.

Without dropout, or off the CPU, this is PyTorch's fused scaled_dot_product_attention. On the
CPU that fused kernel refuses dropout and falls back to building every T x T weight and drawing
each mask with bernoulli_. `_ChunkedAttentionWithDropout` does the same arithmetic for a third
of the work; it is a hand-written autograd Function so that its backward pass can be written
for this case too (see there).
"""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from .dropout import keep_mask

# Query rows per chunk. Measured at the seed's settings (T = 256) on a 2-core CPU, per layer
# forward + backward: 64 rows 68 ms, 128 rows 74 ms, 32 rows 72 ms, one chunk of all 256 rows
# 103 ms; scaled_dot_product_attention with dropout 185 ms. (Measured with the autograd version
# of the chunked attention; the hand-written backward keeps the same chunks.)
ATTENTION_CHUNK = 64
# Each chunk's rows are taken for a few batch rows at a time, so that one block's weights
# (rows x keys x (batch x heads) floats) stay near this size: at the seed's settings half the
# batch, which measured 1-5% faster per training step than the whole batch at once.
BLOCK_BYTES = 8 << 20


def causal_self_attention(qkv: torch.Tensor, n_heads: int, dropout_p: float) -> torch.Tensor:
    """(B, T, 3C) queries, keys and values of n_heads heads in, (B, T, C) attention output out."""
    if dropout_p > 0.0 and qkv.device.type == "cpu":
        return _ChunkedAttentionWithDropout.apply(qkv, n_heads, dropout_p, ATTENTION_CHUNK)
    q, k, v = split_heads(qkv, n_heads)
    return merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True))


def split_heads(qkv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, 3C) -> queries, keys and values, each (B, nh, T, hs) (views, no copy)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.view(B, T, n_heads, C // n_heads).transpose(1, 2) for t in qkv.split(C, dim=2))
    return q, k, v


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C), the heads side by side."""
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


class _ChunkedAttentionWithDropout(torch.autograd.Function):
    """Causal attention with dropout, on the CPU, the queries taken `chunk` rows at a time.

    Forward. The queries of rows [s, e) can only see keys [0, e), so each chunk multiplies
    against those keys alone: the weights above the diagonal blocks, which the causal mask would
    zero anyway, are never computed, softmaxed or given a dropout mask (10/16 of the full T x T
    work at T = 256, chunk 64). For each chunk, with W = softmax(scores) and M the 0/1 keep mask
    (model/dropout.py), the output rows are (W * M) @ v / (1 - p): the scale is applied to the
    (B, T, C) output rather than to the larger weights, the same product.

    Backward, with D = W * M (saved, as is W) and G the gradient of the chunk's output rows
    (already times 1 / (1 - p)):
        dv = D^T G                              (summed over the chunks that see each key)
        dW = (G v^T) * M
        dS = W * (dW - rowsum(dW * W))          (softmax's backward)
           = (G v^T) * D - W * rowsum((G v^T) * D)        since W * M = D
           = (G v^T) * D - W * rowsum(G * (D v))          (D v: the chunk's output rows)
        dq = dS k / sqrt(hs),  dk = dS^T q / sqrt(hs)
    so the mask itself is never stored (M is in D), and the row sums come from the (B, T, C)
    output rather than from the (rows x keys) products, as flash attention does.

    Written out by hand, every (rows x keys) tensor is made once and then changed in place, and
    every product lands in a contiguous tensor; autograd's version of the same code built a
    zeroed full-size gradient for every key and value slice and added them up, and saved the
    mask as a third (rows x keys) tensor. The rows of a chunk are taken for part of the batch at
    a time (see BLOCK_BYTES). Forward + backward of one layer's attention at the seed's
    settings: 68 ms, against 97 ms for the autograd version with bool masks it replaced.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, qkv: torch.Tensor, n_heads: int, p: float, chunk: int) -> torch.Tensor:  # type: ignore[override]
        # Under autocast this computes in autocast's dtype, as a matmul would; either way the
        # dtypes are this code's own (autocast off inside), and backward's too (custom_bwd).
        if torch.is_autocast_enabled("cpu"):
            qkv = qkv.to(torch.get_autocast_dtype("cpu"))
        with torch.autocast("cpu", enabled=False):
            return _ChunkedAttentionWithDropout._forward(ctx, qkv, n_heads, p, chunk)

    @staticmethod
    def _forward(ctx, qkv: torch.Tensor, n_heads: int, p: float, chunk: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
        B, T, C3 = qkv.shape
        C = C3 // 3
        nh, hs = n_heads, C // n_heads
        # Queries, keys and values head-major, each head's rows contiguous: (3, B, nh, T, hs).
        heads = qkv.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = (t.view(B * nh, T, hs) for t in heads.unbind(0))
        bias = _causal_bias(T, qkv.device, qkv.dtype)  # 0 on and below the diagonal, -inf above
        out = torch.empty(B, T, C, dtype=qkv.dtype, device=qkv.device)
        out_heads = out.view(B, T, nh, hs)
        saved = []
        blocks = _blocks(B, nh, T, chunk)
        for s, e, b0, b1 in blocks:
            g0, g1 = b0 * nh, b1 * nh  # rows of q, k, v: (batch, head) pairs b0..b1-1
            scores = torch.baddbmm(bias[s:e, :e], q[g0:g1, s:e], k[g0:g1, :e].mT, alpha=hs**-0.5)
            weights = torch.softmax(scores, dim=-1)  # (pairs, e - s, e)
            dropped = keep_mask(scores.shape, p, out=scores).mul_(weights)  # reuses scores' memory
            y = torch.bmm(dropped, v[g0:g1, :e])  # (pairs, e - s, hs)
            y = y.view(b1 - b0, nh, e - s, hs).transpose(1, 2)
            torch.mul(y, 1.0 / (1.0 - p), out=out_heads[b0:b1, s:e])
            saved += [weights, dropped]
        ctx.save_for_backward(heads, out, *saved)
        ctx.p, ctx.blocks = p, blocks
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        with torch.autocast("cpu", enabled=False):
            return _ChunkedAttentionWithDropout._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[no-untyped-def]
        heads, out, *saved = ctx.saved_tensors
        p = ctx.p
        _, B, nh, T, hs = heads.shape
        q, k, v = (t.view(B * nh, T, hs) for t in heads.unbind(0))
        alpha = hs**-0.5
        # In bfloat16 (or float16) the score gradients are computed in float32, as flash
        # attention does: their two terms nearly cancel where a row's weights are spread over
        # similar values, and bfloat16's 8 bits would leave mostly rounding. They go back to the
        # input's dtype for the products with q and k.
        acc = torch.float32 if heads.dtype in (torch.bfloat16, torch.float16) else heads.dtype
        grad_out = grad_out.to(heads.dtype)
        dy = torch.empty_like(q)  # (B * nh, T, hs), times 1 / (1 - p)
        torch.mul(grad_out.view(B, T, nh, hs).transpose(1, 2), 1.0 / (1.0 - p), out=dy.view(B, nh, T, hs))
        v_acc = v.to(acc)
        # rowsum((G v^T) * D) = rowsum(G * (D v)): per row, the dot product of the output's
        # gradient and the output itself (the 1 / (1 - p) of each cancels), (B * nh, T, 1).
        row_dots = (grad_out.to(acc) * out.to(acc)).view(B, T, nh, hs).sum(-1).transpose(1, 2).reshape(B * nh, T, 1)
        dqkv = torch.empty(B, T, 3, nh, hs, dtype=heads.dtype, device=heads.device)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        # Last chunk first: it sees every key, so it writes dk and dv of its batch rows whole,
        # and the earlier chunks add to the keys they see.
        for i, (s, e, b0, b1) in reversed(list(enumerate(ctx.blocks))):
            g0, g1 = b0 * nh, b1 * nh
            weights, dropped = saved[2 * i], saved[2 * i + 1]
            g = dy[g0:g1, s:e]
            d_scores = torch.bmm(g.to(acc), v_acc[g0:g1, :e].mT).mul_(dropped)  # (G v^T) * D
            d_scores.addcmul_(weights, row_dots[g0:g1, s:e], value=-1.0)
            d_scores = d_scores.to(heads.dtype)
            dq = torch.bmm(d_scores, k[g0:g1, :e]).view(b1 - b0, nh, e - s, hs).transpose(1, 2)
            torch.mul(dq, alpha, out=dqkv[b0:b1, s:e, 0])
            if e == T:
                torch.bmm(dropped.mT, g, out=dv[g0:g1])
                torch.bmm(d_scores.mT, q[g0:g1, s:e], out=dk[g0:g1])
            else:
                dv[g0:g1, :e] += torch.bmm(dropped.mT, g)
                dk[g0:g1, :e] += torch.bmm(d_scores.mT, q[g0:g1, s:e])
        torch.mul(dk.view(B, nh, T, hs).transpose(1, 2), alpha, out=dqkv[:, :, 1])
        dqkv[:, :, 2] = dv.view(B, nh, T, hs).transpose(1, 2)
        return dqkv.view(B, T, 3 * nh * hs), None, None, None


def _blocks(B: int, nh: int, T: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """(s, e, b0, b1): query rows [s, e) of batch rows [b0, b1), all heads, in the order the
    forward pass computes them."""
    batches = max(1, BLOCK_BYTES // (nh * chunk * T * 4))
    return [
        (s, min(T, s + chunk), b0, min(B, b0 + batches))
        for s in range(0, T, chunk)
        for b0 in range(0, B, batches)
    ]


@functools.lru_cache(maxsize=8)
def _causal_bias(T: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu_(1)
