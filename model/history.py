"""Bounded loss history for charts and checkpoints.

A run of 100,000 steps must not keep 100,000 points in memory or in every checkpoint, and its
chart must still show the whole run. Every `stride` consecutive steps are kept as one point (their
mean iteration and mean loss); when there are more than max_points, neighbouring points are merged
in pairs and the stride doubles. So the whole run is kept at one resolution, between max_points/2
and max_points points, and the newest steps, not yet a whole point, are shown as one more.

(It used to merge only the older half, in unweighted pairs: each merge pulled the oldest point
towards newer iterations, and after 100,000 steps the history began at step 93,000.)
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable


class LossHistory:
    def __init__(self, max_points: int = 4000) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.max_points = max_points
        self.stride = 1  # steps a point stands for
        self._iters: list[float] = []  # whole points
        self._losses: list[float] = []
        self._sum_iter = self._sum_loss = 0.0  # the steps of the point being filled
        self._count = 0
        self._first: float | None = None  # the first step's iteration: points start stride apart from it

    # ---- adding ------------------------------------------------------------------------------
    def extend(self, iters: Iterable[float], losses: Iterable[float]) -> None:
        """Append steps, a slice at a time (a viewer reads a long run's 100,000 at once)."""
        its = [float(it) for it in iters]
        ls = [float(loss) for loss in losses]
        n, pos = min(len(its), len(ls)), 0
        if n and self._first is None:
            self._first = its[0]
        while pos < n:
            s = self.stride
            take = min(s - self._count, n - pos)
            self._sum_iter += sum(its[pos:pos + take])
            self._sum_loss += sum(ls[pos:pos + take])
            self._count += take
            pos += take
            if self._count < s:
                break
            self._iters.append(self._sum_iter / s)
            self._losses.append(self._sum_loss / s)
            self._sum_iter = self._sum_loss = 0.0
            self._count = 0
            whole = min((n - pos) // s, self.max_points - len(self._iters))  # whole points at once
            if whole > 0:
                ends = range(pos + s, pos + (whole + 1) * s, s)
                self._iters += [sum(its[end - s:end]) / s for end in ends]
                self._losses += [sum(ls[end - s:end]) / s for end in ends]
                pos += whole * s
            if len(self._iters) > self.max_points:
                self._merge()

    def _merge(self) -> None:
        """Pairs become points of twice the stride; an odd last point goes back to being filled."""
        s = self.stride
        if len(self._iters) % 2:
            self._sum_iter, self._sum_loss, self._count = self._iters.pop() * s, self._losses.pop() * s, s
        self._iters = [(a + b) / 2 for a, b in zip(self._iters[::2], self._iters[1::2])]
        self._losses = [(a + b) / 2 for a, b in zip(self._losses[::2], self._losses[1::2])]
        self.stride = 2 * s

    def load(self, iters: Iterable[float], losses: Iterable[float]) -> None:
        """Take over a history another LossHistory made (a checkpoint's, or the one a viewer is sent):
        its stride and its last, partly filled point are worked out from the spacing of its points,
        so the steps that follow are added as they would have been to the original. A history
        spaced unevenly (an older checkpoint's, from before the stride) is rebuilt step by step,
        each point standing for the steps since the one before."""
        its = [float(it) for it in iters]
        ls = [float(loss) for loss in losses]
        self.__init__(self.max_points)  # type: ignore[misc]
        if len(its) < 3:
            self.extend(its, ls)
            return
        gaps = [b - a for a, b in zip(its[:-2], its[1:-1])]
        spacing = statistics.median(gaps)
        if spacing <= 0 or max(gaps) > 1.5 * spacing + 1 or min(gaps) < spacing / 1.5 - 1:
            self._rebuild(its, ls)
            return
        self.stride = max(1, round(spacing))
        self._iters, self._losses = its[:-1], ls[:-1]
        self._first = its[0] - (self.stride - 1) / 2
        while len(self._iters) > self.max_points:
            self._merge()
        # a last point of n steps after a whole one: their means are (n + 1) / 2 + (stride - 1) / 2 apart
        n = min(self.stride, max(1, round(2 * (its[-1] - its[-2]) - self.stride)))
        self._add_to_filling(its[-1] * n, ls[-1] * n, n)

    def _add_to_filling(self, sum_iter: float, sum_loss: float, count: int) -> None:
        self._sum_iter += sum_iter
        self._sum_loss += sum_loss
        self._count += count
        if self._count >= self.stride:
            self._iters.append(self._sum_iter / self._count)
            self._losses.append(self._sum_loss / self._count)
            self._sum_iter = self._sum_loss = 0.0
            self._count = 0
            if len(self._iters) > self.max_points:
                self._merge()

    def _rebuild(self, iters: list[float], losses: list[float]) -> None:
        steps_i: list[float] = []
        steps_l: list[float] = []
        previous = iters[0] - max(1.0, iters[1] - iters[0])
        for it, loss in zip(iters, losses):
            n = max(1, round(it - previous))
            steps_i += [previous + (k + 1) * (it - previous) / n for k in range(n)]  # the steps since the last point
            steps_l += [loss] * n
            previous = it
        self.extend(steps_i, steps_l)

    def truncate_after(self, it: float) -> None:
        """Forget the steps after iteration `it` (a run resumed from an earlier checkpoint). The point
        that holds `it` keeps the steps up to it (at its mean loss), so the steps that come next
        fill it as they filled it the first time."""
        if self._first is None:
            return
        s = self.stride
        start_of = lambda k: self._first + k * s  # noqa: E731 (the first step of point k)
        k = int(max(0.0, it - self._first + 1) // s)  # points wholly at or before it
        if k < len(self._iters):
            loss = self._losses[k]
            del self._iters[k:], self._losses[k:]
        elif self._count:
            loss = self._sum_loss / self._count
        else:
            return
        kept = int(it - start_of(k) + 1)  # of the point that holds it
        self._sum_iter = self._sum_loss = 0.0
        self._count = 0
        if 0 < kept < s:
            self._sum_iter, self._sum_loss, self._count = (start_of(k) + it) / 2 * kept, loss * kept, kept

    # ---- reading -----------------------------------------------------------------------------
    @property
    def iters(self) -> list[float]:
        return self._iters + [self._sum_iter / self._count] if self._count else list(self._iters)

    @property
    def losses(self) -> list[float]:
        return self._losses + [self._sum_loss / self._count] if self._count else list(self._losses)

    @property
    def steps(self) -> int:
        """How many steps the points stand for (about: a loaded history's are worked out)."""
        return len(self._iters) * self.stride + self._count

    def __len__(self) -> int:
        return len(self._iters) + (1 if self._count else 0)

    def pairs(self) -> tuple[tuple[float, float], ...]:
        return tuple(zip(self.iters, self.losses))
