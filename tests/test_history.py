"""model/history.py: the bounded loss history behind the chart and the checkpoints."""

from __future__ import annotations

import random

import pytest

from model.history import LossHistory


def one_step_at_a_time(max_points: int, iters: list[int], losses: list[float]) -> list[tuple[float, float]]:
    """The rule written plainly: every `stride` steps one point; too many points: pairs merge."""
    stride, points, bucket = 1, [], []
    for step in zip(iters, losses):
        bucket.append(step)
        if len(bucket) == stride:
            points.append((sum(i for i, _ in bucket) / stride, sum(x for _, x in bucket) / stride))
            bucket = []
            if len(points) > max_points:
                if len(points) % 2:
                    odd = points.pop()
                    bucket = [odd] * stride  # the same sums as the steps it stood for
                points = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(points[::2], points[1::2])]
                stride *= 2
    if bucket:
        points.append((sum(i for i, _ in bucket) / len(bucket), sum(x for _, x in bucket) / len(bucket)))
    return points


@pytest.mark.parametrize("max_points", [3, 10, 400])
def test_extending_by_slices_follows_the_rule_step_by_step(max_points: int) -> None:
    rng = random.Random(max_points)
    history, iters, losses = LossHistory(max_points), [], []
    start = 0
    for _ in range(15):
        n = rng.randint(0, 3000)
        new = list(range(start, start + n))
        start += n
        new_losses = [rng.random() for _ in new]
        history.extend(new, new_losses)
        iters += new
        losses += new_losses
        expected = one_step_at_a_time(max_points, iters, losses)
        assert len(history) == len(expected) <= max_points + 1
        assert history.iters == pytest.approx([p[0] for p in expected])
        assert history.losses == pytest.approx([p[1] for p in expected])


def test_a_long_run_is_kept_whole_at_one_resolution() -> None:
    # It used to keep recent steps whole and merge older ones in unweighted pairs: after 100,000
    # steps the history began at step 93,535 and a long run's chart showed only its end.
    history = LossHistory(max_points=4000)
    history.extend(range(100_000), [float(i) for i in range(100_000)])
    assert 2000 <= len(history) <= 4001
    s = history.stride
    assert history.iters[0] == (s - 1) / 2  # the first point: the mean of steps 0 .. stride-1
    gaps = {b - a for a, b in zip(history.iters[:-2], history.iters[1:-1])}
    assert gaps == {float(s)}
    assert history.iters[-1] > 100_000 - s and history.steps == 100_000
    assert history.losses == history.iters  # the loss here is the step: means of the same steps


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 4001, 10_007, 12_288])
def test_a_loaded_history_goes_on_as_the_original(steps: int) -> None:
    """A checkpoint or a viewer has only the points: the stride and the part-filled last point
    are worked out from them, so a resumed run's history is the uninterrupted run's."""
    rng = random.Random(steps)
    original = LossHistory(max_points=1000)
    original.extend(range(steps), [rng.random() for _ in range(steps)])
    loaded = LossHistory(max_points=1000)
    loaded.load(original.iters, original.losses)
    assert loaded.iters == pytest.approx(original.iters) and loaded.losses == pytest.approx(original.losses)
    assert loaded.stride == original.stride
    more = list(range(steps, steps + 5000))
    more_losses = [rng.random() for _ in more]
    original.extend(more, more_losses)
    loaded.extend(more, more_losses)
    assert loaded.iters == pytest.approx(original.iters) and loaded.losses == pytest.approx(original.losses)


@pytest.mark.parametrize("resume_at", [900, 901, 931, 999, 1000, 640])
def test_truncating_then_going_on_is_the_uninterrupted_history(resume_at: int) -> None:
    """A run resumed from an earlier checkpoint re-runs the steps after it: read back, the
    history forgets them and is filled again as it was the first time (the same losses here)."""
    uninterrupted, resumed = LossHistory(max_points=100), LossHistory(max_points=100)
    uninterrupted.extend(range(1, 1201), [1.0 + (i % 7) for i in range(1, 1201)])
    resumed.extend(range(1, 1001), [1.0 + (i % 7) for i in range(1, 1001)])
    resumed.truncate_after(resume_at)
    assert all(i <= resume_at for i in resumed.iters)
    resumed.extend(range(resume_at + 1, 1201), [1.0 + (i % 7) for i in range(resume_at + 1, 1201)])
    assert resumed.iters == pytest.approx(uninterrupted.iters)
    assert resumed.steps == uninterrupted.steps and len(resumed) == len(uninterrupted)


def test_an_older_checkpoints_uneven_history_is_rebuilt_to_one_resolution() -> None:
    """Histories saved before the stride (recent steps whole, older ones merged, unevenly
    spaced) are rebuilt step by step, not taken as points of one step each."""
    old = [float(i) for i in [*range(0, 64, 8), *range(64, 96, 2), *range(96, 100)]]
    history = LossHistory(max_points=16)
    history.load(old, [1.0] * len(old))
    gaps = {b - a for a, b in zip(history.iters[:-2], history.iters[1:-1])}
    assert len(gaps) == 1 and history.stride > 1
    assert 90 <= history.steps <= 110 and history.iters[0] < 10


def test_a_loaded_history_past_max_points_keeps_its_last_steps() -> None:
    original = LossHistory(max_points=1000)
    original.extend(range(5003), [float(i) for i in range(5003)])
    smaller = LossHistory(max_points=100)  # a viewer's chart may keep fewer points than the run
    smaller.load(original.iters, original.losses)
    assert len(smaller) <= 101 and smaller.iters[-1] > 4900 and smaller.steps == pytest.approx(5003, abs=8)
