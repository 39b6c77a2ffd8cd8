"""Text from outside (paths, names, samples, prompts, errors) is shown as it is, never read as
Rich markup: a run directory and a text named with brackets crashed the dashboard with a
MarkupError, and `[enforce fail at ...]` vanished from a PyTorch error."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import app_until, make_text, tiny_configs
from serving import ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from model import events as ev
from model.data import Corpus
from model.rundir import RunDir
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
