"""Which iterations the loss chart shows: the whole run, or a window zoomed into it and panned
along it. A window that reaches the run's latest step follows the run as it trains.

    window = XWindow()
    window.zoom(0.5, last=1000)          # the latest 500 iterations, following the run
    window.span(1200)                    # (700.0, 1200.0)
    window.pan(-0.5, last=1200)          # half a window back: it stays there as the run goes on
    window.reset()                       # the whole run again
"""

from __future__ import annotations

MIN_WIDTH = 10.0  # iterations: the narrowest window


class XWindow:
    def __init__(self) -> None:
        self.width: float | None = None  # iterations shown; None: the whole run
        self.lo: float | None = None  # the first one shown; None: the window ends at the latest step

    @property
    def zoomed(self) -> bool:
        return self.width is not None

    def span(self, last: float) -> tuple[float, float]:
        """The iterations shown, from and to, for a run whose latest step is `last`."""
        last = max(0.0, last)
        if self.width is None or self.width >= last:
            return 0.0, last
        lo = last - self.width if self.lo is None else min(max(0.0, self.lo), last - self.width)
        return lo, lo + self.width

    def zoom(self, factor: float, last: float, at: float | None = None) -> None:
        """Show `factor` times as many iterations (below 1: zoom in), keeping the iteration `at`
        where it is on the axis (by default the window's end when it follows the run, else its
        middle)."""
        lo, hi = self.span(last)
        width = hi - lo
        if width <= 0:
            return
        new_width = max(MIN_WIDTH, width * factor)
        if new_width >= last:
            self.reset()
            return
        following = self.lo is None or hi >= last
        if at is None:
            at = hi if following else (lo + hi) / 2
        at = min(max(at, lo), hi)
        new_lo = min(max(0.0, at - (at - lo) / width * new_width), last - new_width)
        self.width = new_width
        self.lo = None if new_lo + new_width >= last else new_lo

    def pan(self, fraction: float, last: float) -> None:
        """Move the window by `fraction` of its width (below 0: back towards the start)."""
        if self.width is None:
            return
        lo, hi = self.span(last)
        new_lo = min(max(0.0, lo + fraction * (hi - lo)), max(0.0, last - (hi - lo)))
        self.lo = None if new_lo + (hi - lo) >= last else new_lo

    def reset(self) -> None:
        self.width = self.lo = None
