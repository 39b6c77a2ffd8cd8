"""The character-level GPT of the seed: token + position embeddings, pre-LayerNorm blocks of
causal multi-head self-attention and a ReLU feed-forward network, a final LayerNorm and a
linear head. Names follow the seed (Head, FeedForward, Block), and where they say more here
the seed's names are the same classes: MultHead is MultiHeadAttention, LM is GPT (both
importable from `model` under either name).

What differs from the seed's straightforward code changes nothing that is computed beyond
float rounding:
- MultiHeadAttention computes every head at once (one matmul for the queries, keys and values
  of all heads, then causal_self_attention). Head stays as the readable one-head reference; a
  test shows that the two agree for the same weights.
- On the CPU, dropout draws its masks the cheaper way of model/dropout.py, attention with
  dropout skips the weights above the diagonal (model/attention.py), and Linear layers in
  float32 multiply with oneDNN (model/linear.py).
- Generation keeps a cache of keys and values, so each new character costs one position
  instead of the whole context. Past block_size the context window jumps forward by a quarter
  of a block at a time instead of sliding by one character (see generate_stream): this one
  does change what the model sees, and is what makes the cache useful for long texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from .attention import causal_self_attention, merge_heads, split_heads
from .config import TEMPERATURE_RULE, GPTConfig, temperature_ok
from .dropout import Dropout
from .linear import Linear


class Head(nn.Module):
    """One head of causal self-attention, exactly as the seed writes it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        head_size = config.head_size
        self.key = nn.Linear(config.n_embed, head_size, bias=False)
        self.query = nn.Linear(config.n_embed, head_size, bias=False)
        self.value = nn.Linear(config.n_embed, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, T, _ = x.shape
        k, q, v = self.key(x), self.query(x), self.value(x)  # (B, T, hs)
        scores = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T)
        scores = scores.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        weights = self.dropout(F.softmax(scores, dim=-1))
        return weights @ v  # (B, T, hs)


class KVCache:
    """Keys and values of every layer for the positions generated so far (batch-first)."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (config.n_layers, batch_size, config.n_heads, config.block_size, config.head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled, the same in every layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class MultiHeadAttention(nn.Module):
    """All heads of causal self-attention side by side, then a linear projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_size = config.head_size
        # Queries, keys and values of every head in one Linear: rows [0, C) are the queries of
        # heads 0..nh-1 in order, [C, 2C) the keys, [2C, 3C) the values (see load_heads).
        self.qkv = Linear(config.n_embed, 3 * config.n_embed, bias=False)
        self.proj = Linear(config.n_embed, config.n_embed)
        self.attn_dropout = config.dropout
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, T, 3C)
        if cache is None:
            y = causal_self_attention(qkv, self.n_heads, self.attn_dropout if self.training else 0.0)
        else:
            y = self._attend_with_cache(qkv, cache, layer)
        return self.dropout(self.proj(y))

    def _attend_with_cache(self, qkv: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """Attention for positions after those in the cache (generation: no dropout)."""
        q, k, v = split_heads(qkv, self.n_heads)
        # Filling an empty cache is causal; decoding one new position may look at every cached one.
        causal = cache.length == 0
        if not causal and qkv.shape[1] != 1:
            raise ValueError("a filled KV cache takes one position at a time")
        k, v = cache.update(layer, k, v)
        return merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=causal))

    @torch.no_grad()
    def load_heads(self, heads: Sequence[Head]) -> None:
        """Copy the weights of separate Heads into the fused projection (for tests and for
        reading checkpoints written with one module per head)."""
        if len(heads) != self.n_heads:
            raise ValueError(f"expected {self.n_heads} heads, got {len(heads)}")
        hs = self.head_size
        C = self.n_heads * hs
        for h, head in enumerate(heads):
            for part, linear in enumerate((head.query, head.key, head.value)):
                start = part * C + h * hs
                self.qkv.weight[start : start + hs].copy_(linear.weight)


