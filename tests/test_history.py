"""model/history.py: the bounded loss history behind the chart and the checkpoints."""

from __future__ import annotations

import random

import pytest

from model.history import LossHistory


def one_at_a_time(history: LossHistory, iters: list[int], losses: list[float]) -> None:
    for it, loss in zip(iters, losses):
        history.iters.append(float(it))
        history.losses.append(float(loss))
        if len(history.iters) > history.max_points:
            history._halve_older()


@pytest.mark.parametrize("max_points", [3, 10, 4000])
def test_extending_by_slices_equals_adding_one_point_at_a_time(max_points: int) -> None:
    rng = random.Random(max_points)
    fast, slow = LossHistory(max_points), LossHistory(max_points)
    start = 0
    for _ in range(15):
        n = rng.randint(0, 3000)
        iters = list(range(start, start + n))
        losses = [rng.random() for _ in iters]
        start += n
        fast.extend(iters, losses)
        one_at_a_time(slow, iters, losses)
        assert fast.iters == slow.iters and fast.losses == slow.losses
        assert len(fast) <= max_points


def test_old_points_are_merged_and_recent_ones_kept() -> None:
    history = LossHistory(max_points=100)
    history.extend(range(1, 1001), [float(i) for i in range(1, 1001)])
    assert len(history) <= 100 and history.iters[-1] == 1000.0 and history.iters[-2] == 999.0
    assert history.iters == sorted(history.iters)
    history.truncate_after(900)
    assert history.iters[-1] <= 900
