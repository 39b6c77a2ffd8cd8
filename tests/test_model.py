from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.config import GPTConfig
from model.gpt import GPT, Head, MultiHeadAttention, sample_next

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_embed=16, n_layers=2, n_heads=4, dropout=0.0)


def test_shapes() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    idx = torch.randint(11, (3, 8))
    logits, loss = model(idx)
    assert logits.shape == (3, 8, 11) and loss is None
    logits, loss = model(idx[:, :5], idx[:, 1:6])
    assert logits.shape == (3, 5, 11) and loss.shape == ()
    with pytest.raises(ValueError):
        model(torch.zeros((1, 9), dtype=torch.long))


def test_initial_loss_is_close_to_uniform_guessing() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=65, block_size=32, n_embed=64, n_layers=2, n_heads=4, dropout=0.0)
    model = GPT(config)
    idx = torch.randint(65, (8, 32))
    _, loss = model(idx, torch.randint(65, (8, 32)))
    assert abs(loss.item() - math.log(65)) < 0.1


def test_a_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG)
    x = torch.randint(11, (4, 8))
    y = torch.randint(11, (4, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("T", [1, 5, 8])
def test_multi_head_attention_equals_stacked_heads(T: int) -> None:
    torch.manual_seed(0)
    heads = nn.ModuleList(Head(CONFIG) for _ in range(CONFIG.n_heads))
    proj = nn.Linear(CONFIG.n_embed, CONFIG.n_embed)
    mha = MultiHeadAttention(CONFIG)
    mha.load_heads(list(heads))
    mha.proj.load_state_dict(proj.state_dict())
    heads.eval()
    mha.eval()
    x = torch.randn(2, T, CONFIG.n_embed)
    expected = proj(torch.cat([h(x) for h in heads], dim=-1))
    torch.testing.assert_close(mha(x), expected, rtol=1e-5, atol=1e-6)


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    idx = torch.randint(11, (1, 8))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_generation_is_reproducible_for_a_seed() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    start = torch.zeros((1, 1), dtype=torch.long)
    a = model.generate(start, 30, generator=torch.Generator().manual_seed(7))
    b = model.generate(start, 30, generator=torch.Generator().manual_seed(7))
    c = model.generate(start, 30, generator=torch.Generator().manual_seed(8))
    assert a.shape == (1, 31)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("prompt_len", [1, 3, 8, 13])
def test_cached_and_uncached_generation_agree_past_the_block_size(prompt_len: int) -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    start = torch.randint(0, CONFIG.vocab_size, (2, prompt_len))
    cached = model.generate(start, 40, generator=torch.Generator().manual_seed(1), use_cache=True)
    uncached = model.generate(start, 40, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(cached, uncached)


def test_the_generation_window_is_the_seeds_crop_then_jumps_by_a_quarter_block() -> None:
    # The documented window, written out with the plain forward pass: the last block_size ids
    # while the text fits (the seed's crop), then a window that restarts at the last 3/4 block
    # each time it would outgrow the block.
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    block, keep = CONFIG.block_size, model.context_after_shift
    assert keep == 6
    idx = torch.tensor([[4, 2]])
    g = torch.Generator().manual_seed(5)
    start = 0
    with torch.no_grad():
        for _ in range(30):
            if idx.shape[1] - start > block:
                start = idx.shape[1] - keep
            logits, _ = model(idx[:, start:])
            idx = torch.cat((idx, sample_next(logits[:, -1, :], 1.0, None, g)), dim=1)
    ours = model.generate(torch.tensor([[4, 2]]), 30, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours, idx)


def test_stream_yields_one_id_at_a_time() -> None:
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    start = torch.zeros((1, 1), dtype=torch.long)
    streamed = [int(t[0]) for t in model.generate_stream(start, 12, generator=torch.Generator().manual_seed(2))]
    whole = model.generate(start, 12, generator=torch.Generator().manual_seed(2))
    assert streamed == whole[0, 1:].tolist()


def test_top_k_restricts_the_choice() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(300)}
    assert picks == {1, 2}
    assert int(sample_next(logits, 0.0)) == 1  # temperature 0: the most likely
    g = torch.Generator().manual_seed(0)
    wide = {int(sample_next(logits, 5.0, generator=g)) for _ in range(300)}
    assert len(wide) == 5


def test_dropout_only_in_training_mode() -> None:
    config = GPTConfig(vocab_size=11, block_size=8, n_embed=16, n_layers=2, n_heads=4, dropout=0.5)
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(11, (2, 8))
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_does_not_depend_on_the_callers_mode(use_cache: bool) -> None:
    config = GPTConfig(vocab_size=11, block_size=8, n_embed=16, n_layers=2, n_heads=4, dropout=0.5)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():  # weights far from the start's near-uniform guesses: dropout shows
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    start = torch.randint(0, 11, (2, 3))
    model.eval()
    expected = model.generate(start, 20, generator=torch.Generator().manual_seed(4), use_cache=use_cache)
    model.train()
    model.blocks[1].eval()  # a mix of modes comes back as it was
    stream = model.generate_stream(start, 20, generator=torch.Generator().manual_seed(4), use_cache=use_cache)
    ids = []
    for next_id in stream:
        ids.append(next_id)
        assert model.training and model.blocks[0].training and not model.blocks[1].training  # between steps
    assert torch.equal(torch.cat((start, torch.stack(ids, dim=1)), dim=1), expected)


def test_the_seeds_class_names_are_the_same_classes() -> None:
    import model
    from model import gpt

    assert model.LM is model.GPT is gpt.GPT
    assert model.MultHead is model.MultiHeadAttention is gpt.MultiHeadAttention
    assert (model.Head, model.FeedForward, model.Block) == (gpt.Head, gpt.FeedForward, gpt.Block)
    lm = model.LM(CONFIG)
    assert isinstance(lm.blocks[0].sa, model.MultHead) and isinstance(lm.blocks[0], model.Block)
