"""Iteration / max iterations, elapsed time and ETA.

The ETA counts the remaining steps at the recent step time (an average with bias correction, fed
only by step times, never by evaluations or pauses) plus the remaining evaluations at the last
evaluation's duration, so it does not jump when an evaluation starts or ends.

One widget drawn by render(), refreshed only when its text changes: updating child widgets
(a ProgressBar and its percentage label) would make Textual lay the whole screen out again on
every update, and that costs the training thread time.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.widget import Widget

from chargpt_tui.format import duration

from .rows import label_rows, progress_bar


class ProgressPanel(Widget):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.iter = 0
        self.max_iters = 1
        self.eval_interval = 1
        self.elapsed_s = 0.0
        self._elapsed_at = time.monotonic()
        self.running = False
        self._step_s = 0.0  # smoothed seconds per step, before bias correction
        self._step_weight = 0.0
        self.eval_s = 0.0
        self._eval_fraction_left = 0.0
        self._shown: tuple[object, ...] = ()

    def on_mount(self) -> None:
        self.set_interval(1.0, self._refresh_if_changed)  # the clock ticks even between events

    def set_run(self, it: int, max_iters: int, eval_interval: int, elapsed_s: float) -> None:
        self.iter, self.max_iters, self.eval_interval = it, max_iters, eval_interval
        self.set_elapsed(elapsed_s)
        self._refresh_if_changed()

    def set_elapsed(self, elapsed_s: float) -> None:
        # shown at the next tick of the clock (once a second), not at every event: each repaint
        # costs the viewer's CPU, and so training's
        self.elapsed_s, self._elapsed_at = elapsed_s, time.monotonic()

    def add_steps(self, it: int, n_steps: int, ms_per_step: float, elapsed_s: float) -> None:
        self.iter = it
        beta = 0.7
        self._step_s = beta * self._step_s + (1 - beta) * ms_per_step / 1000.0
        self._step_weight = beta * self._step_weight + (1 - beta)
        self.set_elapsed(elapsed_s)

    def set_eval_progress(self, fraction_left: float) -> None:
        self._eval_fraction_left = fraction_left

    def eval_finished(self, eval_s: float) -> None:
        self.eval_s = eval_s
        self._eval_fraction_left = 0.0

    @property
    def eta_s(self) -> float | None:
        if self._step_weight == 0:
            return None
        steps_left = max(0, self.max_iters - self.iter)
        if not steps_left:
            return 0.0
        evals_left = steps_left // self.eval_interval + (1 if self.max_iters % self.eval_interval else 0)
        step_s = self._step_s / self._step_weight
        return steps_left * step_s + (evals_left + self._eval_fraction_left) * self.eval_s

    def _texts(self) -> tuple[int, int, str, str]:
        elapsed = self.elapsed_s + (time.monotonic() - self._elapsed_at if self.running else 0.0)
        eta = self.eta_s
        eta_text = duration(eta) if eta is not None and self.iter < self.max_iters else "--:--"
        return self.iter, self.max_iters, duration(elapsed), eta_text

    def _refresh_if_changed(self) -> None:
        if self._texts() != self._shown:
            self.refresh()

    def render(self) -> Text:
        self._shown = self._texts()
        it, max_iters, elapsed, eta = self._shown
        label_width = 4
        return label_rows([
            (f"{100 * it / max(1, max_iters):.0f}%", progress_bar(it, max_iters, self.size.width - label_width - 1)),
            ("step", f"{it:,} / {max_iters:,}"),
            ("time", f"{elapsed} elapsed, ETA {eta}"),
        ], label_width)
