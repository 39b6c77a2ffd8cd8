"""model/precision.py: what --dtype auto chooses on each kind of machine, and the float16 and
emulated-bfloat16 paths the Trainer takes. The machines are simulated (CPU flags, CUDA's
answers); the arithmetic is real where this CPU can do it."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_FLAGS, one_clear_line, run_script, tiny_configs

from chargpt_tui.commands.cli import main
from model import events as ev
from model import precision
from model import trainer as trainer_module
from model.checkpoint import load_checkpoint
from model.config import ConfigError
from model.data import Corpus
from model.precision import BFLOAT16_MARGIN, Precision, choose_precision
from model.rundir import RunDir
from model.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpu_kind(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """cpu_kind(native=..., works=...): the CPU has native bfloat16 (AVX512-BF16 or AMX) or not;
    PyTorch's bfloat16 kernels run on it (natively or emulated) or not."""

    def make(native: bool, works: bool = True) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)
        monkeypatch.setattr(precision, "_cpu_bfloat16_works", lambda: works)

    return make


def test_auto_on_a_cpu_with_native_bfloat16_is_bfloat16(cpu_kind) -> None:  # noqa: ANN001
    cpu_kind(native=True)
    chosen = choose_precision("auto", CPU)
    assert chosen.dtype == "bfloat16" and "natively" in chosen.reason and not chosen.emulated


@pytest.mark.parametrize("works", [True, False], ids=["emulating (Intel Ice Lake)", "no AVX-512"])
def test_auto_on_a_cpu_without_native_bfloat16_is_float32(cpu_kind, works: bool) -> None:  # noqa: ANN001
    cpu_kind(native=False, works=works)
    chosen = choose_precision("auto", CPU)
    assert chosen.dtype == "float32" and "no native bfloat16" in chosen.reason and chosen.warning is None


def test_bfloat16_asked_for_where_emulated_runs_with_a_warning(cpu_kind) -> None:  # noqa: ANN001
    cpu_kind(native=False, works=True)
    chosen = choose_precision("bfloat16", CPU)
    assert chosen.dtype == "bfloat16" and chosen.emulated
    assert chosen.warning is not None and "emulated" in chosen.warning and "slower than float32" in chosen.warning
    cpu_kind(native=False, works=False)
    with pytest.raises(ConfigError, match="no bfloat16 support"):
        choose_precision("bfloat16", CPU)


