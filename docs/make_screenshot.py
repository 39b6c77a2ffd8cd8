"""Regenerate docs/dashboard.svg: the dashboard after a few hundred steps of the cpu preset.

    python docs/make_screenshot.py TEXT [STEPS]     (tiny Shakespeare makes the README's picture)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from pathlib import Path

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.host.run_server import RunServer
from chargpt_tui.wire.run_link import RunClient
from chargpt_tui.wire.runtime import RunLock
from model.config import build_configs
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


async def main(text: str, steps: int) -> None:
    corpus = Corpus.from_file(text)
    model_config, train_config = build_configs("cpu", {"max_iters": 2000, "eval_interval": 100},
                                               corpus.tokenizer.vocab_size)
    run_dir = RunDir(Path(tempfile.mkdtemp()) / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.5)
    # as a training process does: hold the run's lock, serve it, train; the dashboard attaches
    lock = RunLock(run_dir.path)
    lock.acquire()
    server = RunServer(trainer, run_dir.path, lock, preset="cpu")
    trainer.add_listener(server)
    server.start()
    training = threading.Thread(target=trainer.run)
    training.start()
    client = RunClient(run_dir.path)
    client.connect()
    app = ChargptApp(client)
    async with app.run_test(size=(120, 36)) as pilot:
        while app.progress.iter < steps or app.samples.latest_iter is None:
            await pilot.pause(0.2)
        await pilot.pause(1.0)  # let the chart catch up with the last points
        app.save_screenshot("dashboard.svg", str(Path(__file__).parent))
    trainer.steering.stop()
    training.join()
    server.close()
    lock.release()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 600))
