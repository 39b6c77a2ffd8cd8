"""--optimizer muon: PyTorch's Muon on the transformer blocks' weight matrices, AdamW on the rest,
each at its own learning rate on one schedule; exact resume, --grad-accum, torchrun, and what a
checkpoint of the other optimizer does to a fork."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import TINY_FLAGS, make_text, one_clear_line, tiny_configs

from chargpt_tui.commands.cli import main
from model import events as ev
from model.checkpoint import load_checkpoint
from model.config import TrainConfig
from model.data import Corpus
from model.optim import MuonWithAdamW, lr_at, make_optimizer, muon_params
from model.rundir import RunDir
from model.trainer import Trainer


def test_muon_takes_the_blocks_weight_matrices_and_adamw_the_rest(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, optimizer="muon", muon_lr=0.03, learning_rate=1e-3)
    trainer = Trainer(corpus, model_config, train_config)
    optimizer = trainer.optimizer
    assert isinstance(optimizer, MuonWithAdamW)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    muon = sorted(names[id(p)] for g in optimizer.muon.param_groups for p in g["params"])
    layers = range(model_config.n_layers)
    assert muon == sorted([f"blocks.{i}.{w}.weight" for i in layers for w in ("sa.qkv", "sa.proj", "ffwd.net.0",
                                                                              "ffwd.net.2")])
    adamw = sorted(names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"])
    assert "token_embedding.weight" in adamw and "position_embedding.weight" in adamw and "lm_head.weight" in adamw
    assert "blocks.0.ln1.weight" in adamw and "blocks.0.sa.proj.bias" in adamw
    assert sorted(muon + adamw) == sorted(names.values())  # every parameter, once
    assert [id(p) for p in muon_params(trainer.model)] == [id(p) for g in optimizer.muon.param_groups
                                                           for p in g["params"]]
    # one schedule, two rates: Muon's in proportion
    trainer.train_step(5)
    peak = lr_at(5, train_config)
    assert all(g["lr"] == pytest.approx(peak * 30) for g in optimizer.muon.param_groups)
    assert all(g["lr"] == pytest.approx(peak) for g in optimizer.adamw.param_groups)


def test_adamw_is_the_default_and_keeps_one_optimizer() -> None:
    from model.config import GPTConfig
    from model.gpt import GPT

    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_embed=32, n_layers=2, n_heads=4))
    assert isinstance(make_optimizer(model, TrainConfig()), torch.optim.AdamW)


def test_muon_on_a_pytorch_without_it_is_one_line_and_status_2(text: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """torch.optim.Muon arrived in PyTorch 2.9; pyproject allows older ones."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)  # (absent before 2.9)
    assert main([str(text), *TINY_FLAGS, "--headless", "--optimizer", "muon", "--out-dir", str(tmp_path / "run")]) == 2
    one_clear_line(capsys.readouterr().err, "--optimizer muon needs PyTorch 2.9 or later")