class FeedForward(nn.Module):
    """Linear to 4x the width, ReLU, Linear back, Dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            Linear(config.n_embed, 4 * config.n_embed),
            nn.ReLU(),
            Linear(4 * config.n_embed, config.n_embed),
            Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: communication (attention), then computation (MLP)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.sa = MultiHeadAttention(config)
        self.ffwd = FeedForward(config)
        self.ln1 = nn.LayerNorm(config.n_embed)
        self.ln2 = nn.LayerNorm(config.n_embed)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.sa(self.ln1(x), cache, layer)
        return x + self.ffwd(self.ln2(x))


class _BlockWeights(NamedTuple):
    """One Block's weights, as _decode uses them."""

    ln1_weight: torch.Tensor
    ln1_bias: torch.Tensor
    qkv_weight: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    ln2_weight: torch.Tensor
    ln2_bias: torch.Tensor
    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor
    eps: float  # both LayerNorms' (Block builds them alike)


class GPT(nn.Module):
    """The language model: forward(idx, targets) -> (logits, loss)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embed)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embed)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.n_embed)
        self.lm_head = Linear(config.n_embed, config.vocab_size)
        # Small normal weights, as in the lecture's gpt.py: the first loss is then close to
        # ln(vocab_size), i.e. the model starts out guessing uniformly.
        self.apply(_init_weights)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters in all; with non_embedding, without the token and position embeddings
        (looked up, not multiplied: what FLOPs counts leave out, as PaLM's does. nanoGPT leaves
        out only the position table, its token table being the output layer's weights too;
        here the output layer has weights of its own, which are counted)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.token_embedding.weight.numel() + self.position_embedding.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self._logits(idx)  # (B, T, vocab)
        if targets is None:
            return logits, None
        B, T, V = logits.shape
        return logits, F.cross_entropy(logits.view(B * T, V), targets.reshape(B * T))

    def _logits(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        _, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"context of {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(pos)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(self.ln_f(x))

    def _decode(self, ids: torch.Tensor, cache: KVCache, layers: list[_BlockWeights]) -> torch.Tensor:
        """Logits (B, vocab) for one new id per row (B,), after the positions in the cache.

        The same computation as ``_logits(ids[:, None], cache)[:, -1]``, written with functional
        calls on the weights in `layers` (from _decode_weights). A new character is a hundred or
        so tiny operations, and going through every module's ``__call__`` (and the general
        attention path) cost a third of generation time; looking the weights up on the modules
        for every character cost a fifth of what remained. The cached-versus-uncached
        generation tests hold this to the plain forward pass.
        """
        B = ids.shape[0]
        C, nh, hs = self.config.n_embed, self.config.n_heads, self.config.head_size
        pos = cache.length
        if pos >= self.config.block_size:
            raise ValueError(f"context of {pos + 1} exceeds block_size {self.config.block_size}")
        x = self.token_embedding.weight[ids] + self.position_embedding.weight[pos]  # (B, C)
        for layer, w in enumerate(layers):
            h = F.layer_norm(x, (C,), w.ln1_weight, w.ln1_bias, w.eps)
            q, k, v = F.linear(h, w.qkv_weight).view(B, 3, nh, 1, hs).unbind(1)  # (B, nh, 1, hs) each
            keys, values = cache.update(layer, k, v)
            y = F.scaled_dot_product_attention(q, keys, values)  # (B, nh, 1, hs)
            x = x + F.linear(y.view(B, C), w.proj_weight, w.proj_bias)
            h = F.layer_norm(x, (C,), w.ln2_weight, w.ln2_bias, w.eps)
            x = x + F.linear(F.relu(F.linear(h, w.fc1_weight, w.fc1_bias)), w.fc2_weight, w.fc2_bias)
        cache.length += 1
        x = F.layer_norm(x, (C,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return F.linear(x, self.lm_head.weight, self.lm_head.bias)

    def _decode_weights(self) -> list[_BlockWeights]:
        """Each block's weights for _decode, looked up once per generation."""
        layers = []
        for block in self.blocks:
            attn, (fc1, _relu, fc2, _dropout) = block.sa, block.ffwd.net
            layers.append(
                _BlockWeights(
                    block.ln1.weight, block.ln1.bias, attn.qkv.weight, attn.proj.weight, attn.proj.bias,
                    block.ln2.weight, block.ln2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias, block.ln1.eps,
                )
            )
        return layers

    @contextmanager
    def _in_eval_mode(self) -> Iterator[None]:
        """Eval mode for the block, then every module's own mode again (free when already eval)."""
        if not self.training:
            yield
            return
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

    @property
    def context_after_shift(self) -> int:
        """Ids the generation window keeps when the context outgrows block_size (3/4 of it)."""
        return self.config.block_size - self.config.block_size // 4

    @torch.inference_mode()
    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        distributions: list[torch.Tensor] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the next ids, (B,) at a time, for a context idx (B, T) of at least one id.
        distributions: if given, each step's distribution the id was sampled from (next_token_probs,
        (B, vocab) float32 on the CPU) is appended to it before the id is yielded.

        The window the model sees: the seed crops the context to its last block_size ids before
        every new character, so once the text is longer than the block, every position shifts
        at every step and nothing computed for the previous character can be reused. Here the
        window grows with the text until it holds block_size ids, then jumps forward to keep
        the last context_after_shift ids (3/4 of a block) and grows again. While the text fits
        in the block this is exactly the seed's window; past it the model sees 3/4 to all of
        a block of context, not always all of it. Keys and values are cached and stay valid
        until the next jump, when the kept ids are run through once. use_cache=False computes
        every step's window from scratch instead: the same characters (a test checks this).

        Generation never depends on the caller's mode: each step is computed in eval mode (no
        dropout), and the model is back in the caller's mode between steps.
        """
        if idx.shape[1] < 1:
            raise ValueError("generation needs a context of at least one id")
        block_size = self.config.block_size
        start = max(0, idx.shape[1] - block_size)  # where the window begins in idx
        cache = None
        if use_cache:
            params = next(self.parameters())
            cache = KVCache(self.config, idx.shape[0], params.device, params.dtype)
            layers = self._decode_weights()
        for _ in range(max_new_tokens):
            if idx.shape[1] - start > block_size:
                start = idx.shape[1] - self.context_after_shift
                if cache is not None:
                    cache.length = 0  # every position moved: refill from the kept ids
            with self._in_eval_mode():
                if cache is None or cache.length == 0:  # the whole window (filling the cache, if any)
                    logits = self._logits(idx[:, start:], cache, last_only=True)[:, -1, :]
                else:
                    logits = self._decode(idx[:, -1], cache, layers)
            if distributions is None:
                next_id = sample_next(logits, temperature, top_k, generator)  # (B, 1)
            else:  # the same draw as sample_next's, its distribution kept
                probs = next_token_probs(logits, temperature, top_k)
                distributions.append(probs.cpu())
                next_id = (logits.argmax(dim=-1, keepdim=True) if temperature == 0
                           else torch.multinomial(probs, num_samples=1, generator=generator))
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id[:, 0]

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Context (B, T) in, context plus max_new_tokens sampled ids (B, T + n) out."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, generator, use_cache))
        if not new:
            return idx
        return torch.cat((idx, torch.stack(new, dim=1)), dim=1)


# The seed's names for the same classes (a reader following gpt-from-scratch.md finds them here).
MultHead = MultiHeadAttention
LM = GPT


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample one id per row from logits (B, vocab); temperature 0 picks the most likely id.
    ValueError for a temperature outside config.TEMPERATURE_RULE."""
    if not temperature_ok(temperature):
        raise ValueError(f"temperature must be {TEMPERATURE_RULE}, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(next_token_probs(logits, temperature, top_k), num_samples=1, generator=generator)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """What sample_next samples from: softmax(logits / temperature) over the top_k largest logits
    (the rest 0), in float32, for logits (..., vocab). Temperature 0: all of it on the argmax."""
    if not temperature_ok(temperature):
        raise ValueError(f"temperature must be {TEMPERATURE_RULE}, got {temperature}")
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return F.softmax(logits, dim=-1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
