"""The training process's figures over time (CPU use, RSS; GPU on CUDA): sampled by the process
whether watched or not, sent to a viewer as it attaches (the recent past) and live after, and
drawn as small charts in the device panel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from dashboards import SIZE, rendered, wait_for
from helpers import tiny_configs
from serving import ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.dashboard.widgets.device_panel import SPARKS, spark
from chargpt_tui.host.system_figures import SystemFigures
from chargpt_tui.wire.notices import MemoryReported
from chargpt_tui.wire.run_link import figures
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


def test_a_sample_is_the_process_cpu_use_and_memory_and_the_ring_is_bounded() -> None:
    def clocks() -> tuple[float, float]:
        times = os.times()  # every thread of this process, in ticks of 10 ms
        return time.monotonic(), times.user + times.system

    def use(since: tuple[float, float], until: tuple[float, float]) -> tuple[float, float]:
        """% of a core the process got between two readings, and how many % one tick is there."""
        wall = until[0] - since[0]
        return 100 * (until[1] - since[1]) / wall, 100 * 0.01 / wall

    system = SystemFigures(torch.device("cpu"), max_samples=5)
    start = clocks()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # a busy core for 0.2 s of CPU time
        pass
    sample = system.sample()
    after = clocks()
    busy, tick = use(start, after)
    # what the process got, however loaded the machine was (a fixed figure was not: a shared
    # 2-core machine can give the loop well under half a core)
    assert sample["cpu"] == pytest.approx(busy, abs=2 * tick)
    assert sample["rss"] > 10 << 20 and "gpu_util" not in sample
    time.sleep(0.2)
    asleep = system.sample()["cpu"]
    idle, tick = use(after, clocks())
    assert asleep == pytest.approx(idle, abs=2 * tick) and idle < busy
    for _ in range(10):
        system.sample()
    assert len(system.frame(history=True)["samples"]) == 5
    assert len(system.frame(history=False)["samples"]) == 1


def test_a_frame_from_outside_keeps_only_numbers_under_known_names() -> None:
    assert figures([{"t": 1, "cpu": 50.0, "rss": 2.0, "evil": 1, "gpu_mem": "x"}, "junk", 3]) == (
        {"t": 1.0, "cpu": 50.0, "rss": 2.0},)
    assert figures("not a list") == ()
    assert len(figures([{"cpu": 1.0}] * 10_000)) == 600


def test_spark_fits_its_width_and_scales_to_its_floor() -> None:
    assert spark([0.0, 50.0, 100.0], 10, floor=100.0) == SPARKS[0] + SPARKS[4] + SPARKS[-1]
    assert spark([10.0] * 100, 10, floor=100.0) == SPARKS[1] * 10  # 100 samples, 10 a cell
    assert spark([5.0, 10.0], 10) == SPARKS[4] + SPARKS[-1]  # no floor: to the largest


async def test_a_viewer_attaching_late_is_sent_the_recent_past_and_draws_it(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=100_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    with ServedRun(trainer, memory_interval_s=0.05) as run:
        deadline = time.monotonic() + 30
        while len(run.server.system.samples) < 10:  # sampled with no viewer attached
            assert time.monotonic() < deadline
            time.sleep(0.05)
        notices: list[object] = []
        client = run.client()
        client.start(notices.append)
        while len([n for n in notices if isinstance(n, MemoryReported)]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first, *live = [n for n in notices if isinstance(n, MemoryReported)]
        assert len(first.samples) >= 10  # the past
        assert all(len(n.samples) == 1 for n in live)  # then each new sample
        busy = [s["cpu"] for s in first.samples[1:]]
        assert max(busy) > 20  # it trains: a core busy at least part of the time
        client.close()
        app = ChargptApp(run.client())
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: len(app.device_panel.samples) >= 10)
            text = rendered(app.device_panel)
            cpu_line = next(line for line in text.splitlines() if line.startswith("CPU"))
            assert any(ch in cpu_line for ch in SPARKS) and cpu_line.rstrip().endswith("%")
            memory_line = next(line for line in text.splitlines() if line.startswith("memory"))
            assert any(ch in memory_line for ch in SPARKS) and "RSS" in memory_line
