"""A dashboard that falls behind is cut off by the run, and attaches again by itself."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from helpers import app_until, tiny_configs
from serving import ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


async def test_a_viewer_that_stops_reading_is_cut_off_and_attaches_again_by_itself(corpus: Corpus,
                                                                                   tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=50, sample_interval=50)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.01)
    with ServedRun(trainer, socket_buffer_bytes=4096, stall_timeout_s=1.0) as run:
        client = run.client()
        reading = threading.Event()
        reading.set()
        notice = client._notice

        def slow_notice(frame: dict[str, Any], payload: bytes) -> Any:
            reading.wait()  # the viewer's reader stops taking frames: a frozen terminal, a stopped process
            return notice(frame, payload)

        client._notice = slow_notice  # type: ignore[method-assign]
        app = ChargptApp(client)
        async with app.run_test(size=(80, 24)) as pilot:
            await app_until(pilot, lambda: app.caught_up and app.progress.iter >= 20)
            reading.clear()
            await app_until(pilot, lambda: run.server.cut_off >= 1)
            assert not trainer.steering.paused  # training never waited for it
            reading.set()
            await app_until(pilot, lambda: app._attaches == 2 and app.caught_up)
            shown = " ".join(line.text for line in app.messages.lines)  # (wrapped at the panel's width)
            assert "attached at step" in shown, shown  # the history drawn anew
            at = trainer.iter
            await app_until(pilot, lambda: app.progress.iter > at)  # live again
            await pilot.press("ctrl+q")


async def test_a_viewer_of_a_killed_run_shows_it_not_running_within_3_s(corpus: Corpus, tmp_path: Path) -> None:
    """kill -9: the socket closes a moment before the kernel lets go of the lock. The viewer saw
    the lock held, tried to attach again, found nothing serving, and stayed on TRAINING with its
    clock ticking, for good (1 kill in 3). Here the socket goes first, the lock 0.3 s later."""
    import time

    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=1_000_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    run = ServedRun(trainer)
    try:
        app = ChargptApp(run.client())
        async with app.run_test(size=(80, 24)) as pilot:
            await app_until(pilot, lambda: app.caught_up and app.progress.iter >= 2 and app.state == "training")
            run.server.close()  # the process is gone: no "ended", no "bye", its socket and server.json with it
            died = time.monotonic()
            await asyncio.sleep(0.3)
            run.lock.release()  # ... and then its lock
            await app_until(pilot, lambda: not app.live and "not running" in app.status.detail, timeout=10)
            assert time.monotonic() - died < 3.0
            assert app.state == "crashed" and not app.progress.running
            await pilot.press("q")
    finally:
        trainer.steering.stop()
        run.thread.join(30)
        run.metrics.close()


async def test_attaching_again_backs_off_while_cut_off_again_soon(tmp_path: Path) -> None:
    """A viewer that is cut off again soon after it attached (it cannot keep up) waits twice as long
    each time before the next try, so that the run is not asked for its history every 0.5 s."""
    from chargpt_tui.dashboard import app as app_module
    from chargpt_tui.wire.notices import Disconnected
    from chargpt_tui.wire.run_link import RunOnDisk

    tried: list[float] = []

    class Link(RunOnDisk):
        def reconnect(self, first_delay_s: float = 0.5) -> None:
            tried.append(first_delay_s)

    app = ChargptApp(Link(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        app._attaches = 1  # the first cut-off: after half a second
        app._on_disconnected(Disconnected("cut off: too far behind", True))
        await app.workers.wait_for_complete()
        assert tried == [0.5]
        tried.clear()
        for _ in range(8):
            app._attaches, app._attached_at = 2, __import__("time").monotonic()  # as if it had just attached again
            app._on_disconnected(Disconnected("cut off: too far behind", True))
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        assert tried == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
        app._attached_at -= app_module.REATTACH_RESET_S + 1  # a long while after its last attach: from the start
        app._on_disconnected(Disconnected("cut off", True))
        await app.workers.wait_for_complete()
        assert tried[-1] == app_module.REATTACH_FIRST_S
