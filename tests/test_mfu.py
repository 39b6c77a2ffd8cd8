"""MFU: the FLOPs a step computes (products, not embedding lookups), per device under torchrun,
and the step time behind it on a GPU."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny_configs
from serving import ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from model.config import GPTConfig
from model.data import Corpus
from model.flops import flops_per_token, mfu
from model.gpt import GPT
from model.rundir import RunDir
from model.step_timer import StepTimer
from model.trainer import Trainer


def test_flops_count_the_products_and_attention_not_the_embedding_lookups() -> None:
    V, T, C, L = 40, 16, 32, 2
    config = GPTConfig(vocab_size=V, block_size=T, n_embed=C, n_layers=L, n_heads=4)
    model = GPT(config)
    # per block: qkv (C x 3C, no bias), projection (C x C + C), feed-forward (C x 4C + 4C, 4C x C + C),
    # two LayerNorms (2C each); then the final LayerNorm (2C) and the head (C x V + V)
    per_block = 3 * C * C + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C) + 4 * C
    products = L * per_block + 2 * C + C * V + V
    assert model.num_params(non_embedding=True) == products
    assert model.num_params() == products + V * C + T * C  # the lookups: token and position tables
    assert flops_per_token(config, model.num_params(non_embedding=True)) == 6 * products + 12 * L * C * T


def test_mfu_is_per_device() -> None:
    one = mfu(1e6, 5e4, 1e12)
    assert one == pytest.approx(0.05)
    assert mfu(1e6, 2 * 5e4, 1e12, devices=2) == pytest.approx(one)  # twice the tokens on twice the devices


async def test_the_dashboard_shows_mfu_per_device_of_a_torchrun_job(corpus: Corpus, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun tokens/s is the whole job's; the peak is one device's. With the same
    throughput, a job of 2 processes reads half the MFU one process does (it read the same)."""
    real = Trainer._started_event
    monkeypatch.setattr(Trainer, "_started_event", lambda self: replace(real(self), processes=2))
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=1_000_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.05)
    peak = 1e11
    with ServedRun(trainer, peak_flops=peak) as run:
        app = ChargptApp(run.client())
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = time.monotonic() + 30
            while app.device_panel.mfu is None:
                assert time.monotonic() < deadline, "no MFU shown"
                await pilot.pause(0.05)
            panel = app.device_panel
            expected = flops_per_token(model_config, trainer.model.num_params(non_embedding=True)) \
                * panel.tokens_per_s / (2 * peak)
            assert panel.mfu == pytest.approx(expected)
            await pilot.press("ctrl+q")
            await asyncio.sleep(0)


def test_the_cpu_step_timer_sums_the_steps_between_takes() -> None:
    timer = StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.start()
        time.sleep(0.01)
        timer.stop()
    time.sleep(0.5)  # between steps: not step time
    took = timer.take()
    assert 0.03 <= took < 0.5 and timer.take() == 0.0  # (the steps' 30 ms, not the half second between)


@pytest.mark.cuda
def test_on_a_gpu_the_dashboards_step_time_agrees_with_bench(corpus: Corpus) -> None:
    """The loop's timing (CUDA events, no synchronisation per step) against bench's (a sync around
    the steps): within 5% on a model large enough for the GPU to be the bottleneck."""
    from model.benchmark import _synchronize

    model_config, train_config = tiny_configs(corpus, device="cuda")
    model_config = replace(model_config, n_embed=512, n_layers=4, n_heads=8, block_size=128)
    train_config = replace(train_config, batch_size=32)
    trainer = Trainer(corpus, model_config, train_config)
    for it in range(5):
        trainer.train_step(it)
    _synchronize(trainer.device)
    trainer.reports.step_timer.take()
    start = time.perf_counter()
    for it in range(5, 35):
        trainer.train_step(it)
    _synchronize(trainer.device)
    wall = time.perf_counter() - start
    timed = trainer.reports.step_timer.take()
    assert math.isclose(timed, wall, rel_tol=0.05), (timed, wall)
