"""The dashboard's keys and layout, driven with Textual's Pilot at 80x24 on a tiny model and a
generated text. The run trains in a thread of the test's process and is served on a real Unix
socket (tests/serving.py): each dashboard is a viewer attached to it, as to a training process
(the `dashboard` fixture, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from dashboards import SIZE, Dashboard, logged, open_prompt, rendered, wait_for
from textual.geometry import Region
from textual.widgets import Input
from textual.worker import WorkerState

from chargpt_tui.dashboard.leaving import DETACHED
from chargpt_tui.dashboard.screens import GenerateScreen, HelpScreen, QuitScreen
from model.checkpoint import load_checkpoint
from model.data import Corpus
from model.gpt import GPT


async def test_panels_fill_and_the_chart_receives_points(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=40, eval_interval=20, sample_interval=20)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        await wait_for(pilot, lambda: app.chart.redraws >= 2 and "RSS" in rendered(app.device_panel))
        assert len(app.chart.raw) == 40 and len(app.chart.evals) == 3
        assert app.samples.latest_iter == 40
        assert app.progress.iter == 40
        assert app.device_panel.tokens_per_s > 0
        device_text = rendered(app.device_panel)
        assert "tok/s" in device_text and "float32" in device_text
        progress_text = rendered(app.progress)
        assert "100%" in progress_text and "step 40 / 40" in progress_text and "elapsed" in progress_text
        assert "best val" in app.status.detail
        # every panel is on screen at 80x24
        for widget in (app.chart, app.device_panel, app.progress, app.samples, app.messages):
            region = widget.region
            assert region.width > 0 and region.height > 0
            assert region.right <= SIZE[0] and region.bottom <= SIZE[1]
        # the keys that zoom and pan the chart's iterations
        await pilot.press("plus")
        assert app.chart.window.span(app.chart.last_iter) == (20.0, 40.0)
        await pilot.press("left_square_bracket")
        assert app.chart.window.span(app.chart.last_iter) == (10.0, 30.0)
        await pilot.press("right_square_bracket", "minus")
        assert not app.chart.window.zoomed
        await pilot.press("plus", "0")
        assert not app.chart.window.zoomed


async def test_pause_stops_training_and_resume_continues(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 3)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.state == "paused")
        paused_at = run.trainer.iter
        await pilot.pause(1.0)  # a second of a paused run: no step trained
        assert run.trainer.iter == paused_at and run.trainer.steering.paused
        # an evaluation while paused comes and goes; the step count does not move
        evals = len(app.chart.evals)
        await pilot.press("e")
        await wait_for(pilot, lambda: len(app.chart.evals) == evals + 1)
        assert run.trainer.iter == paused_at and app.state == "paused"
        await pilot.press("p")
        await wait_for(pilot, lambda: run.trainer.iter > paused_at + 2)
        await wait_for(pilot, lambda: app.state == "training")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.state == "paused")


async def test_the_footer_relabels_its_keys_in_place_on_pause_and_resume(dashboard: Dashboard) -> None:
    from textual.widgets._footer import FooterKey

    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 3 and app.state == "training")
        await pilot.pause(0.5)

        def footer() -> tuple[list[FooterKey], list[str]]:
            keys = list(app.query(FooterKey))
            return keys, [k.description for k in keys if k.display]

        keys, labels = footer()
        assert "Pause" in labels and "Resume" not in labels
        await pilot.press("p")
        await wait_for(pilot, lambda: "Resume" in footer()[1])
        assert footer()[0] == keys  # the same widgets, relabelled: none removed or mounted
        assert next(k for k in footer()[0] if k.description == "Resume").action == "resume"
        await pilot.press("p")
        await wait_for(pilot, lambda: "Pause" in footer()[1] and app.state == "training")
        assert footer()[0] == keys
        pause = next(k for k in footer()[0] if k.action == "pause")
        assert "Pause" in str(pause.render()) and pause.region.width >= len(" space Pause")  # drawn, and laid out


async def test_s_writes_a_checkpoint_that_loads(dashboard: Dashboard, tmp_path: Path) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    ckpt = tmp_path / "run" / "ckpt.pt"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        ckpt.unlink()  # the evaluation at step 0 wrote one already
        await pilot.press("s")
        await wait_for(pilot, lambda: logged(app, "saved") and ckpt.exists())
        state = load_checkpoint(ckpt)
        assert state["iter"] >= 5


async def test_g_streams_generated_text_into_the_modal(dashboard: Dashboard, corpus: Corpus) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_prompt(pilot, app)
        await pilot.press("T", "h", "e", " ")
        screen.query_one("#max-tokens", Input).value = "40"
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.generated) == 40)
        assert set(screen.generated) <= set(corpus.tokenizer.chars)
        assert run.trainer.iter > 2  # training went on
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


async def test_escape_stops_a_generation_in_progress(dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    yielded: list[int] = []  # every character the prompt's generation produces, on its thread
    original = GPT.generate_stream

    def counted(self: GPT, idx: object, max_new_tokens: int, *args: object, **kwargs: object):  # noqa: ANN202
        for next_id in original(self, idx, max_new_tokens, *args, **kwargs):  # type: ignore[arg-type]
            if max_new_tokens == 1_000_000:  # not the training's own periodic samples
                yielded.append(1)
            yield next_id

    monkeypatch.setattr(GPT, "generate_stream", counted)
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_prompt(pilot, app)
        screen.query_one("#max-tokens", Input).value = "1000000"  # minutes of text
        screen.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.generated) >= 20)
        generating = [w for w in app.workers if w.group == "generate"]
        assert generating and not any(w.is_finished for w in generating)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, GenerateScreen))
        assert all(w.state == WorkerState.CANCELLED for w in generating)
        # the thread notices at its next character: after that, the model produces no more
        await pilot.pause(0.5)
        stopped_at = len(yielded)
        await pilot.pause(1.0)
        assert len(yielded) == stopped_at < 1_000_000


async def test_q_asks_first_then_stops_the_run_with_a_checkpoint(dashboard: Dashboard, tmp_path: Path) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")  # cancelled: nothing changes
        await wait_for(pilot, lambda: not isinstance(app.screen, QuitScreen))
        at = run.trainer.iter
        await wait_for(pilot, lambda: run.trainer.iter > at)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("q")
        await wait_for(pilot, lambda: run.result is not None)
    assert app.return_value == 0
    assert app.ended is not None and app.ended.status == "stopped"
    assert run.result is not None and run.result.status == "stopped"
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["iter"] == run.result.iter


async def test_d_detaches_and_training_goes_on(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("d")  # from the question, as from the dashboard
    assert app.leaving.outcome == DETACHED and app.return_value == 0
    at = run.trainer.iter
    deadline = asyncio.get_running_loop().time() + 30
    while run.trainer.iter < at + 20:
        assert asyncio.get_running_loop().time() < deadline, "training did not go on"
        await asyncio.sleep(0.05)
    assert run.result is None and not run.trainer.steering.stop_requested


async def test_ctrl_q_stops_without_asking(dashboard: Dashboard) -> None:
    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.progress.iter >= 5)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: run.result is not None)
    assert run.result is not None and run.result.status == "stopped"
    assert app.ended is not None


async def test_finished_app_stays_usable(dashboard: Dashboard, tmp_path: Path) -> None:
    app, run = dashboard(max_iters=10, eval_interval=10)
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
        await pilot.press("q")  # a finished run: no question
    assert app.return_value == 0


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_layout_fits(dashboard: Dashboard, size: tuple[int, int]) -> None:
    app, run = dashboard(max_iters=5, eval_interval=5)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.state == "finished")
        assert app.chart.region.height >= 10 and app.samples.region.height >= 5
        assert app.chart.region.width >= size[0] // 2
        # the device panel names a CPU readably: without the vendor noise that cut it before
        panel = app.device_panel
        panel.set_device("Intel(R) Xeon(R) Processor @ 2.30GHz (2 cores)", "float32", 2, "2.13.0+cpu",
                         "auto (no bf16)")
        await pilot.pause()
        shown = "\n".join(strip.text for strip in panel.render_lines(Region(0, 0, *panel.region.size)))
        assert "Intel Xeon (2 cores)" in shown and "float32 · auto (no bf16)" in shown, shown
        # a name too long for the panel ends in an ellipsis on its one line; the panel keeps its height
        height = panel.region.height
        panel.set_device("An Imaginary Accelerator With A Name Far Too Long For Any Panel (2 cores)", "float32", 2,
                         "2.13.0+cpu", "auto (no bf16)")
        await pilot.pause()
        lines = [strip.text for strip in panel.render_lines(Region(0, 0, *panel.region.size))]
        assert panel.region.height == height
        assert any(line.rstrip(" │").endswith("…") and "device  An Imaginary" in line for line in lines), lines
        # the threads, and why that many (model/cpu_threads.py), as they change
        panel.set_threads(1, "1 of 2 cores busy")
        await pilot.pause()
        shown = "\n".join(strip.text for strip in panel.render_lines(Region(0, 0, *panel.region.size)))
        assert "threads 1 · 1 of 2 cores busy" in shown and panel.region.height == height, shown
        panel.set_preset("cpu", "the CPU default")  # a run started without --preset on a CPU
        await pilot.pause()
        shown = "\n".join(strip.text for strip in panel.render_lines(Region(0, 0, *panel.region.size)))
        assert "preset  cpu · the CPU default" in shown and panel.region.height == height, shown


async def test_opening_the_prompt_again_and_again_does_not_leak_footer_keys(dashboard: Dashboard) -> None:
    from textual.widgets._footer import FooterKey

    def footer_keys() -> tuple[int, int]:
        gc.unfreeze()  # the dashboard froze the heap once up (keys made before are out of gc's sight)
        gc.collect()
        keys = [o for o in gc.get_objects() if type(o) is FooterKey]
        return len(keys), sum(1 for k in keys if k.is_attached)

    app, run = dashboard(max_iters=1_000_000, eval_interval=1_000_000)
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
    # the footer's current keys, and perhaps a set being replaced; not 40 sets
    assert attached > 0 and alive <= 3 * attached, (alive, attached)
