"""Training loss per step (raw and smoothed) and validation loss per evaluation, over iterations."""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, ConsoleOptions
from rich.console import RenderResult as RichRenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from model.history import LossHistory

from .x_window import XWindow

# other runs overlaid (c): xterm-256 colours apart from this run's own (grey, cyan, orange, red)
OVERLAY_COLOURS = (201, 46, 226, 33, 141, 180, 250)
ZOOM_STEP = 0.5  # a key zooms in to half the iterations shown (or out to twice); the wheel by less
WHEEL_STEP = 0.8


class SmoothedLoss:
    """An exponential moving average with Adam's bias correction: without it the average starts
    at 0 and creeps up, so the first hundred steps would read far too low."""

    def __init__(self, beta: float = 0.95) -> None:
        self.beta = beta
        self._average = 0.0
        self._count = 0

    def add(self, value: float, steps: int = 1) -> float:
        """value: the loss of one step, or the mean of `steps` steps (a point of a loaded history)."""
        self._count += steps
        decay = self.beta**steps
        self._average = decay * self._average + (1 - decay) * value
        return self._average / (1 - self.beta**self._count)


class LossChart(PlotextPlot):
    """Redraws at most every `redraw_interval_s` (2 s), and only when the picture would change: a new
    evaluation, or enough new steps to fill a braille dot's width of the x axis (one step early
    in a run; dozens later, when each dot stands for many steps), or any new step after
    `max_wait_s`.

    Building the plot (plotext, pure Python) and painting it are most of what a dashboard costs,
    and on a 2-core machine that time is taken from training, once for each viewer attached. A
    redraw at 120x40 took about 25 ms of CPU early in a run; 14 ms since the cells are read from
    plotext's grid (not encoded as ANSI text and decoded again) and the raw losses are dots
    rather than joined lines. A viewer early in a run at the seed's settings (a step a second,
    so every redraw has new points) costs 12 ms of CPU a second, down from 18.
    """

    def __init__(self, redraw_interval_s: float = 2.0, max_wait_s: float = 10.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.redraw_interval_s = redraw_interval_s
        self.max_wait_s = max_wait_s
        self._new_steps = 0  # finite step points since the last redraw
        self._last_redraw = time.monotonic()
        self.raw = LossHistory(max_points=4000)
        self.smooth = LossHistory(max_points=4000)
        self._smoother = SmoothedLoss()
        self.evals: list[tuple[int, float, float]] = []  # (iter, train, val)
        self.log_scale = False
        self.window = XWindow()  # which iterations are shown (zoom and pan)
        # other runs overlaid: (name, colour, iters, smoothed train loss, val iters, val loss)
        self.overlays: list[Overlay] = []
        self.redraws = 0  # how often the plot was rebuilt (tests and diagnostics)
        self._dirty = True
        self._render_key: tuple[object, ...] = ()
        self._rendered: RenderResult = ""

    def on_mount(self) -> None:
        super().on_mount()
        self.border_subtitle = "iteration"
        self.set_interval(self.redraw_interval_s, self._redraw_if_dirty)
        self._replot()

    # ---- data in -------------------------------------------------------------------------------
    def add_steps(self, iters: tuple[int, ...] | list[float], losses: tuple[float, ...] | list[float]) -> None:
        finite = [(i, x) for i, x in zip(iters, losses) if math.isfinite(x)]
        self.raw.extend((i for i, _ in finite), (x for _, x in finite))
        self.smooth.extend((i for i, _ in finite), (self._smoother.add(x) for _, x in finite))
        self._new_steps += len(finite)

    def load_steps(self, iters: list[float], losses: list[float]) -> None:
        """A history made elsewhere (a checkpoint's, a run's a viewer is sent): each point may stand
        for many steps, as the steps that follow will once they are merged."""
        finite = [(i, x) for i, x in zip(iters, losses) if math.isfinite(x)]
        self._smoother = SmoothedLoss()
        self.raw.load([i for i, _ in finite], [x for _, x in finite])
        stride = self.raw.stride  # each point the mean of this many steps: smoothed over as many
        self.smooth.load([i for i, _ in finite], [self._smoother.add(x, stride) for _, x in finite])
        self._dirty = True

    def add_eval(self, it: int, train_loss: float, val_loss: float) -> None:
        self.evals.append((it, train_loss, val_loss))
        self._dirty = True

    def clear(self) -> None:
        """Forget every point (a viewer that attaches again is sent the history anew)."""
        self.raw = LossHistory(max_points=4000)
        self.smooth = LossHistory(max_points=4000)
        self._smoother = SmoothedLoss()
        self.evals = []
        self._dirty = True

    def set_overlays(self, overlays: list[Overlay]) -> None:
        """Other runs' curves, drawn under this run's in their colours (their names literally)."""
        self.overlays = overlays
        self._dirty = True
        self.draw_now()

    def toggle_log_scale(self) -> bool:
        self.log_scale = not self.log_scale
        self._dirty = True
        self._redraw_if_dirty()
        return self.log_scale

    @property
    def points(self) -> int:
        return len(self.raw) + len(self.evals)

    # ---- zoom and pan --------------------------------------------------------------------------
    @property
    def last_iter(self) -> float:
        last = self.raw.iters[-1] if len(self.raw) else 0.0
        return max(last, self.evals[-1][0]) if self.evals else last

    def zoom(self, factor: float, at: float | None = None) -> None:
        """Show `factor` times as many iterations (below 1: zoom in), around iteration `at`."""
        self.window.zoom(factor, self.last_iter, at)
        self._dirty = True
        self.draw_now()

    def pan(self, fraction: float) -> None:
        """Move a zoomed window by `fraction` of its width (below 0: back)."""
        self.window.pan(fraction, self.last_iter)
        self._dirty = True
        self.draw_now()

    def reset_view(self) -> None:
        self.window.reset()
        self._dirty = True
        self.draw_now()

    def on_mouse_scroll_up(self, event: Any) -> None:
        """The wheel zooms in at the iteration under the pointer (out: scroll down)."""
        self.zoom(WHEEL_STEP, self._iteration_at(event.x))
        event.stop()

    def on_mouse_scroll_down(self, event: Any) -> None:
        self.zoom(1 / WHEEL_STEP, self._iteration_at(event.x))
        event.stop()

    def _iteration_at(self, x: int) -> float:
        lo, hi = self.window.span(self.last_iter)
        return lo + (hi - lo) * min(max(x / max(1, self.size.width), 0.0), 1.0)

    # ---- drawing -------------------------------------------------------------------------------
    def render(self) -> RenderResult:
        # PlotextPlot.render rebuilds the whole figure each time it is called, also when nothing
        # changed (a modal opening over the dashboard repaints it). Rebuild only for new data,
        # a new size or a new theme.
        key = (self.redraws, self.size, self.app.theme)
        if key != self._render_key:
            self._render_key = key
            self._rendered = self._build()
        return self._rendered

    def _build(self) -> RenderResult:
        """What PlotextPlot.render draws, without its round trip through text: plotext would
        encode its grid of cells as ANSI escapes (a string built a character at a time) and Rich
        decode them again; a third of a redraw's time. The cells are read from plotext's grid
        instead, with the style the decoded escapes would have (tests/test_widgets.py compares)."""
        return plot_cells(self)

    def draw_now(self) -> None:
        """Draw what has arrived at once, not at the next tick (a viewer's replayed history: up
        to 2 s sooner on screen)."""
        if self._dirty or self._new_steps:
            self._dirty = False
            self._replot()

    def _redraw_if_dirty(self) -> None:
        steps_per_dot = max(1, self.raw.steps // (2 * max(10, self.size.width)))  # braille: 2 dots a cell
        waited = time.monotonic() - self._last_redraw >= self.max_wait_s
        if self._dirty or self._new_steps >= steps_per_dot or (self._new_steps and waited):
            self._dirty = False
            self._replot()

    def _replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.yscale("log" if self.log_scale else "linear")
        width = max(10, self.size.width)
        lo, hi = self.window.span(self.last_iter)
        for o in self.overlays:  # first: this run's own curves are drawn over them
            iters, smooth = _within(lo, hi, o.iters, o.losses)
            step = max(1, len(iters) // (2 * width))
            plt.scatter(iters[::step], smooth[::step], marker="braille", color=o.colour)
            val_iters, val = _within(lo, hi, o.val_iters, o.val_losses)
            plt.plot(val_iters, val, marker="braille", color=o.colour)
        if len(self.raw):
            iters, raw, smooth = _within(lo, hi, self.raw.iters, self.raw.losses, self.smooth.losses)
            step = max(1, len(iters) // (2 * width))  # braille: two dots a column is enough
            # each step's loss a dot, not joined: a noisy series joined up is a solid band, and
            # plotext's line drawing was a third of a redraw's time
            plt.scatter(iters[::step], raw[::step], marker="braille", color="gray")
            plt.plot(iters[::step], smooth[::step], marker="braille", color="cyan")
        legend = "[gray]train[/] [cyan]smoothed[/]"
        if self.evals:
            evals = [e for e in self.evals if lo <= e[0] <= hi]
            # in Braille too (4 levels a row): in whole cells a line falling from 2.08 to 1.83
            # over eight rows read as flat steps
            plt.plot([e[0] for e in evals], [e[2] for e in evals], marker="braille", color="orange")
            best = min(self.evals, key=lambda e: e[2])
            if lo <= best[0] <= hi:
                plt.scatter([best[0]], [best[2]], marker="x", color="red")
            legend += f" [orange1]val[/] [red]x best {best[2]:.3f} @{best[0]:,}[/]"
        if hi > 0:
            ticks = nice_ticks(hi, max(2, width // 12), lo)
            plt.xticks(ticks, [f"{t:,.0f}" for t in ticks])
        if self.window.zoomed and hi > lo:
            plt.xlim(lo, hi)
        title = f"loss{' (log)' if self.log_scale else ''}  {legend}"
        if title != self.border_title:
            self.border_title = title
        subtitle = Text()
        for o in self.overlays:  # the other runs, under the chart (names from disk: literal, never markup)
            subtitle.append("● ", style=f"color({o.colour})")
            subtitle.append(f"{o.name} ")
        subtitle.append(f"iteration {lo:,.0f}-{hi:,.0f} · 0 shows all" if self.window.zoomed else "iteration")
        if subtitle.markup != self.border_subtitle:
            self.border_subtitle = subtitle
        self.redraws += 1
        self._new_steps = 0
        self._last_redraw = time.monotonic()
        self.refresh()


def plot_cells(widget: PlotextPlot) -> PlotCells:
    """The widget's plot, built at its size and in its theme, as cells."""
    plot = widget.plt
    width, height = widget.size
    plot.plotsize(width, height)
    plot._set_size(width, height)  # as PlotextPlot.render does (textual-plotext issue 5)
    plot.theme(widget._get_plotext_theme_name(widget.app.theme))
    plot._set_sizes()  # plotext's build() without its last step, the ANSI text
    plot._build_matrix()
    return PlotCells.from_matrix(plot.monitor.matrix)


@dataclass
class Overlay:
    """Another run's curves on this chart (the dashboard's c): smoothed training and validation loss."""

    name: str
    colour: int  # xterm-256
    iters: list[float]
    losses: list[float]
    val_iters: list[float]
    val_losses: list[float]


class PlotCells:
    """plotext's grid of cells as Rich segments: one segment for each run of cells alike in style."""

    _styles: dict[tuple[Any, ...], Style] = {}  # plotext colours -> the Rich style their escapes decode to

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    @classmethod
    def from_matrix(cls, matrix: Any) -> PlotCells:
        lines = []
        for row in range(matrix.rows - 1, -1, -1):  # plotext's row 0 is the bottom one
            markers = matrix.marker[row]
            looks = [(_hashable(f), _hashable(s), _hashable(b))
                     for f, s, b in zip(matrix.fullground[row], matrix.style[row], matrix.background[row])]
            segments, start = [], 0
            for col in range(1, len(markers) + 1):
                if col == len(markers) or looks[col] != looks[start]:
                    segments.append(Segment("".join(markers[start:col]), cls._style(looks[start])))
                    start = col
            lines.append(segments)
        return cls(lines)

    @classmethod
    def _style(cls, look: tuple[Any, ...]) -> Style:
        style = cls._styles.get(look)
        if style is None:
            from plotext._utility import colors_to_ansi  # what plotext's own canvas would say

            decoded = Text.from_ansi(colors_to_ansi(*look) + "x")
            style = cls._styles[look] = decoded.get_style_at_offset(Console(), 0) if decoded.spans else Style()
        return style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RichRenderResult:
        newline = Segment.line()
        for segments in self.lines:
            yield from segments
            yield newline


def _hashable(colour: Any) -> Any:
    return tuple(colour) if isinstance(colour, list) else colour


def _within(lo: float, hi: float, iters: list[float], *series: list[float]) -> tuple[list[float], ...]:
    """The points whose iteration is in [lo, hi] (iterations ascend), of each series."""
    start, stop = bisect.bisect_left(iters, lo), bisect.bisect_right(iters, hi)
    return (iters[start:stop], *(s[start:stop] for s in series))


def nice_ticks(top: float, most: int, bottom: float = 0.0) -> list[float]:
    """Round-numbered ticks from bottom to top, about `most` of them: steps of 1, 2 or 5 times a
    power of ten, and at least one iteration (at step 1, ticks at 0.2, 0.4, ... were labelled
    `0  0  0  1  1`)."""
    raw = (top - bottom) / most
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = max(1, next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))
    first = math.ceil(bottom / step)
    return [float(i * step) for i in range(first, int(top // step) + 1)]
