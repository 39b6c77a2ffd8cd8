"""The runs browser (`chargpt-tui runs` on a terminal), with Pilot: the table and its columns of
differing settings, sorting and filtering, runs selected and overlaid on one chart (its series
and its Braille cells), live curves, Enter, g, and a fork started from the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY_FLAGS, make_text
from rich.segment import Segment
from textual.widgets import DataTable

from chargpt_tui.commands.cli import main
from chargpt_tui.dashboard.screens import GenerateScreen
from chargpt_tui.dashboard.widgets.compare_chart import PALETTE, CompareChart
from chargpt_tui.dashboard.widgets.loss_chart import PlotCells
from chargpt_tui.runs_browser.app import RunsApp
from chargpt_tui.runs_browser.fork_screen import ForkScreen
from model import events as ev
from model.rundir import MetricsLog


def write_run(path: Path, lr: float, best: float, steps: int = 100, sample: str = "to be or not",
              dropout: float = 0.1, step_s: float = 0.5, offset: float = 0.0) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "model": {"n_layers": 2, "n_embed": 32, "dropout": dropout},
        "train": {"max_iters": steps, "learning_rate": lr, "batch_size": 8, "seed": 1337},
        "corpus": {"name": "data/tiny.txt"}, "vocab": "abc", "preset": "cpu",
    }))
    log = MetricsLog(path / "metrics.jsonl")
    log(ev.RunStarted(0, 0.0, steps, 1000, 3, "tiny.txt", 5000, "cpu", "CPU", "float32", 1, "2", None, False, 0.0))
    append_steps(log, 1, steps, step_s, offset)
    log(ev.EvalDone(steps // 2, steps // 2 * step_s, best + 0.3, best + 0.2, best + 0.2, steps // 2, True))
    log(ev.EvalDone(steps, steps * step_s, best + 0.1, best, best, steps, True))
    log(ev.SampleGenerated(steps, steps * step_s, sample))
    log(ev.Finished(steps, steps * step_s, best, steps, False))
    log.close()
    return path


def append_steps(log: MetricsLog, first: int, last: int, step_s: float = 0.5, offset: float = 0.0) -> None:
    iters = tuple(range(first, last + 1))
    log(ev.StepsDone(last, last * step_s, iters, tuple(3.0 + offset - i / 100 for i in iters), 1e-3, 1000.0, 5.0))


async def _loaded(app: RunsApp, pilot) -> None:  # noqa: ANN001
    for _ in range(200):
        await pilot.pause(0.05)
        if app.loaded:
            return
    raise AssertionError("the runs were not read")


async def _until(pilot, condition, what: str) -> None:  # noqa: ANN001
    for _ in range(600):
        await pilot.pause(0.05)
        if condition():
            return
    raise AssertionError(f"never: {what}")


def _table(app: RunsApp) -> tuple[list[str], list[list[str]]]:
    table = app.query_one(DataTable)
    headings = [str(c.label).rstrip(" ▲▼") for c in table.columns.values()]
    return headings, [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.fixture
def three(tmp_path: Path) -> Path:
    write_run(tmp_path / "a", lr=1e-3, best=1.9)
    write_run(tmp_path / "b", lr=3e-4, best=1.7, steps=200, sample="[bold]not markup[/bold]")
    write_run(tmp_path / "c", lr=1e-3, best=2.1, steps=50)
    return tmp_path


async def test_the_table_has_the_settings_that_differ_and_sorts_and_filters(three: Path) -> None:
    app = RunsApp(three)
    async with app.run_test(size=(120, 30)) as pilot:
        await _loaded(app, pilot)
        headings, rows = _table(app)
        assert headings[:7] == ["", "run", "state", "step", "best val", "time", "text"]
        assert "lr" in headings and "max iters" not in headings  # lr differs; dropout, batch do not
        assert "dropout" not in headings and "batch" not in headings and "forked from" not in headings
        assert [r[1] for r in rows] == ["a", "b", "c"]
        assert rows[1][headings.index("lr")] == "0.0003" and rows[1][headings.index("step")] == "200/200"
        # sort: s moves to the next column; S reverses
        while app.state.sort_key != "best":
            await pilot.press("s")
        assert [r[1] for r in _table(app)[1]] == ["b", "a", "c"]
        await pilot.press("S")
        assert [r[1] for r in _table(app)[1]] == ["c", "a", "b"]
        # filter by typing: / then words any cell holds
        await pilot.press("slash", *"0.001")
        assert sorted(r[1] for r in _table(app)[1]) == ["a", "c"]
        await pilot.press("enter")  # back to the table
        assert app.query_one(DataTable).has_focus


async def test_selected_runs_are_overlaid_with_a_colour_each(three: Path) -> None:
    app = RunsApp(three)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(app, pilot)
        chart = app.query_one(CompareChart)
        await pilot.press("space", "down", "space")
        await _until(pilot, lambda: {d[0] for d in chart.drawn} == {"a", "b"}, "two runs drawn")
        drawn = {(label, kind): (colour, xs, ys) for label, kind, colour, xs, ys in chart.drawn}
        assert set(drawn) == {("a", "train"), ("a", "val"), ("b", "train"), ("b", "val")}
        assert drawn["a", "train"][0] == PALETTE[0] and drawn["b", "train"][0] == PALETTE[1]
        assert drawn["b", "val"][1:] == ([100.0, 200.0], [1.9, 1.7])
        assert drawn["b", "train"][1][-1] == 200.0
        side = str(app.query_one("#compare-text").render())
        assert "lr" in side and "0.0003" in side  # the settings in which they differ
        assert "[bold]not markup[/bold]" in side  # b's latest sample, literally
        # the chart's cells: Braille dots in each run's colour
        cells = PlotCells.from_matrix(chart.plt.monitor.matrix) if chart.plt.monitor.matrix else None
        assert cells is not None
        coloured = {seg.style.color.number for seg in _segments(cells) if _braille(seg) and seg.style and
                    seg.style.color is not None}
        assert {PALETTE[0], PALETTE[1]} <= coloured
        # x by training time, log y
        await pilot.press("t")
        await _until(pilot, lambda: chart.by_time and chart.drawn, "time on x")
        drawn = {(label, kind): xs for label, kind, _, xs, _ in chart.drawn}
        assert drawn["b", "val"] == [50.0, 100.0]  # 0.5 s a step
        await pilot.press("l")
        assert chart.log_scale
        await pilot.press("v")
        assert {kind for _, kind, *_ in chart.drawn} == {"val"}
        # unselect one: it leaves the chart
        await pilot.press("space")
        await _until(pilot, lambda: {d[0] for d in chart.drawn} == {"a"}, "b gone from the chart")


def _segments(cells: PlotCells) -> list[Segment]:
    return [seg for line in cells.lines for seg in line]


def _braille(seg: Segment) -> bool:
    return any(0x2801 <= ord(ch) <= 0x28FF for ch in seg.text)


async def test_a_selected_run_stays_live(tmp_path: Path) -> None:
    run = write_run(tmp_path / "live", lr=1e-3, best=1.9)
    app = RunsApp(tmp_path, poll_s=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(app, pilot)
        await pilot.press("space")
        chart = app.query_one(CompareChart)
        await _until(pilot, lambda: chart.drawn, "drawn")
        log = MetricsLog(run / "metrics.jsonl")
        append_steps(log, 101, 150)
        log(ev.EvalDone(150, 75.0, 1.6, 1.5, 1.5, 150, True))
        log.close()
        await _until(pilot, lambda: any(kind == "val" and xs[-1] == 150.0 for _, kind, _, xs, _ in chart.drawn),
                     "the new evaluation drawn")
        assert _table(app)[1][0][3].startswith("150/")


async def test_the_table_stays_where_it_was_scrolled_as_runs_change(tmp_path: Path) -> None:
    """At 80 columns the table is wider than the screen: a run that trains on (read again every
    poll) must not throw it back to its left edge."""
    names = [f"tinyshakespeare-2026120{i}-101500" for i in range(3)]
    for name, lr, dropout in zip(names, (1e-3, 3e-4, 1e-4), (0.0, 0.1, 0.2)):
        write_run(tmp_path / name, lr=lr, best=1.9, dropout=dropout)
    app = RunsApp(tmp_path, poll_s=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(app, pilot)
        table = app.query_one(DataTable)
        assert table.virtual_size.width > 80
        await pilot.pause(0.2)  # the first table drawn

        def scrolled() -> bool:
            table.scroll_to(x=12, animate=False)
            return table.scroll_x == 12

        await _until(pilot, scrolled, "scrolled")
        log = MetricsLog(tmp_path / names[0] / "metrics.jsonl")
        append_steps(log, 101, 120)
        log.close()
        await _until(pilot, lambda: _table(app)[1][0][3].startswith("120/"), "the new step shown")
        await pilot.pause(0.3)
        assert table.scroll_x == 12
        # a run appearing changes the rows: the table is built anew, still where it was
        write_run(tmp_path / "d", lr=1e-3, best=2.0)
        await _until(pilot, lambda: table.row_count == 4, "the new run listed")
        await pilot.pause(0.3)
        assert table.scroll_x == 12


async def test_names_and_samples_from_disk_are_literal(tmp_path: Path) -> None:
    write_run(tmp_path / "[bold]x[i]", lr=1e-3, best=1.9, sample="[/]")
    app = RunsApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, pilot)
        assert _table(app)[1][0][1] == "[bold]x[i]"
        await pilot.press("space")
        await _until(pilot, lambda: "[/]" in str(app.query_one("#compare-text").render()), "the sample shown")
        assert "[bold]x[i]" in str(app.query_one("#compare-text").render())
        await pilot.press("enter")
    assert app.return_value == str(tmp_path / "[bold]x[i]")  # Enter: open it


async def test_generate_and_fork_from_the_table(tmp_path: Path) -> None:
    text = tmp_path / "tiny.txt"
    text.write_text(make_text(), encoding="utf-8")
    parent = tmp_path / "runs" / "parent"
    assert main([str(text), *TINY_FLAGS, "--headless", "--out-dir", str(parent)]) == 0
    app = RunsApp(parent.parent, poll_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, pilot)
        await pilot.press("g")
        assert isinstance(app.screen, GenerateScreen)
        await pilot.press("enter")
        await _until(pilot, lambda: len(app.screen.generated) >= 300, "text generated from best.pt")
        await pilot.press("escape")
        await pilot.press("f")
        assert isinstance(app.screen, ForkScreen)
        form = app.screen
        form.query_one("#fork-learning_rate").value = "0.005"
        form.query_one("#fork-max_iters").value = "26"
        await pilot.press("enter")
        await _until(pilot, lambda: len(app.rows) == 2 and all(
            r.summary.state == "finished" for r in app.rows.values()), "the fork trained")
        (child,) = [r for r in app.rows.values() if r.name != "parent"]
        assert child.parent is not None and child.parent.name == "parent" and child.parent.iter == 20
        assert child.setting("train", "learning_rate") == 0.005
        headings, rows = _table(app)
        assert rows[[r[1] for r in rows].index(child.name)][headings.index("forked from")] == "parent @20"
        # overlaid, the child's curve starts at the parent's step
        await pilot.press("space", "down", "space")
        chart = app.query_one(CompareChart)
        await _until(pilot, lambda: len({d[0] for d in chart.drawn}) == 2, "both drawn")
        child_train = next(xs for label, kind, _, xs, _ in chart.drawn if label == child.name and kind == "train")
        child_val = next(xs for label, kind, _, xs, _ in chart.drawn if label == child.name and kind == "val")
        assert child_train[0] == 21 and child_val[0] == 20


async def test_the_fork_form_names_the_latest_checkpoints_own_step(tmp_path: Path) -> None:
    """A run that crashed at step 771 with its latest checkpoint at 500: the form says 500, and a
    fork of it may train to 600."""
    run = tmp_path / "crashed"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"max_iters": 2000, "learning_rate": 1e-3},
                                                 "corpus": {"name": "tiny.txt"}}))
    log = MetricsLog(run / "metrics.jsonl")
    log(ev.RunStarted(0, 0.0, 2000, 1000, 3, "tiny.txt", 5000, "cpu", "CPU", "float32", 1, "2", None, False, 0.0))
    append_steps(log, 1, 500)
    log(ev.EvalDone(500, 250.0, 2.0, 2.1, 2.1, 500, True))
    log(ev.CheckpointSaved(500, 250.0, str(run / "ckpt.pt"), "eval", True))
    append_steps(log, 501, 771)
    log.close()
    (run / "ckpt.pt").write_bytes(b"(the form reads no checkpoint)")
    app = RunsApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, pilot)
        await pilot.press("f")
        form = app.screen
        assert isinstance(form, ForkScreen)
        form.query_one("#fork-from").value = "latest"
        await pilot.pause()
        assert "latest checkpoint (step 500)" in str(form.query_one("#fork-from SelectCurrent #label").render())
        form.query_one("#fork-max_iters").value = "600"
        flags, problem = form.flags()
        assert problem == "" and "--max-iters" in flags
        form.query_one("#fork-max_iters").value = "450"
        assert form.flags()[1] == "max iters: must be above the checkpoint's step (500)"


def test_the_latest_checkpoint_is_looked_for_in_the_end_of_the_log_only(tmp_path: Path) -> None:
    """The form opens on the app's thread: a log with no checkpoint record near its end is not
    read back to its start."""
    from chargpt_tui.wire.runs import latest_checkpoint_iter

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log(ev.CheckpointSaved(10, 5.0, str(tmp_path / "ckpt.pt"), "eval", False))
    append_steps(log, 11, 400)
    log.close()
    assert latest_checkpoint_iter(tmp_path) == 10
    assert latest_checkpoint_iter(tmp_path, chunk=1024, most=4096) is None


# ---- the dashboard's c: other runs of the same text on its chart ---------------------------------
async def test_c_overlays_other_runs_of_the_same_text_on_the_dashboards_chart(tmp_path: Path) -> None:
    from textual.widgets import SelectionList

    from chargpt_tui.dashboard.app import ChargptApp
    from chargpt_tui.dashboard.screens.overlay_picker import OverlayPicker
    from chargpt_tui.dashboard.widgets.loss_chart import OVERLAY_COLOURS
    from chargpt_tui.wire.run_link import RunOnDisk

    own = write_run(tmp_path / "own", lr=1e-3, best=1.9)
    write_run(tmp_path / "[bold]other", lr=3e-4, best=1.7, steps=200, offset=0.5)
    other_text = write_run(tmp_path / "elsewhere", lr=1e-3, best=1.8)
    config = json.loads((other_text / "config.json").read_text())
    config["corpus"]["name"] = "data/another.txt"
    (other_text / "config.json").write_text(json.dumps(config))
    app = ChargptApp(RunOnDisk(own))
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.caught_up and app.chart.points, "the run drawn")
        await pilot.press("c")
        await _until(pilot, lambda: isinstance(app.screen, OverlayPicker), "the picker")
        listed = app.screen.query_one(SelectionList)
        assert [listed.get_option_at_index(i).value for i in range(listed.option_count)] == [
            str(tmp_path / "[bold]other")]  # not itself, not a run of another text
        await pilot.press("space", "enter")
        chart = app.chart
        await _until(pilot, lambda: chart.overlays, "the overlay read")
        (overlay,) = chart.overlays
        assert overlay.name == "[bold]other" and overlay.colour == OVERLAY_COLOURS[0]
        assert overlay.val_iters == [100.0, 200.0] and overlay.iters[-1] == 200.0
        await _until(pilot, lambda: "[bold]other" in str(chart.border_subtitle), "its name under the chart")

        def painted() -> set[int]:  # the colours of the chart's dots, once it has painted
            cells = PlotCells.from_matrix(chart.plt.monitor.matrix)
            return {seg.style.color.number for seg in _segments(cells) if _braille(seg) and seg.style and
                    seg.style.color is not None and seg.style.color.number is not None}

        await _until(pilot, lambda: OVERLAY_COLOURS[0] in painted(), "the overlay painted in its colour")


def test_c_offers_a_forks_parent_and_its_forks_from_inside_the_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started as `chargpt-tui text.txt` names its text so; its forks and resumed runs name
    it by the absolute path config.json also records. And a dashboard attached as `.` from
    inside the run looks beside it, not inside it."""
    from chargpt_tui.dashboard.overlays import Overlays

    def text_of(run: Path, name: str, path: str | None) -> None:
        config = json.loads((run / "config.json").read_text())
        config["corpus"] = {"name": name, **({"path": path} if path else {})}
        (run / "config.json").write_text(json.dumps(config))

    base, fork, old, other = (write_run(tmp_path / n, lr=1e-3, best=1.9) for n in ("base", "fork", "old", "other"))
    text_of(base, "text.txt", "/data/text.txt")
    text_of(fork, "/data/text.txt", "/data/text.txt")
    text_of(old, "data/text.txt", None)  # written before config.json had the path
    text_of(other, "another.txt", "/data/another.txt")

    class App:
        def call_from_thread(self, f, rows) -> None:  # noqa: ANN001
            self.offered = sorted(Path(r.path).name for r in rows)

    app = App()
    Overlays(app, None)._candidates(base)
    assert app.offered == ["fork", "old"]
    monkeypatch.chdir(fork)
    Overlays(app, None)._candidates(Path("."))
    assert app.offered == ["base", "old"]


def test_the_optimizer_is_a_setting_that_can_differ(tmp_path: Path) -> None:
    from chargpt_tui.wire.run_table import differing, read_rows

    write_run(tmp_path / "a", lr=1e-3, best=1.9)
    muon = write_run(tmp_path / "b", lr=1e-3, best=1.8)
    config = json.loads((muon / "config.json").read_text())
    config["train"].update(optimizer="muon", muon_lr=0.02)
    (muon / "config.json").write_text(json.dumps(config))
    assert ("train.optimizer", "optimizer") in differing(read_rows(tmp_path))
