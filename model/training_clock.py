"""Training time: since a run first started (across resumes), less the time it was held paused."""

from __future__ import annotations

import time
from typing import Any


class TrainingClock:
    def __init__(self) -> None:
        self._before = 0.0  # trained before this process (a resumed run's checkpoint says)
        self._t0 = time.perf_counter()
        self._held_since: float | None = None

    def start(self) -> None:
        """The loop starts: time counts from now (on top of what came before)."""
        self._t0 = time.perf_counter()

    def time_s(self) -> float:
        now = time.perf_counter() if self._held_since is None else self._held_since
        return self._before + now - self._t0

    @property
    def held(self) -> bool:
        """Whether the loop is held paused (the clock stands still)."""
        return self._held_since is not None

    def hold(self) -> None:
        self._held_since = time.perf_counter()

    def release(self) -> None:
        if self._held_since is not None:
            self._t0 += time.perf_counter() - self._held_since
            self._held_since = None

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self.time_s()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._before = float(state.get("elapsed_s", 0.0))
