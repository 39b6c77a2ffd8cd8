"""--dtype auto on a CPU with native bfloat16 decides by measuring this model's step in both
dtypes (model/precision_probe.py): the choice logic with fake figures, the probe itself on a
tiny model, and what a run says about it."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_configs

from model import events as ev
from model import precision
from model import trainer as trainer_module
from model.config import GPTConfig, TrainConfig
from model.data import Corpus
from model.precision import BFLOAT16_MARGIN, choose_precision
from model.precision_probe import ProbeResult, probe_step_times
from model.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    monkeypatch.setattr(precision, "_cpu_bfloat16_works", lambda: True)


def test_a_probe_that_finds_bfloat16_slower_makes_auto_take_float32(native_bfloat16: None) -> None:
    # the cpu preset on an AMD EPYC with AVX512-BF16: bfloat16 was the slower one
    chosen = choose_precision("auto", CPU, probe=lambda: ProbeResult(17.0, 30.0, 12))
    assert chosen.dtype == "float32"
    assert "0.57x" in chosen.reason and "17.0 ms in float32" in chosen.reason and chosen.probe is not None
    assert chosen.probe["speedup"] == 0.57 and len(chosen.short) <= 14


def test_a_probe_that_finds_bfloat16_faster_makes_auto_take_it(native_bfloat16: None) -> None:
    chosen = choose_precision("auto", CPU, probe=lambda: ProbeResult(780.0, 516.0, 16))
    assert chosen.dtype == "bfloat16" and chosen.reason.startswith("auto: bfloat16 1.5x faster here")
    assert chosen.short == "auto: 1.5x"


def test_a_tie_within_the_margin_is_float32s(native_bfloat16: None) -> None:
    # float32 is exact: bfloat16 must be clearly faster to be taken
    chosen = choose_precision("auto", CPU, probe=lambda: ProbeResult(10.0 * BFLOAT16_MARGIN * 0.99, 10.0, 12))
    assert chosen.dtype == "float32"


def test_no_probe_where_there_is_nothing_to_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe() -> ProbeResult:
        raise AssertionError("probed")

    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: False)
    assert choose_precision("auto", CPU, probe=probe).dtype == "float32"  # emulated bfloat16: never faster
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    monkeypatch.setattr(precision, "_cpu_bfloat16_works", lambda: True)
    for asked in ("float32", "bfloat16"):
        assert choose_precision(asked, CPU, probe=probe).dtype == asked  # asked for: no measuring


def test_the_trainer_trains_in_what_the_probe_chose_and_says_why(native_bfloat16: None, corpus: Corpus,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[GPTConfig, TrainConfig]] = []

    def fake_probe(model_config: GPTConfig, train_config: TrainConfig, group: object) -> ProbeResult:
        asked.append((model_config, train_config))
        return ProbeResult(20.0, 35.0, 8)

    monkeypatch.setattr(trainer_module, "probe_run", fake_probe)
    model_config, train_config = tiny_configs(corpus, dtype="auto", max_iters=2)
    trainer = Trainer(corpus, model_config, train_config)
    assert trainer.dtype == "float32" and asked == [(model_config, train_config)]
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    trainer.run()
    started = seen[0]
    assert isinstance(started, ev.RunStarted) and "bfloat16 0.57x for these sizes" in started.dtype_reason


def test_the_probe_times_both_and_leaves_the_runs_random_streams_alone() -> None:
    model_config = GPTConfig(vocab_size=20, block_size=8, n_embed=16, n_layers=1, n_heads=2, dropout=0.1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    result = probe_step_times(model_config, TrainConfig(batch_size=4), rows=4, budget_s=0.05)
    assert torch.equal(torch.rand(3), expected)  # model init and dropout of the run: as without the probe
    assert result.float32_ms > 0 and result.bfloat16_ms > 0 and result.rows == 4


def test_a_large_model_is_probed_on_fewer_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake clock: each step "takes" 50 ms a row, so 64 rows would be 3.2 s a step
    from model import precision_probe

    now = [0.0]

    def clock() -> float:
        return now[0]

    real_forward = precision_probe.GPT.forward

    def slow_forward(self, idx, targets=None):  # noqa: ANN001, ANN202
        now[0] += 0.05 * idx.shape[0]
        return real_forward(self, idx, targets)

    monkeypatch.setattr(precision_probe.GPT, "forward", slow_forward)
    model_config = GPTConfig(vocab_size=20, block_size=8, n_embed=16, n_layers=1, n_heads=2)
    result = probe_step_times(model_config, TrainConfig(batch_size=64), rows=64, clock=clock)
    assert result.rows == 5  # STEP_TARGET_S (0.25 s) of 50 ms rows
    assert result.float32_ms == pytest.approx(250.0) and result.bfloat16_ms == pytest.approx(250.0)
