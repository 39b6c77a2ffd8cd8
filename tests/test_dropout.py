"""The CPU dropout masks."""

from __future__ import annotations

import pytest
import torch

from model.dropout import Dropout, _bernoulli_positions, dropout, keep_mask


def _assert_drop_rate(mask: torch.Tensor, p: float) -> None:
    n = mask.numel()
    dropped = 1.0 - mask.float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(dropped - p) <= 6 * sigma + 1e-12, (dropped, p)


@pytest.mark.parametrize("p", [0.0, 0.001, 1 / 256, 0.1, 0.2, 0.5, 0.9, 0.999])
def test_keep_mask_drops_at_the_requested_rate(p: float) -> None:
    torch.manual_seed(0)
    _assert_drop_rate(keep_mask((2000, 1000), p), p)


def test_keep_mask_drops_what_a_byte_cannot_express() -> None:
    # p = 51.5 / 256: the random byte alone drops 51/256 (0.19922); the sparse further drops
    # must bring it to 0.20117. 4M elements tell the two apart by >10 sigma.
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


@pytest.mark.parametrize("n,r,draws", [(2_000_000, 0.001, None), (2_000_000, 0.01, 1000), (50, 0.003, None)])
def test_bernoulli_positions_pick_each_index_with_probability_r(n: int, r: float, draws: int | None) -> None:
    # draws=1000 makes it continue from where each batch of gaps ended, ~20 times.
    torch.manual_seed(0)
    positions = _bernoulli_positions(n, r, draws)
    assert positions.dtype == torch.int64
    assert bool((positions[1:] > positions[:-1]).all()) and bool(((positions >= 0) & (positions < n)).all())
    sigma = (n * r * (1 - r)) ** 0.5
    assert abs(positions.numel() - n * r) <= 6 * sigma + 1
    if n > 1000:  # no part of the range is favoured: each half holds about half of them
        first_half = int((positions < n // 2).sum())
        assert abs(first_half - positions.numel() / 2) <= 6 * (positions.numel() / 4) ** 0.5


def test_keep_mask_writes_into_out_in_its_dtype() -> None:
    torch.manual_seed(4)
    expected = keep_mask((300, 70), 0.3)
    assert expected.dtype == torch.float32 and set(expected.unique().tolist()) == {0.0, 1.0}
    for dtype in (torch.float64, torch.bfloat16):
        out = torch.full((300, 70), 7.0, dtype=dtype)
        torch.manual_seed(4)
        assert keep_mask((300, 70), 0.3, out=out) is out
        assert torch.equal(out.float(), expected)
