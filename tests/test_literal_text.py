"""Text from outside (paths, names, samples, prompts, errors) is shown as it is, never read as
Rich markup: a run directory and a text named with brackets crashed the dashboard with a
MarkupError, and `[enforce fail at ...]` vanished from a PyTorch error. And harmlessly: a run
whose folder name, config.json, metrics.jsonl and samples hold markup and terminal control
sequences (a corpus with ANSI colour codes makes a model that generates ESC; a folder can be
named anything) neither crashes a viewer nor sends a control character to the terminal: on the
dashboard, in the runs browser, and in `runs --plain`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import app_until, make_text, tiny_configs
from serving import ServedRun
from textual.app import App

from chargpt_tui.commands.cli import main
from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.format import CONTROL
from chargpt_tui.runs_browser.app import RunsApp
from chargpt_tui.wire.run_link import RunOnDisk
from model import events as ev
from model.data import Corpus
from model.rundir import MetricsLog, RunDir
from model.trainer import Trainer

ODD = "odd[/b]"
ERROR = "[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory [/]"



async def test_names_samples_and_errors_with_brackets_are_shown_literally(tmp_path: Path) -> None:
    folder = tmp_path / ODD
    folder.mkdir(parents=True)  # (odd[ and b] inside it: the path reads odd[/b]/...)
    text = folder / "t[red].txt"
    text.write_text(make_text() + "[b]bold?[/b] [link=x]", encoding="utf-8")
    corpus = Corpus.from_file(text)
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=1_000_000)
    run_dir = RunDir(folder / "run[red]")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    with ServedRun(trainer) as run:
        app = ChargptApp(run.client())
        async with app.run_test(size=(120, 40)) as pilot:
            await app_until(pilot, lambda: app.caught_up and app.progress.iter >= 2)
            for event in (ev.Warning(3, 1.0, ERROR), ev.Hint(3, 1.0, "try [b]this[/b]"),
                          ev.SampleGenerated(3, 1.0, "[red]not red[/red] [/]"),
                          ev.CheckpointFailed(3, 1.0, str(run_dir.path / "ckpt.pt"), "[Errno 28] [/b]no space"),
                          ev.Diverged(4, 1.0, f"the loss became nan {ERROR}", str(run_dir.path / "ckpt.pt"), 0),
                          ev.Failed(5, 2.0, ERROR)):
                run.server(event)  # as the trainer reports them, to every viewer
            await app_until(pilot, lambda: app.state == "failed")
            await pilot.pause(0.3)
            shown = "".join(line.text for line in app.messages.lines)
            for literal in ("[enforce fail at alloc_cpu.cpp:117]", "[/]", "try [b]this[/b]", "[Errno 28] [/b]no space",
                            f"{ODD}/run[red]"):
                assert literal in shown, (literal, shown)
            assert "[red]not red[/red] [/]" in "".join(line.text for line in app.samples.lines)
            assert ERROR in app.status.detail
            screen = app.screen.render()  # the whole screen draws (a MarkupError would have ended the app)
            assert screen is not None and app.is_running
            await pilot.press("q")
        run.trainer.steering.stop()
        time.sleep(0)


# retitles the window, clears the screen, writes the clipboard (OSC 52), a C1 CSI; and markup
HOSTILE = "x\x1b]0;PWNED\x07\x1b[2J\x1b]52;c;aGk=\x1b\\\x9b31m[/][bold]y[@click=app.quit]z[/]"
FOLDER = "run" + HOSTILE.replace("/", "")  # a folder's name can hold all of it but the slash


def hostile_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "model": {"n_layers": 1, "n_embed": 32, "dropout": 0.0},
        "train": {"max_iters": 20, "learning_rate": 1e-3, "batch_size": 8, "seed": 1},
        "corpus": {"name": HOSTILE}, "vocab": "abc", "preset": HOSTILE,
    }))
    log = MetricsLog(path / "metrics.jsonl")
    log(ev.RunStarted(0, 0.0, 20, 1000, 3, HOSTILE, 5000, "cpu", HOSTILE, "float32", 1, HOSTILE, HOSTILE, False, 0.0))
    iters = tuple(range(1, 21))
    log(ev.StepsDone(20, 10.0, iters, tuple(3.0 - i / 100 for i in iters), 1e-3, 1000.0, 5.0))
    log(ev.EvalDone(20, 10.0, 2.9, 2.8, 2.8, 20, True))
    log(ev.SampleGenerated(20, 10.0, f"a sample\n{HOSTILE}\nend"))
    log(ev.Failed(20, 10.0, HOSTILE))
    log.close()
    return path


def screen_text(app: App) -> str:
    """Every character the screen sends to the terminal, as text (styles and Textual's own
    cursor movements aside), its lines one after another."""
    strips = app.screen._compositor.render_strips()
    return "".join("".join(seg.text for seg in strip if not seg.control) for strip in strips)


async def test_the_dashboard_of_a_hostile_run_shows_it_literally(tmp_path: Path) -> None:
    run = hostile_run(tmp_path / FOLDER)
    app = ChargptApp(RunOnDisk(run), read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await app_until(pilot, lambda: app.caught_up and app.chart.points)
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert not CONTROL.search(shown), repr(CONTROL.findall(shown))
        assert "[/][bold]y[@click=app.quit]z[/]" in shown  # the markup as typed
        assert "torch x]0;PWNED" in shown  # the device panel's title, never parsed as markup
        assert app.is_running
        await pilot.press("q")


async def test_the_runs_browser_shows_a_hostile_run_literally(tmp_path: Path) -> None:
    hostile_run(tmp_path / FOLDER)
    app = RunsApp(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        await app_until(pilot, lambda: app.loaded)
        await pilot.press("space")  # selected: its curves and its latest sample beside the table
        await app_until(pilot, lambda: "a sample" in screen_text(app))
        shown = screen_text(app)
        assert not CONTROL.search(shown), repr(CONTROL.findall(shown))
        assert "[/][bold]y" in shown and app.is_running
        await pilot.press("q")


def test_runs_plain_prints_control_characters_as_question_marks(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    hostile_run(tmp_path / FOLDER)
    assert main(["runs", str(tmp_path), "--plain"]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out.replace("\n", "")), repr(out)
    assert "runx?]0;PWNED??[2J" in out and "[][bold]y" in out  # as ls shows such a name
