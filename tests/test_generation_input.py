"""What the generation prompt and `sample` take: temperatures that sampling can use, and prompts
shown literally."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from helpers import one_clear_line, tiny_configs
from serving import ServedRun
from textual.widgets import Input, Static

from chargpt_tui.commands.cli import main
from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.dashboard.screens import GenerateScreen
from chargpt_tui.wire.run_link import RunOnDisk
from model.data import Corpus
from model.gpt import sample_next
from model.rundir import RunDir
from model.trainer import Trainer


@pytest.fixture
def finished_run(corpus: Corpus, tmp_path: Path) -> Path:
    model_config, train_config = tiny_configs(corpus, max_iters=4, eval_interval=4, sample_interval=4)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    with ServedRun(Trainer(corpus, model_config, train_config, run_dir=run_dir)) as run:  # as a training process
        run.thread.join(timeout=60)
    return run_dir.path


def test_sampling_refuses_a_temperature_that_overflows() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="temperature must be 0"):
        sample_next(logits, 1e-45)  # logits / 1e-45: inf, then NaN probabilities
    assert sample_next(logits, 0.01).item() == 2 and sample_next(logits, 0).item() == 2


def test_sample_says_which_temperatures_it_takes(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(finished_run / "ckpt.pt"), "--temperature", "1e-45"])
    assert exit_.value.code == 2
    one_clear_line(capsys.readouterr().err, "--temperature", "from 0.01 to 100")


async def test_the_prompt_refuses_such_a_temperature_with_a_line_and_shows_the_prompt_literally(
        finished_run: Path) -> None:
    app = ChargptApp(RunOnDisk(finished_run))
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(500):
            if app.caught_up:
                break
            await pilot.pause(0.02)
        await pilot.press("g")
        for _ in range(500):
            if isinstance(app.screen, GenerateScreen):
                break
            await pilot.pause(0.02)
        screen = app.screen
        assert isinstance(screen, GenerateScreen)
        screen.query_one("#temperature", Input).value = "1e-45"
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        problem = str(screen.query_one("#generate-problem", Static).render())
        assert "temperature must be 0" in problem and screen.generated == ""
        # characters the model does not know, markup among them: named as they are, no MarkupError
        screen.query_one("#temperature", Input).value = "0.8"
        screen.query_one("#prompt", Input).value = "[/b][red]"
        await pilot.press("enter")
        await pilot.pause(0.1)
        problem = str(screen.query_one("#generate-problem", Static).render())
        assert "not in the vocabulary" in problem and "'['" in problem and "']'" in problem
        await pilot.press("escape")
        await asyncio.sleep(0)
        await pilot.press("q")
