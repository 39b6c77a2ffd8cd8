"""The dashboard while the run evaluates: a pause asked for then holds within a batch and the
status says so; resumed, the evaluation goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import app_until, tiny_configs
from serving import ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


async def test_p_during_an_evaluation_pauses_it_and_the_status_says_so(corpus: Corpus, tmp_path: Path) -> None:
    # the evaluation at step 10: 2 x 5000 batches, minutes on a tiny model unless it holds (the
    # one at step 0 takes 10 batches of each split: Evaluator.batches)
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, eval_iters=5000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    with ServedRun(trainer) as run:
        app = ChargptApp(run.client())
        async with app.run_test(size=(80, 24)) as pilot:
            await app_until(pilot, lambda: app.state == "evaluating" and app.progress.iter == 10
                            and app.status.detail.startswith(("2", "3", "4")))
            await pilot.press("p")
            await app_until(pilot, lambda: app.state == "paused", timeout=10)
            assert "in its evaluation" in app.status.detail and app.status.state == "paused"
            held_at = app.progress.iter
            await asyncio.sleep(0.5)
            assert trainer.steering.paused and trainer.iter == held_at == 10
            await pilot.press("s")  # a save while held: the status still says where it holds
            await app_until(pilot, lambda: (run_dir.ckpt_path).exists() and app.state == "paused")
            await pilot.pause(0.2)
            assert app.status.detail == "at step 10, in its evaluation"
            await pilot.press("p")
            await app_until(pilot, lambda: app.state == "evaluating")
            assert not trainer.steering.paused
            await pilot.press("ctrl+q")
        run.trainer.steering.stop()