@pytest.mark.parametrize("bf16, expected", [(True, "bfloat16"), (False, "float16")])
def test_auto_on_a_cuda_gpu(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    chosen = choose_precision("auto", CUDA)
    assert chosen.dtype == expected
    assert ("gradient scaler" in chosen.reason) == (expected == "float16")


def test_float16_is_for_cuda_only(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="only on a CUDA GPU"):
        choose_precision("float16", CPU)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("to be or not to be, that is the question\n" * 50, encoding="utf-8")
    assert main(["tiny.txt", *TINY_FLAGS, "--dtype", "float16", "--headless"]) == 2
    one_clear_line(capsys.readouterr().err, "--dtype float16", "only on a CUDA GPU")
    assert not (tmp_path / "runs").exists()


def test_every_short_note_fits_the_device_panel(cpu_kind, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    notes = []
    for native in (True, False):
        cpu_kind(native=native)
        notes += [choose_precision(d, CPU).short for d in ("auto", "float32", "bfloat16")]
    for bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, bf16=bf16, **kwargs: bf16)
        notes += [choose_precision(d, CUDA).short for d in ("auto", "float32", "float16")]
    assert all(0 < len(note) <= 14 for note in notes), notes


def test_an_emulated_bfloat16_run_says_so_once(cpu_kind, corpus: Corpus) -> None:  # noqa: ANN001
    cpu_kind(native=False, works=True)
    model_config, train_config = tiny_configs(corpus, dtype="bfloat16", max_iters=4, eval_interval=2)
    trainer = Trainer(corpus, model_config, train_config)
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    assert trainer.run().status == "finished"
    started = seen[0]
    assert isinstance(started, ev.RunStarted) and started.dtype == "bfloat16" and "emulated" in started.dtype_reason
    warnings = [e for e in seen if isinstance(e, ev.Warning)]
    assert len(warnings) == 1 and "emulated" in warnings[0].message


def test_float16_trains_with_a_gradient_scaler_kept_in_checkpoints(corpus: Corpus, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # float16 runs on CUDA only; its code path (autocast, scaled backward, unscale before
    # clipping, the scaler in checkpoints) is the same on the CPU, where this test can run it
    monkeypatch.setattr(trainer_module, "choose_precision",
                        lambda requested, device, probe=None: Precision("float16", "for the test", "+ grad scaler"))
    model_config, train_config = tiny_configs(corpus, dtype="float16", max_iters=20, eval_interval=10, grad_clip=1.0)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    assert trainer.scaler is not None
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    assert trainer.run().status == "finished"
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert evals[-1].val_loss < evals[0].val_loss  # it learns
    state = load_checkpoint(run_dir.ckpt_path)
    assert state["scaler"]["scale"] == trainer.scaler.get_scale()
    resumed = Trainer(corpus, model_config, train_config, resume=state)
    assert resumed.scaler is not None and resumed.scaler.get_scale() == trainer.scaler.get_scale()


def test_config_json_and_bench_say_what_was_chosen_and_why(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("to be or not to be, that is the question\n" * 500, encoding="utf-8")
    flags = [f for f in TINY_FLAGS if f not in ("--dtype", "float32")]  # the default: auto
    result = run_script(["tiny.txt", *flags, "--max-iters", "2", "--out-dir", "run", "--headless"], tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["dtype"] == "auto"
    assert config["precision"]["dtype"] in ("float32", "bfloat16") and config["precision"]["reason"].startswith("auto")
    assert config["device"]["name"] and config["device"]["type"] == "cpu"
    assert f"dtype {config['precision']['dtype']}: auto" in result.stdout
    if precision.cpu_has_native_bfloat16() and precision._cpu_bfloat16_works():  # this machine measures
        probe = config["precision"]["probe"]  # model/precision_probe.py's figures, kept
        assert probe["float32_ms"] > 0 and probe["bfloat16_ms"] > 0 and probe["rows"] == 8
        assert config["precision"]["dtype"] == ("bfloat16" if probe["speedup"] >= BFLOAT16_MARGIN else "float32")
    else:
        assert "probe" not in config["precision"] and config["precision"]["dtype"] == "float32"
    bench = run_script(["bench", "--text", "tiny.txt", "--block-size", "16", "--n-embed", "32", "--n-layers", "2",
                        "--n-heads", "4", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--steps", "1",
                        "--warmup", "1", "--gen-tokens", "0"], tmp_path)
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout)
    assert figures["dtype"] == config["precision"]["dtype"] and figures["dtype_reason"].startswith("auto")


def float16_trainer(corpus: Corpus, monkeypatch: pytest.MonkeyPatch, device: str = "cpu") -> Trainer:
    if device == "cpu":  # float16 is refused on the CPU; its code path is the same there
        monkeypatch.setattr(trainer_module, "choose_precision",
                            lambda requested, device, probe=None: Precision("float16", "for the test", "+ grad scaler"))
    model_config, train_config = tiny_configs(corpus, dtype="float16", grad_clip=1.0, device=device)
    # no dropout: the reference gradient below must see the same network
    return Trainer(corpus, dataclasses.replace(model_config, dropout=0.0), train_config)


def check_float16_scaler(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert trainer.scaler is not None
    trainer.train_step(0)  # (the scaler's first step)

    # a step whose gradients overflow is skipped: no weight moves, and the scale backs off
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    scale = trainer.scaler.get_scale()
    hook = trainer.model.lm_head.weight.register_hook(lambda g: g * float("inf"))
    trainer.train_step(1)
    hook.remove()
    assert all(torch.equal(p, weights[n]) for n, p in trainer.model.named_parameters())
    assert trainer.scaler.get_scale() == scale * 0.5

    # clipping sees the true gradients, not the scaled ones (the scale is thousands)
    batches = torch.Generator().set_state(trainer.train_gen.get_state())
    x, y = trainer.corpus.get_batch("train", trainer.config.batch_size, trainer.model_config.block_size, batches)
    reference = copy.deepcopy(trainer.model)
    with precision.autocast(trainer.device, "float16"):
        _, loss = reference(x.to(trainer.device), y.to(trainer.device))
    loss.backward()
    true_norm = torch.norm(torch.stack([p.grad.float().norm() for p in reference.parameters()]))
    seen: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters: object, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        norm = real_clip(parameters, max_norm, *args, **kwargs)
        seen.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    assert trainer.scaler.get_scale() > 1000
    trainer.train_step(2)
    # float16 products round at ~1e-3 of each value: the norms agree to well within 1%
    assert seen == [pytest.approx(float(true_norm), rel=1e-2)]


def test_float16_skips_an_overflowing_step_and_clips_unscaled_gradients(corpus: Corpus,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    check_float16_scaler(float16_trainer(corpus, monkeypatch), monkeypatch)


@pytest.mark.cuda
def test_float16_with_a_scaler_on_a_gpu(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    check_float16_scaler(float16_trainer(corpus, monkeypatch, device="cuda"), monkeypatch)
