"""Panels drawn without Rich tables and the chart without plotext's ANSI text: the same picture."""

from __future__ import annotations

import random

import pytest
from rich.console import Console, RenderableType
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.text import Text
from textual_plotext import PlotextPlot

from chargpt_tui.dashboard.widgets.loss_chart import PlotCells
from chargpt_tui.dashboard.widgets.rows import label_rows, progress_bar


def cells(renderable: RenderableType, width: int) -> list[list[tuple[str, object]]]:
    console = Console(width=width, color_system="truecolor", force_terminal=True)
    lines = Segment.split_and_crop_lines(console.render(renderable, console.options), width, pad=True)
    return [[(ch, seg.style) for seg in line for ch in seg.text] for line in lines]


@pytest.mark.parametrize("size", [(40, 12), (118, 32)])
def test_the_chart_cells_are_what_plotexts_own_text_decodes_to(size: tuple[int, int]) -> None:
    width, height = size
    rng = random.Random(0)
    plot = PlotextPlot()._plot
    xs = list(range(300))

    def draw() -> None:
        plot.clear_data()
        plot.clear_figure()
        plot.scatter(xs, [4 - i / 100 + rng.random() / 5 for i in xs], marker="braille", color="gray")
        plot.plot(xs, [4 - i / 100 for i in xs], marker="braille", color="cyan")
        plot.plot([0, 100, 200], [4.0, 3.0, 2.0], marker="dot", color="orange")
        plot.scatter([200], [2.0], marker="x", color="red")
        plot.xticks([0, 100, 200], ["0", "100", "200"])
        plot.plotsize(width, height)
        plot._set_size(width, height)

    draw()
    expected = cells(Text.from_ansi(plot.build()), width)[:height]
    rng.seed(0)
    draw()
    plot._set_sizes()
    plot._build_matrix()
    got = cells(PlotCells.from_matrix(plot.monitor.matrix), width)
    assert got == expected
    assert any(ch in "⠁⠂⠄⡀⣀⣿" or "\u2800" <= ch <= "\u28ff" for line in got for ch, _ in line)  # braille drawn


@pytest.mark.parametrize("completed,total", [(0, 100), (1, 100), (33, 100), (50, 100), (99, 100), (100, 100),
                                             (7, 1_000_000), (150, 100)])
@pytest.mark.parametrize("width", [1, 10, 29])
def test_the_progress_bar_is_richs(completed: int, total: int, width: int) -> None:
    assert cells(progress_bar(completed, total, width), width) == cells(
        ProgressBar(total=total, completed=completed, width=width), width)


def test_label_rows_line_up_and_end_long_values_in_an_ellipsis() -> None:
    text = label_rows([("device", "AMD EPYC (2 cores)"), ("MFU", "a value far too long for the panel")], 6)
    lines = ["".join(ch for ch, _ in line).rstrip() for line in cells(text, 30)]
    assert lines == ["device AMD EPYC (2 cores)", "MFU    a value far too long f…"]
