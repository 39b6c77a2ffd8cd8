"""RateLimit: a token bucket, for what a client can make a run do (connections, requests)."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimit:
    """`rate` takes a second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """One take, if there is one to have now."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a take would succeed (0: now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)
