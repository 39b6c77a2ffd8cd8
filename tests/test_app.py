"""The dashboard, driven with Textual's Pilot at 80x24 on a tiny model and a generated text."""

from __future__ import annotations

import asyncio
import errno
import gc
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import tiny_configs
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input

from chargpt_tui.app import ChargptApp
from chargpt_tui.screens import GenerateScreen, HelpScreen
from model import events as ev
from model import trainer as trainer_module
from model.checkpoint import load_checkpoint
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer

SIZE = (80, 24)


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app process messages until condition holds (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def make_app(corpus: Corpus, tmp_path: Path, **train: object) -> ChargptApp:
    model_config, train_config = tiny_configs(corpus, **train)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    return ChargptApp(trainer, preset="test")


def rendered(widget: object) -> str:
    console = Console(width=60, record=True, file=io.StringIO())
    console.print(widget.render())  # type: ignore[attr-defined]
    return console.export_text()


def log_text(app: ChargptApp) -> str:
    """The messages panel as one string, undoing its word wrap."""
    return "".join(line.text for line in app.messages.lines)


async def test_panels_fill_and_the_chart_receives_points(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=40, eval_interval=20, sample_interval=20)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        await wait_for(pilot, lambda: app.chart.redraws >= 2)
        assert len(app.chart.raw) == 40 and len(app.chart.evals) == 3
        assert app.samples.latest_iter == 40
        assert app.progress.iter == 40
        assert app.device_panel.tokens_per_s > 0
        device_text = rendered(app.device_panel)
        assert "tok/s" in device_text and "float32" in device_text and "RSS" in device_text
        progress_text = rendered(app.progress)
        assert "100%" in progress_text and "step 40 / 40" in progress_text and "elapsed" in progress_text
        assert "best val" in app.status.detail
        # every panel is on screen at 80x24
        for widget in (app.chart, app.device_panel, app.progress, app.samples, app.messages):
            region = widget.region
            assert region.width > 0 and region.height > 0
            assert region.right <= SIZE[0] and region.bottom <= SIZE[1]


async def test_pause_stops_training_and_resume_continues(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 3)
        await pilot.press("p")
        assert app.pause_requested
        await wait_for(pilot, lambda: app.state == "paused")
        paused_at = app.trainer.iter
        # an evaluation while paused comes and goes; the step count does not move
        evals = len(app.chart.evals)
        await pilot.press("e")
        await wait_for(pilot, lambda: len(app.chart.evals) == evals + 1)
        assert app.trainer.iter == paused_at and app.state == "paused"
        await pilot.press("p")
        await wait_for(pilot, lambda: app.trainer.iter > paused_at + 2)
        assert app.state == "training"
        await pilot.press("space")
        await wait_for(pilot, lambda: app.state == "paused")
        app.trainer.stop()


async def test_s_writes_a_checkpoint_that_loads(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=1_000_000, eval_interval=1_000_000)
    ckpt = tmp_path / "run" / "ckpt.pt"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        ckpt.unlink()  # the evaluation at step 0 wrote one already
        await pilot.press("s")
        await wait_for(pilot, lambda: "saved" in log_text(app) and ckpt.exists())
        state = load_checkpoint(ckpt)
        assert state["iter"] >= 5
        app.trainer.stop()


async def test_g_streams_generated_text_into_the_modal(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 2)
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        screen = app.screen
        assert isinstance(screen, GenerateScreen)
        await pilot.press("T", "h", "e", " ")
        screen.query_one("#max-tokens", Input).value = "40"
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.generated) == 40)
        assert set(screen.generated) <= set(corpus.tokenizer.chars)
        assert app.trainer.iter > 2  # training went on
        # characters outside the vocabulary are pointed out, not crashed on
        screen.query_one("#prompt", Input).value = "The €"
        problem = screen.query_one("#generate-problem")
        await wait_for(pilot, lambda: "not in the vocabulary: '€'" in str(problem.render()))
        await pilot.press("enter")
        assert len(screen.generated) == 40  # refused: nothing new was started
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, GenerateScreen))
        # opened again: the same screen, still generating from the model as it is now
        await pilot.press("g")
        await wait_for(pilot, lambda: app.screen is screen)
        screen.query_one("#prompt", Input).value = "The "
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.generated) == 40)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, GenerateScreen))
        app.trainer.stop()


async def test_q_saves_and_exits(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.result is not None)
    assert app.return_value == 0
    assert app.result is not None and app.result.status == "stopped"
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == app.result.iter


