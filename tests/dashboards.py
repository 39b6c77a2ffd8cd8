"""Dashboards on a served run, for the Pilot tests of the dashboard (tests/conftest.py makes
`served_dashboards` the `dashboard` fixture) and what they share."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from helpers import tiny_configs
from rich.console import Console
from serving import ServedRun
from textual.pilot import Pilot

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.dashboard.screens import GenerateScreen
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer

SIZE = (80, 24)
Dashboard = Callable[..., tuple[ChargptApp, ServedRun]]


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app process messages until condition holds (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def served_dashboards(corpus: Corpus, tmp_path: Path) -> Iterator[Dashboard]:
    """make(start=True, **train) -> (app, run): a dashboard attached to a served run. The run
    starts training at once unless start=False (then run.start() after changing the trainer)."""
    runs: list[ServedRun] = []

    def make(start: bool = True, **train: object) -> tuple[ChargptApp, ServedRun]:
        model_config, train_config = tiny_configs(corpus, **train)
        run_dir = RunDir(tmp_path / "run")
        run_dir.prepare()
        trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05,
                          on_divergence="pause")
        run = ServedRun(trainer, start=start, memory_interval_s=0.2, preset="test")
        runs.append(run)
        return ChargptApp(run.client()), run

    yield make
    for run in runs:
        run.close()


def rendered(widget: object) -> str:
    console = Console(width=60, record=True, file=io.StringIO())
    console.print(widget.render())  # type: ignore[attr-defined]
    return console.export_text()


async def open_prompt(pilot: Pilot, app: ChargptApp) -> GenerateScreen:
    """Once training is under way: g, and the generation prompt it opens."""
    await wait_for(pilot, lambda: app.progress.iter >= 2)
    await pilot.press("g")
    await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
    screen = app.screen
    assert isinstance(screen, GenerateScreen)
    return screen


def logged(app: ChargptApp, text: str) -> bool:
    """Whether the messages panel shows text, wherever its word wrap broke the lines (a wrap
    takes the space it breaks at, so spaces are left out of the comparison)."""
    shown = "".join(line.text for line in app.messages.lines)
    return text.replace(" ", "") in shown.replace(" ", "")