def test_a_muon_run_resumed_goes_on_as_the_uninterrupted_one(corpus: Corpus, tmp_path: Path) -> None:
    # a warmup past the checkpoint: the resumed run's rates must go on rising as the first's did
    # (the constant schedule's: the cosine one depends on max_iters, which the first half changes)
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, optimizer="muon",
                                              warmup_iters=14, learning_rate=2e-3)
    straight: list[ev.Event] = []
    one_go = Trainer(corpus, model_config, train_config)
    one_go.add_listener(straight.append)
    one_go.run()
    half = RunDir(tmp_path / "half")
    half.prepare()
    Trainer(corpus, model_config, TrainConfig(**{**train_config.__dict__, "max_iters": 10}), run_dir=half).run()
    state = load_checkpoint(half.ckpt_path)
    assert state["optimizer"]["kind"] == "muon" and state["optimizer"]["muon"]["state"]  # the momentum buffers
    after: list[ev.Event] = []
    resumed = Trainer(corpus, model_config, train_config, resume=state)
    resumed.add_listener(after.append)
    resumed.run()

    def steps(events: list[ev.Event]) -> list[tuple[int, float]]:
        return [(i, loss) for e in events if isinstance(e, ev.StepsDone) for i, loss in zip(e.iters, e.losses)]

    assert steps(after) == steps(straight)[10:]  # bit for bit
    peak = lr_at(19, train_config)
    assert [g["lr"] for g in resumed.optimizer.muon.param_groups] == [pytest.approx(peak * 10)]  # 0.02 / 2e-3
    assert all(g["lr"] == pytest.approx(peak) for g in resumed.optimizer.adamw.param_groups)
    for a, b in zip(one_go.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_grad_accum_hands_muon_the_same_gradient(corpus: Corpus) -> None:
    """A step's gradient summed over 2 micro-batches, or taken at once: the same to float32's
    order of summation (1e-6 of its size), and it is what Muon and AdamW step on. After 5 steps
    the weights agree to 1.5e-2, not to float32's rounding: Muon orthogonalises its momentum in
    bfloat16 (PyTorch's, as Keller Jordan's), which lifts a gradient's smallest singular
    directions to the size of its largest, so rounding there grows to 4e-3 in 5 steps on an AMD
    EPYC; a run with a batch of half the rows (one micro-batch lost) differs by 4.9e-2."""
    model_config, one = tiny_configs(corpus, max_iters=5, eval_interval=100, optimizer="muon", batch_size=8)
    _, two = tiny_configs(corpus, max_iters=5, eval_interval=100, optimizer="muon", batch_size=8, grad_accum=2)
    model_config = replace(model_config, dropout=0.0)  # (dropout's masks are drawn per micro-batch)
    a, b = Trainer(corpus, model_config, one), Trainer(corpus, model_config, two)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)  # the same start
    a.train_step(0)
    b.train_step(0)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6 * scale, rtol=0)
    for it in range(1, 5):
        a.train_step(it)
        b.train_step(it)
    with torch.no_grad():
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1.5e-2, rtol=0)


# ---- the command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("muon") / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def test_the_flags_reach_config_json_and_resume_keeps_the_optimizer(text: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main([str(text), *TINY_FLAGS, "--optimizer", "muon", "--muon-lr", "0.05", "--headless",
                 "--out-dir", str(run)]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["optimizer"], train["muon_lr"], train["muon_momentum"]) == ("muon", 0.05, 0.95)
    capsys.readouterr()
    assert main(["--resume", str(run / "ckpt.pt"), "--optimizer", "adamw", "--max-iters", "30", "--headless"]) == 2
    one_clear_line(capsys.readouterr().err, "--optimizer cannot change when resuming")
    # a fork may change it: the other optimizer starts afresh, and says so
    assert main(["--fork", str(run), "--optimizer", "adamw", "--max-iters", "30", "--headless",
                 "--out-dir", str(tmp_path / "fork")]) == 0
    out = capsys.readouterr()
    assert "the checkpoint's optimizer was muon: adamw starts with no moments" in out.out + out.err
    assert load_checkpoint(tmp_path / "fork" / "ckpt.pt")["optimizer"].get("kind") is None  # adamw's


def test_two_processes_train_with_muon(text: Path, tmp_path: Path) -> None:
    """torchrun: 2 processes x 2 micro-batches, Muon on each replica's all-reduced gradients."""
    from test_distributed import events, finish, torchrun

    out = finish(torchrun([str(text), *TINY_FLAGS, "--batch-size", "8", "--max-iters", "6", "--eval-interval", "3",
                           "--optimizer", "muon", "--grad-accum", "2", "--out-dir", "two"], tmp_path))
    assert "x 2 processes (gloo)" in out, out
    state = torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)
    assert state["world_size"] == 2 and state["iter"] == 6 and state["optimizer"]["kind"] == "muon"
    assert len(events(tmp_path / "two", "step")) == 6


def test_the_device_panel_names_muon_and_both_rates() -> None:
    from chargpt_tui.dashboard.widgets.device_panel import DevicePanel

    panel = DevicePanel()
    panel.set_optimizer("muon", 0.02, 2e-3)
    panel.set_throughput(1000.0, 20.0, 1e-3, None)  # half way down the schedule
    assert "muon 1.0e-02 · adamw 1.0e-03" in panel.render().plain
    panel.set_optimizer("adamw", 0.02, 2e-3)
    assert "lr 1.0e-03" in panel.render().plain
