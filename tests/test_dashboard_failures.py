"""The dashboard when things go wrong or change under it, with Pilot: an error in the training
loop, a loss that is not finite, a failed save, a viewer cut off or late, a run whose process
ends while watched, a run not running, a resumed run's history (the `dashboard` fixture,
tests/conftest.py)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from dashboards import SIZE, Dashboard, logged, wait_for
from helpers import tiny_configs
from serving import ServedRun
from textual.widgets import Input

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.dashboard.screens import GenerateScreen
from chargpt_tui.wire.run_link import RunOnDisk
from model import checkpointing as checkpointing_module
from model import events as ev
from model.checkpoint import load_checkpoint
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


async def test_resume_redraws_the_chart_history(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10)
    first = RunDir(tmp_path / "first")
    first.prepare()
    Trainer(corpus, model_config, train_config, run_dir=first).run()
    state = load_checkpoint(first.ckpt_path)
    train_config = type(train_config)(**{**train_config.__dict__, "max_iters": 30})
    trainer = Trainer(corpus, model_config, train_config, run_dir=first, resume=state)
    with ServedRun(trainer) as run:
        app = ChargptApp(run.client())
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.state == "finished")
            assert [e[0] for e in app.chart.evals] == [0, 10, 20, 30]
            assert len(app.chart.raw) == 30


async def test_an_error_in_the_training_loop_is_shown_and_the_app_stays_open(dashboard: Dashboard,
                                                                             tmp_path: Path) -> None:
    app, run = dashboard(start=False, max_iters=40, eval_interval=10)
    step = run.trainer.train_step

    def broken_step(it: int) -> None:
        if it == 15:
            raise RuntimeError("simulated bug in step 15")
        step(it)

    run.trainer.train_step = broken_step  # type: ignore[method-assign]
    run.start()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "failed")
        assert logged(app, "simulated bug in step 15")
        assert "simulated bug in step 15" in str(app.status.detail)
        await pilot.press("s")  # refused: the last good checkpoint stays as it is
        await pilot.press("g")  # the model can still be prompted
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        await pilot.press("escape")
        assert app.is_running
        await pilot.press("q")
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 10
    assert run.result is not None and run.result.status == "failed"


async def test_a_nan_loss_holds_the_dashboard_paused_and_saves_nothing(dashboard: Dashboard, tmp_path: Path) -> None:
    app, run = dashboard(start=False, max_iters=1000, eval_interval=10)
    trainer = run.trainer

    def poison(event: ev.Event) -> None:  # runs in the training thread, between steps
        if isinstance(event, ev.CheckpointSaved) and event.iter == 20:
            with torch.no_grad():
                trainer.model.lm_head.weight.fill_(float("nan"))

    trainer.add_listener(poison)
    run.start()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: trainer.divergence.message is not None and app.state == "paused" and app.diverged)
        assert logged(app, "nan") and logged(app, "ckpt.pt (step 20) is kept")
        held_at = trainer.iter
        await pilot.press("space")  # resuming is refused: these weights cannot be trained on
        await pilot.press("s")
        await wait_for(pilot, lambda: logged(app, "not saved"))
        assert app.state == "paused" and trainer.steering.paused and trainer.iter == held_at
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: run.result is not None)
    assert run.result is not None and run.result.status == "failed"
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 20


async def test_a_failed_save_is_reported_and_training_goes_on(dashboard: Dashboard, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = checkpointing_module.save_checkpoint
    calls = []

    def disk_full_after_the_first(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpointing_module, "save_checkpoint", disk_full_after_the_first)
    app, run = dashboard(max_iters=30, eval_interval=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        assert logged(app, "could not save") and logged(app, "No space left on device")
        assert app.progress.iter == 30
    assert len(calls) == 4
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == 0


async def test_a_late_viewer_sees_the_history_and_every_viewer_sees_a_pause(dashboard: Dashboard) -> None:
    first, run = dashboard(max_iters=1_000_000, eval_interval=50, sample_interval=50)
    async with first.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: first.progress.iter >= 120 and len(first.chart.evals) >= 3)
        second = ChargptApp(run.client())
        async with second.run_test(size=SIZE) as pilot2:
            await wait_for(pilot2, lambda: second.caught_up and second.progress.iter >= 120)
            # the whole history, the evaluations, the samples and the messages, then live
            assert len(second.chart.raw) >= 120 and len(second.chart.evals) >= 3
            assert second.samples.latest_iter is not None and second.samples.latest_iter >= 100
            assert logged(second, "step 50: train") and logged(second, "attached at step")
            assert second.preset == "test"  # from the run, not the viewer
            await pilot2.press("p")  # a pause from one viewer shows on the other
            await wait_for(pilot, lambda: first.state == "paused" and first.pause_requested)
            await wait_for(pilot2, lambda: second.state == "paused")
            await pilot.press("p")  # and a resume the other way
            await wait_for(pilot2, lambda: second.state == "training")
            await pilot2.press("d")
        # the second viewer left; nothing changed for the first, or for the run
        at = run.trainer.iter
        await wait_for(pilot, lambda: first.progress.iter > at + 10)
        assert first.state in ("training", "evaluating") and run.result is None  # (an evaluation every 50 steps)


async def test_a_run_that_is_not_running_is_shown_as_it_was_left(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=30, eval_interval=10, sample_interval=10)
    run_dir = RunDir(tmp_path / "done")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    with ServedRun(trainer) as run:
        run.thread.join(timeout=60)
    app = ChargptApp(RunOnDisk(run_dir.path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.caught_up and "not running" in app.status.detail)
        assert len(app.chart.raw) == 30 and [e[0] for e in app.chart.evals] == [0, 10, 20, 30]
        assert app.state == "finished" and "not running" in app.status.detail
        assert app.samples.latest_iter == 30
        await pilot.press("p")  # nothing to steer: it says so, and never trains
        assert not app.pause_requested
        await pilot.press("g")  # generates from its ckpt.pt
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        screen = app.screen
        screen.query_one("#max-tokens", Input).value = "25"
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.generated) == 25)
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_value == 0


async def test_a_viewer_cut_off_attaches_again_and_redraws_the_same_state(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=30)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.caught_up and len(app.chart.evals) >= 2)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == "paused")
        points = len(app.chart.raw)
        loop = run.server._loop
        assert loop is not None
        for viewer in list(run.server.viewers.values()):  # as if it had fallen too far behind
            loop.call_soon_threadsafe(run.server._drop, viewer, True)
        await wait_for(pilot, lambda: logged(app, "attaching again"))
        await wait_for(pilot, lambda: app.caught_up and app._attaches == 2)
        assert len(app.chart.raw) == points and len(app.chart.evals) >= 2  # the history once, not twice
        assert app.state == "paused" and app.pause_requested  # the run is still paused: so says the screen
        await pilot.press("p")  # and it still steers the run
        await wait_for(pilot, lambda: not run.trainer.steering.paused and app.state == "training")


async def test_a_run_whose_process_ends_while_watched_is_shown_as_not_running(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=20, eval_interval=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.ended is not None and app.state == "finished")
        run.close()  # a headless run's process leaves when its training ends
        await wait_for(pilot, lambda: not app.live and "not running (finished)" in app.status.detail)
        assert not logged(app, "attaching again")
        await pilot.press("g")  # from its checkpoint now
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateScreen))
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_value == 0
