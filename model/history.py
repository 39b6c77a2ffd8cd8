"""Bounded loss history for charts and checkpoints.

A run of 100,000 steps must not keep 100,000 points in memory or in every checkpoint. When the
history is full, neighbouring points are merged in pairs (their mean iteration and mean loss),
so old stretches are kept at a coarser resolution and recent steps at full resolution.
"""

from __future__ import annotations

from collections.abc import Iterable


class LossHistory:
    def __init__(self, max_points: int = 4000) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.max_points = max_points
        self.iters: list[float] = []
        self.losses: list[float] = []

    def extend(self, iters: Iterable[float], losses: Iterable[float]) -> None:
        """Append points, merging whenever there are more than max_points: the same as adding
        them one at a time, a slice at a time (a viewer reads a long run's 100,000 at once)."""
        new = [(float(it), float(loss)) for it, loss in zip(iters, losses)]
        pos = 0
        while pos < len(new):
            room = max(1, self.max_points + 1 - len(self.iters))  # points until the next merge
            taken = new[pos : pos + room]
            self.iters += [it for it, _ in taken]
            self.losses += [loss for _, loss in taken]
            pos += len(taken)
            if len(self.iters) > self.max_points:
                self._halve_older()

    def _halve_older(self) -> None:
        # Merge pairs in the older half; the newer half keeps full resolution.
        half = len(self.iters) // 2
        half -= half % 2
        old_i, old_l = self.iters[:half], self.losses[:half]
        merged_i = [(old_i[k] + old_i[k + 1]) / 2 for k in range(0, half, 2)]
        merged_l = [(old_l[k] + old_l[k + 1]) / 2 for k in range(0, half, 2)]
        self.iters = merged_i + self.iters[half:]
        self.losses = merged_l + self.losses[half:]

    def __len__(self) -> int:
        return len(self.iters)

    def pairs(self) -> tuple[tuple[float, float], ...]:
        return tuple(zip(self.iters, self.losses))

    def truncate_after(self, it: float) -> None:
        """Forget the points after iteration `it` (a run resumed from an earlier checkpoint)."""
        keep = len(self.iters)
        while keep and self.iters[keep - 1] > it:
            keep -= 1
        del self.iters[keep:], self.losses[keep:]
