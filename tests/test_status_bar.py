"""The status line keeps the state, the step, the preset and the device at 80 and 100 columns:
the text's name is what gets cut (at 100 columns the built-in corpus's long name pushed the
preset and the device off the line)."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region

from chargpt_tui.dashboard.widgets.status_bar import MIN_NAME, StatusBar, fit_run

BUILTIN = "Python 3.11 standard library sources (264 files, 4.2 MB)"


class OneBar(App[None]):
    def compose(self) -> ComposeResult:
        yield StatusBar()


@pytest.mark.parametrize("width", [80, 100, 160])
@pytest.mark.parametrize("state, detail", [("training", ""), ("evaluating", "45% of 40 batches"),
                                           ("paused", "at step 886, in its evaluation")])
async def test_state_step_preset_and_device_stay_visible(width: int, state: str, detail: str) -> None:
    app = OneBar()
    async with app.run_test(size=(width, 5)) as pilot:
        bar = app.query_one(StatusBar)
        bar.set_run(BUILTIN, 4_190_000, 429_000, "cpu", "cpu")
        bar.set_step(886, 2200)
        bar.state, bar.detail = state, detail
        await pilot.pause()
        line = bar.render_lines(Region(0, 0, width, 1))[0].text
        for shown in (state.upper(), "step 886/2,200", "preset cpu · cpu", detail):
            assert shown in line, (shown, line)
        if width >= 160:
            assert BUILTIN in line and "429k params" in line
        assert len(line.rstrip()) <= width


def test_the_name_is_cut_before_the_sizes_go() -> None:
    parts = (BUILTIN, "4.19M chars · 429k params", "preset cpu · cpu")
    assert fit_run(parts, 200) == f"{BUILTIN} · 4.19M chars · 429k params · preset cpu · cpu"
    cut = fit_run(parts, 70)
    assert cut.endswith("… · 4.19M chars · 429k params · preset cpu · cpu") and len(cut) <= 70
    no_sizes = fit_run(parts, 36)
    assert no_sizes.endswith("… · preset cpu · cpu") and "chars" not in no_sizes and len(no_sizes) <= 36
    assert fit_run(parts, len("preset cpu · cpu") + 3 + MIN_NAME - 1) == "preset cpu · cpu"
