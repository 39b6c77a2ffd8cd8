"""model/ is the core: importing it and training a step must not pull in the UI."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_training_a_step_leaves_textual_out() -> None:
    code = textwrap.dedent(
        """
        import sys
        import model
        from model.config import GPTConfig, TrainConfig
        from model.data import Corpus
        from model.trainer import Trainer

        corpus = Corpus.from_text("hello world, " * 200, "tiny")
        mc = GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embed=16, n_layers=1, n_heads=2)
        tc = TrainConfig(batch_size=2, max_iters=1, eval_interval=1, eval_iters=1, device="cpu")
        assert Trainer(corpus, mc, tc).run().status == "finished"
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_plotext", "chargpt_tui"))
        print(leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_viewer_never_loads_pytorch(tmp_path) -> None:  # noqa: ANN001
    """A dashboard attached to a run (here one read from disk, with its device panel, chart and
    samples drawn), and the runs browser comparing runs, start without PyTorch: importing it
    takes seconds and hundreds of MB."""
    from helpers import tiny_configs

    from model.data import Corpus
    from model.rundir import MetricsLog, RunDir
    from model.trainer import Trainer

    corpus = Corpus.from_text("hello world, " * 200, "tiny")
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, sample_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    metrics = MetricsLog(run_dir.metrics_path)
    trainer.add_listener(metrics)
    trainer.run()
    metrics.close()
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from chargpt_tui.dashboard.app import ChargptApp
        from chargpt_tui.wire.run_link import RunOnDisk

        async def main() -> None:
            app = ChargptApp(RunOnDisk(Path({str(run_dir.path)!r})))
            async with app.run_test(size=(80, 24)) as pilot:
                for _ in range(400):
                    await pilot.pause(0.05)
                    if app.caught_up and "not running" in app.status.detail and app.samples.latest_iter == 20:
                        break
                else:
                    raise SystemExit("the run was not drawn")
                await pilot.pause(0.5)

        async def browse() -> None:  # the runs browser, its table and the run's curves overlaid
            from chargpt_tui.runs_browser.app import RunsApp

            app = RunsApp(Path({str(tmp_path)!r}))
            async with app.run_test(size=(100, 30)) as pilot:
                for _ in range(400):
                    await pilot.pause(0.05)
                    if app.loaded:
                        break
                await pilot.press("space")
                for _ in range(400):
                    await pilot.pause(0.05)
                    if app.query_one("#compare-chart").drawn:
                        break
                else:
                    raise SystemExit("the run's curves were not drawn")

        asyncio.run(main())
        asyncio.run(browse())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
        print(loaded[:5])
        sys.exit(1 if loaded else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_host_process_never_loads_textual(tmp_path) -> None:  # noqa: ANN001
    """A run's host (here headless, through the command line, as `chargpt-tui TEXT` starts it)
    trains, saves and serves viewers without Textual: it would cost the run memory and start-up."""
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 200, encoding="utf-8")
    code = textwrap.dedent(
        f"""
        import sys
        from chargpt_tui.commands.cli import main

        status = main([{str(text)!r}, "--headless", "--n-embed", "16", "--n-layers", "1", "--n-heads", "2",
                       "--block-size", "8", "--batch-size", "2", "--max-iters", "2", "--eval-interval", "1",
                       "--eval-iters", "1", "--device", "cpu", "--out-dir", {str(tmp_path / "run")!r}])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_plotext", "textual_serve"))
        print(status, loaded[:5])
        sys.exit(1 if loaded or status else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "run" / "ckpt.pt").exists()
