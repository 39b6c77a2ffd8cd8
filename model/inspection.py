"""What the model computes, for a person to look at: the probability of each next character, the
attention weights of every layer and head, and the loss at each character of a passage.

Computed on a model as it is (a snapshot of a training run's weights, or a checkpoint's), in eval
mode, without gradients, on the CPU-sized inputs a viewer shows (at most block_size characters
at a time). The model's fast paths are untouched: attention weights are worked out here from the
same queries and keys the model's attention multiplies, and tests check that they give the
model's own attention output; the probabilities are those generation samples from
(model/gpt.py's next_token_probs); the per-character losses are the terms the evaluation's mean
cross-entropy averages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .attention import split_heads
from .gpt import GPT, next_token_probs


@contextmanager
def _evaluating(model: GPT) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _window(model: GPT, ids: list[int]) -> torch.Tensor:
    """The last block_size ids as a (1, T) tensor on the model's device."""
    if not ids:
        raise ValueError("inspection needs at least one character")
    device = next(model.parameters()).device
    return torch.tensor([ids[-model.config.block_size:]], dtype=torch.long, device=device)


def next_char_probs(model: GPT, ids: list[int], temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """(T, vocab) float32: at each position of the window (the last block_size ids), the
    probability of each character coming next, as generation would sample it with this
    temperature and top-k. Row t is the distribution for the character after ids[t]."""
    with _evaluating(model):
        logits, _ = model(_window(model, ids))
        return next_token_probs(logits[0], temperature, top_k)


def attention_maps(model: GPT, ids: list[int]) -> torch.Tensor:
    """(n_layers, n_heads, T, T) float32: the attention weights of each layer and head for the
    window (the last block_size ids); row q is where position q looks, zero above the diagonal,
    summing to 1. Computed from the queries and keys each layer's fused projection makes, with
    the scale and causal mask of the model's attention (scaled_dot_product_attention's)."""
    maps = []
    with _evaluating(model):
        idx = _window(model, ids)
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = model.token_embedding(idx) + model.position_embedding(pos)
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        for block in model.blocks:
            q, k, _ = split_heads(block.sa.qkv(block.ln1(x)), block.sa.n_heads)
            scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
            maps.append(F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)[0])
            x = block(x)
    return torch.stack(maps)


def char_losses(model: GPT, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1,) float32: the cross-entropy of each character of a passage given the ones
    before it, the passage taken in consecutive windows of block_size + 1 ids (the first
    character of each window is context only, as in a training batch's row). Their mean over a
    window is the loss the evaluation computes for that row."""
    block = model.config.block_size
    device = next(model.parameters()).device
    losses = []
    with _evaluating(model):
        for start in range(0, max(1, len(ids) - 1), block):
            chunk = ids[start:start + block + 1]
            if len(chunk) < 2:
                break
            x = torch.tensor([chunk[:-1]], dtype=torch.long, device=device)
            y = torch.tensor(chunk[1:], dtype=torch.long, device=device)
            logits, _ = model(x)
            losses.append(F.cross_entropy(logits[0].float(), y, reduction="none"))
    return torch.cat(losses) if losses else torch.zeros(0)


# ---- where a char model struggles: the loss by the kind of character ----------------------------
CLASSES = ("word start", "inside a word", "space", "punctuation", "newline", "other")


def char_class(char: str, before: str) -> str:
    """What kind of character `char` is, after `before` (the one before it; "" at the start)."""
    if char == "\n":
        return "newline"
    if char.isspace():
        return "space"
    if char.isalnum():
        return "inside a word" if before.isalnum() or (before and before in "'-") else "word start"
    if char in ".,;:!?'\"-()[]{}":
        return "punctuation"
    return "other"


@dataclass(frozen=True)
class ClassLoss:
    name: str
    count: int
    mean: float


def loss_by_class(text: str, losses: list[float]) -> list[ClassLoss]:
    """The mean loss of each kind of character: losses[i] is the loss of text[i + 1]."""
    totals: dict[str, list[float]] = {name: [] for name in CLASSES}
    for i, loss in enumerate(losses):
        totals[char_class(text[i + 1], text[i])].append(loss)
    return [ClassLoss(name, len(v), sum(v) / len(v)) for name, v in totals.items() if v]
