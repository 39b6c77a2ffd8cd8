"""Several runs' curves on one chart: smoothed training loss and validation loss, a colour per
run, against iteration or training time, linear or log y. The runs browser's compare view.

It is given plain series (runs_browser reads the runs), each thinned to what the chart's width
can show before plotext sees it: ten runs of 100,000 steps draw as fast as ten of a thousand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from chargpt_tui.format import duration

from .loss_chart import nice_ticks, plot_cells

# xterm-256 colours, far apart on a dark or light background: the first ten selected runs
PALETTE = (51, 214, 201, 46, 226, 33, 196, 141, 180, 250)
SHOWN = ("both", "val", "train")  # which curves each run draws (a key cycles)


@dataclass
class Series:
    label: str
    colour: int  # of PALETTE
    train: tuple[list[float], list[float]]  # (x, smoothed loss)
    val: tuple[list[float], list[float]]  # (x, val loss)


class CompareChart(PlotextPlot):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.series: list[Series] = []
        self.by_time = False
        self.log_scale = False
        self.shown = "both"
        self.drawn: list[tuple[str, str, int, list[float], list[float]]] = []  # (label, kind, colour, x, y)
        self.redraws = 0
        self.last_redraw_s = 0.0  # how long the last plot took to build (the benchmark reads it)
        self._render_key: tuple[object, ...] = ()
        self._rendered: RenderResult = ""

    def set_series(self, series: list[Series]) -> None:
        self.series = series
        self.redraw()

    def toggle_time(self) -> bool:
        self.by_time = not self.by_time
        self.redraw()
        return self.by_time

    def toggle_log_scale(self) -> bool:
        self.log_scale = not self.log_scale
        self.redraw()
        return self.log_scale

    def cycle_shown(self) -> str:
        self.shown = SHOWN[(SHOWN.index(self.shown) + 1) % len(SHOWN)]
        self.redraw()
        return self.shown

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        started = time.perf_counter()
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.yscale("log" if self.log_scale else "linear")
        width = max(10, self.size.width)
        self.drawn = []
        top = 0.0
        for s in self.series:
            if self.shown in ("both", "train") and s.train[0]:
                xs, ys = thin(*s.train, 2 * width)
                plt.plot(xs, ys, marker="braille", color=s.colour)
                self.drawn.append((s.label, "train", s.colour, xs, ys))
                top = max(top, xs[-1])
            if self.shown in ("both", "val") and s.val[0]:
                xs, ys = thin(*s.val, 2 * width)
                plt.plot(xs, ys, marker="braille", color=s.colour)
                # a dot at each evaluation: the validation curve told from the training one of its colour
                plt.scatter(xs, ys, marker="•", color=s.colour)
                self.drawn.append((s.label, "val", s.colour, xs, ys))
                top = max(top, xs[-1])
        if top > 0:
            ticks = nice_ticks(top, max(2, width // 12))
            plt.xticks(ticks, [duration(t) if self.by_time else f"{t:,.0f}" for t in ticks])
        axis = "training time" if self.by_time else "iteration"
        self.border_subtitle = f"{axis} · t: {'iteration' if self.by_time else 'time'}"
        curves = {"both": "smoothed train, val (• each evaluation)", "val": "val (• each evaluation)",
                  "train": "smoothed train"}[self.shown]
        self.border_title = f"loss{' (log)' if self.log_scale else ''}: {curves}"
        self.redraws += 1
        self.last_redraw_s = time.perf_counter() - started
        self.refresh()

    def render(self) -> RenderResult:
        key = (self.redraws, self.size, self.app.theme)
        if key != self._render_key:
            self._render_key = key
            self._rendered = plot_cells(self)
        return self._rendered


def thin(xs: list[float], ys: list[float], most: int) -> tuple[list[float], list[float]]:
    """At most about `most` points, evenly spread over x's indices, always keeping the last."""
    n = min(len(xs), len(ys))
    if n <= most:
        return list(xs[:n]), list(ys[:n])
    step = n / most
    picks = sorted({min(n - 1, int(i * step)) for i in range(most)} | {n - 1})
    return [xs[i] for i in picks], [ys[i] for i in picks]

