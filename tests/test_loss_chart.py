"""The loss chart's picture, read from its cells: axis labels that never repeat, the validation
line in Braille dots (2x4 a cell) rather than whole character cells, and zooming and panning its
iterations (keys, the mouse wheel) in a window that follows the run."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.events import MouseScrollDown, MouseScrollUp

from chargpt_tui.dashboard.widgets.loss_chart import LossChart, nice_ticks
from chargpt_tui.dashboard.widgets.x_window import MIN_WIDTH, XWindow

BRAILLE = range(0x2800, 0x2900)


class ChartApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LossChart(id="chart")


def rows(chart: LossChart) -> list[str]:
    return ["".join(segment.text for segment in line) for line in chart._build().lines]


def x_labels(chart: LossChart) -> list[str]:
    """The words of the x axis's label row: the last row that has digits in it."""
    labelled = [row for row in rows(chart) if any(c.isdigit() for c in row)]
    return labelled[-1].split()


@pytest.mark.parametrize("top", [1, 2, 3, 7, 10, 33, 999, 12_345])
@pytest.mark.parametrize("most", [2, 3, 5, 8])
def test_ticks_are_whole_steps_and_distinct(top: int, most: int) -> None:
    ticks = nice_ticks(top, most)
    assert ticks[0] == 0 and ticks[-1] <= top
    assert all(float(t).is_integer() for t in ticks)  # iterations: no 0.2 to be printed as "0"
    labels = [f"{t:,.0f}" for t in ticks]
    assert len(set(labels)) == len(labels)


async def test_at_the_first_step_the_x_labels_do_not_repeat() -> None:
    """At step 1 the labels read `0  0  0  1  1`: ticks at 0.2, 0.4, ... printed as whole steps."""
    app = ChartApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        chart.add_steps((1,), (4.2,))
        chart.add_eval(0, 4.21, 4.22)
        chart.draw_now()
        await pilot.pause()
        labels = x_labels(chart)
        assert labels and len(set(labels)) == len(labels), labels


async def test_the_validation_line_is_drawn_in_braille() -> None:
    """A validation loss going from 2.08 to 1.83 over eight rows was drawn in whole character
    cells (a dot a cell), so it looked flat: Braille dots give it 4 levels a row."""
    app = ChartApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        for k, val in enumerate([2.08, 2.02, 1.98, 1.95, 1.92, 1.89, 1.87, 1.85, 1.83]):
            chart.add_eval(100 * k, val + 0.02, val)
        chart.draw_now()
        await pilot.pause()
        plot = [row.split("┤", 1)[-1].split("│", 1)[-1] for row in rows(chart)]
        drawn = {c for row in plot for c in row if not c.isspace() and c not in "─┬┴┼│└┘┌┐├┤" and not c.isdigit()
                 and c not in ",.x"}
        assert "•" not in drawn
        assert drawn and all(ord(c) in BRAILLE for c in drawn), drawn
        levels = {c for c in drawn if ord(c) in BRAILLE}
        assert len(levels) >= 4  # a slope within rows, not a staircase of whole cells


# ---- zoom and pan ------------------------------------------------------------------------------
def test_a_window_zooms_follows_the_run_pans_and_resets() -> None:
    window = XWindow()
    assert window.span(1000) == (0.0, 1000.0) and not window.zoomed
    window.zoom(0.5, last=1000)
    assert window.span(1000) == (500.0, 1000.0)
    assert window.span(1200) == (700.0, 1200.0)  # at the latest step: it follows the run
    window.pan(-0.5, last=1200)
    assert window.span(1200) == (450.0, 950.0)
    assert window.span(1400) == (450.0, 950.0)  # panned back: it stays where it was put
    window.pan(-10, last=1400)
    assert window.span(1400) == (0.0, 500.0)  # not before the start
    window.pan(10, last=1400)
    assert window.span(1400) == (900.0, 1400.0) and window.span(1500) == (1000.0, 1500.0)  # following again
    window.zoom(0.5, last=1500, at=1250.0)  # the iteration under the pointer stays where it is
    lo, hi = window.span(1500)
    assert (hi - lo, (1250 - lo) / (hi - lo)) == (250.0, 0.5)
    window.zoom(0.0, last=1500)
    assert window.span(1500)[1] - window.span(1500)[0] == MIN_WIDTH
    window.zoom(1000.0, last=1500)  # out past the whole run: the whole run
    assert not window.zoomed and window.span(1500) == (0.0, 1500.0)


def numbers(labels: list[str]) -> list[int]:
    return [int(label.replace(",", "")) for label in labels]


async def test_the_chart_zooms_pans_and_follows_with_the_keys_and_the_wheel() -> None:
    app = ChartApp()
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.query_one(LossChart)
        chart.add_steps(tuple(range(1, 1001)), tuple(4.0 - i / 500 for i in range(1, 1001)))
        for it in range(0, 1001, 100):
            chart.add_eval(it, 4.0 - it / 500, 4.1 - it / 500)
        chart.zoom(0.5)
        await pilot.pause()
        assert chart.window.span(chart.last_iter) == (500.0, 1000.0)
        assert min(numbers(x_labels(chart))) >= 500 and "500-1,000" in str(chart.border_subtitle)
        chart.add_steps(tuple(range(1001, 1201)), tuple(2.0 for _ in range(200)))
        chart.draw_now()
        await pilot.pause()
        assert chart.window.span(chart.last_iter) == (700.0, 1200.0)  # it follows the run
        assert max(numbers(x_labels(chart))) >= 1100
        chart.pan(-0.5)
        chart.add_steps((1201, 1202), (2.0, 2.0))
        chart.draw_now()
        await pilot.pause()
        assert chart.window.span(chart.last_iter) == (450.0, 950.0)
        chart.reset_view()
        await pilot.pause()
        assert not chart.window.zoomed and chart.border_subtitle == "iteration"
        assert min(numbers(x_labels(chart))) == 0
        # the wheel over the chart zooms in at the pointer, and out again
        x = chart.region.x + chart.region.width // 2
        for _ in range(3):
            chart.post_message(MouseScrollUp(chart, x - chart.region.x, 5, 0, 1, 0, False, False, False,
                                             screen_x=x, screen_y=chart.region.y + 5))
        await pilot.pause()
        lo, hi = chart.window.span(chart.last_iter)
        assert chart.window.zoomed and lo > 200 and hi < 1100
        for _ in range(20):
            chart.post_message(MouseScrollDown(chart, x - chart.region.x, 5, 0, -1, 0, False, False, False,
                                               screen_x=x, screen_y=chart.region.y + 5))
        await pilot.pause()
        assert not chart.window.zoomed