async def test_finished_app_stays_usable(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=10, eval_interval=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        screen = app.screen
        await pilot.press("a", "enter")
        await wait_for(pilot, lambda: len(screen.generated) == 300)
        await pilot.press("escape")
        (tmp_path / "run" / "ckpt.pt").unlink()
        await pilot.press("s")
        await wait_for(pilot, lambda: (tmp_path / "run" / "ckpt.pt").exists())
        assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 10
        await pilot.press("l")
        assert app.chart.log_scale
        await pilot.press("q")
    assert app.return_value == 0


async def test_resume_redraws_the_chart_history(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10)
    first = RunDir(tmp_path / "first")
    first.prepare()
    Trainer(corpus, model_config, train_config, run_dir=first).run()
    state = load_checkpoint(first.ckpt_path)
    train_config = type(train_config)(**{**train_config.__dict__, "max_iters": 30})
    trainer = Trainer(corpus, model_config, train_config, run_dir=first, resume=state)
    app = ChargptApp(trainer)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        assert [e[0] for e in app.chart.evals] == [0, 10, 20, 30]
        assert len(app.chart.raw) == 30


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_layout_fits(corpus: Corpus, tmp_path: Path, size: tuple[int, int]) -> None:
    app = make_app(corpus, tmp_path, max_iters=5, eval_interval=5)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        assert app.chart.region.height >= 10 and app.samples.region.height >= 5
        assert app.chart.region.width >= size[0] // 2


async def test_an_error_in_the_training_worker_is_shown_and_the_app_stays_open(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=40, eval_interval=10)
    step = app.trainer.train_step

    def broken_step(it: int) -> None:
        if it == 15:
            raise RuntimeError("simulated bug in step 15")
        step(it)

    app.trainer.train_step = broken_step  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "failed")
        assert "simulated bug in step 15" in log_text(app)
        assert "simulated bug in step 15" in str(app.status.detail)
        await pilot.press("s")  # refused: the last good checkpoint stays as it is
        await pilot.press("g")  # the model can still be prompted
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        await pilot.press("escape")
        assert app.is_running
        await pilot.press("q")
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 10
    assert app.result is not None and app.result.status == "failed"


async def test_a_nan_loss_holds_the_dashboard_paused_and_saves_nothing(corpus: Corpus, tmp_path: Path) -> None:
    app = make_app(corpus, tmp_path, max_iters=1000, eval_interval=10)

    def poison(event: ev.Event) -> None:  # runs in the training thread, between steps
        if isinstance(event, ev.CheckpointSaved) and event.iter == 20:
            with torch.no_grad():
                app.trainer.model.lm_head.weight.fill_(float("nan"))

    app.trainer.add_listener(poison)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.trainer.diverged is not None and app.state == "paused")
        assert "nan" in log_text(app) and "ckpt.pt (step 20) is kept" in log_text(app)
        held_at = app.trainer.iter
        await pilot.press("space")  # resuming is refused: these weights cannot be trained on
        await pilot.press("s")
        await wait_for(pilot, lambda: "not saved" in log_text(app))
        assert app.state == "paused" and app.trainer.paused and app.trainer.iter == held_at
        await pilot.press("q")
        await wait_for(pilot, lambda: app.result is not None)
    assert app.result is not None and app.result.status == "failed"
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 20


async def test_a_failed_save_is_reported_and_training_goes_on(corpus: Corpus, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = trainer_module.save_checkpoint
    calls = []

    def disk_full_after_the_first(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", disk_full_after_the_first)
    app = make_app(corpus, tmp_path, max_iters=30, eval_interval=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        assert "could not save" in log_text(app) and "No space left on device" in log_text(app)
        assert app.progress.iter == 30
    assert len(calls) == 4
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 0


async def test_opening_the_prompt_again_and_again_does_not_leak_footer_keys(corpus: Corpus, tmp_path: Path) -> None:
    from textual.widgets._footer import FooterKey

    def footer_keys() -> tuple[int, int]:
        gc.collect()
        keys = [o for o in gc.get_objects() if isinstance(o, FooterKey)]
        return len(keys), sum(1 for k in keys if k.is_attached)

    app = make_app(corpus, tmp_path, max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 1)
        await pilot.press("p")  # paused, so that Pilot's presses do not wait on a busy screen
        await wait_for(pilot, lambda: app.state == "paused")
        for _ in range(20):  # each one rebuilds the footer's keys twice
            await pilot.press("g")
            await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, GenerateScreen))
        await pilot.pause(0.1)
        alive, attached = footer_keys()
        app.trainer.stop()
    # the footer's current keys, and perhaps a set being replaced; not 40 sets
    assert attached > 0 and alive <= 3 * attached, (alive, attached)
