from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch
from helpers import collect, steps_of, tiny_configs

from model import events as ev
from model.checkpoint import load_checkpoint
from model.config import TrainConfig
from model.data import Corpus
from model.rundir import MetricsLog, RunDir, read_metrics
from model.trainer import Trainer, lr_at


def test_runs_the_seed_loop_and_reports_events(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    seen = collect(trainer)
    result = trainer.run()
    assert result.status == "finished" and result.iter == 20
    assert isinstance(seen[0], ev.RunStarted) and isinstance(seen[-1], ev.Finished)
    assert [e.iter for e in seen if isinstance(e, ev.EvalDone)] == [0, 10, 20]
    assert [i for i, _ in steps_of(seen)] == list(range(1, 21))
    assert [e.iter for e in seen if isinstance(e, ev.SampleGenerated)] == [10, 20]
    assert all(len(e.text) == 20 for e in seen if isinstance(e, ev.SampleGenerated))
    first_eval = next(e for e in seen if isinstance(e, ev.EvalDone))
    assert abs(first_eval.val_loss - math.log(corpus.tokenizer.vocab_size)) < 0.3
    assert run_dir.ckpt_path.exists() and run_dir.best_path.exists()
    assert load_checkpoint(run_dir.ckpt_path)["iter"] == 20


def test_steps_are_batched_not_one_event_per_step(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=60, eval_interval=60)
    trainer = Trainer(corpus, model_config, train_config, event_interval_s=60.0)
    seen = collect(trainer)
    trainer.run()
    batches = [e for e in seen if isinstance(e, ev.StepsDone)]
    assert sum(len(b.iters) for b in batches) == 60
    assert len(batches) <= 2  # flushed only before each evaluation
    assert all(b.tokens_per_s > 0 and b.ms_per_step > 0 for b in batches)


def test_loss_goes_down(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(
        corpus, max_iters=150, eval_interval=150, learning_rate=3e-3, eval_iters=5
    )
    trainer = Trainer(corpus, model_config, train_config)
    seen = collect(trainer)
    trainer.run()
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert evals[-1].val_loss < evals[0].val_loss - 1.0


def test_resume_continues_the_iteration_count_and_matches_one_run(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10)
    one_go = Trainer(corpus, model_config, train_config)
    straight = collect(one_go)
    one_go.run()

    first_half = RunDir(tmp_path / "a")
    first_half.prepare()
    half_config = TrainConfig(**{**train_config.__dict__, "max_iters": 10})
    Trainer(corpus, model_config, half_config, run_dir=first_half).run()
    state = load_checkpoint(first_half.ckpt_path)
    assert state["iter"] == 10
    resumed = Trainer(corpus, model_config, train_config, resume=state)
    after = collect(resumed)
    resumed.run()
    started = after[0]
    assert isinstance(started, ev.RunStarted) and started.iter == 10 and started.resumed
    assert len(started.step_history) == 10 and [e[0] for e in started.eval_history] == [0, 10]
    # no repeated evaluation at 10, and steps 11..20 exactly as in the uninterrupted run
    assert [e.iter for e in after if isinstance(e, ev.EvalDone)] == [20]
    assert steps_of(after) == steps_of(straight)[10:]
    # and the same sample at 20: the checkpoint at 10 was written after that step's sample
    texts = {e.iter: e.text for e in straight if isinstance(e, ev.SampleGenerated)}
    assert [(e.iter, e.text) for e in after if isinstance(e, ev.SampleGenerated)] == [(20, texts[20])]


def test_lr_schedules() -> None:
    constant = TrainConfig()
    assert lr_at(0, constant) == lr_at(4999, constant) == 3e-4
    cosine = TrainConfig(lr_schedule="cosine", learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert lr_at(0, cosine) == pytest.approx(1e-3 / 11)
    assert lr_at(10, cosine) == pytest.approx(1e-3)
    assert lr_at(60, cosine) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(110, cosine) == pytest.approx(1e-4)
    assert all(lr_at(i, cosine) >= lr_at(i + 1, cosine) for i in range(10, 110))


def test_controls_pause_save_eval_stop(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=100_000, eval_interval=100_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)
    paused = threading.Event()
    saved = threading.Event()
    evaluated = threading.Event()
    seen: list[ev.Event] = []

    def listener(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.StepsDone) and event.iter >= 5 and not trainer.steering.paused and not paused.is_set():
            trainer.steering.pause()
        if isinstance(event, ev.Paused):
            paused.set()
        if isinstance(event, ev.CheckpointSaved) and event.reason == "request":
            saved.set()
        if isinstance(event, ev.EvalDone) and event.iter > 0:
            evaluated.set()

    trainer.add_listener(listener)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    assert paused.wait(30)
    at_pause = trainer.iter
    trainer.steering.request_save()
    assert saved.wait(30)
    trainer.steering.request_eval()
    assert evaluated.wait(30)
    assert trainer.iter == at_pause  # nothing trained while paused
    assert load_checkpoint(run_dir.ckpt_path)["iter"] == at_pause
    snapshot = trainer.steering.snapshot().result(timeout=30)
    assert not snapshot.training and snapshot is not trainer.model
    live = trainer.model.state_dict()
    for name, tensor in snapshot.state_dict().items():
        assert torch.equal(tensor, live[name]) and tensor.data_ptr() != live[name].data_ptr(), name
    trainer.steering.resume()
    trainer.steering.stop()
    thread.join(30)
    assert not thread.is_alive()
    finished = seen[-1]
    assert isinstance(finished, ev.Finished) and finished.stopped
    assert load_checkpoint(run_dir.ckpt_path)["iter"] == finished.iter


def test_metrics_jsonl_holds_steps_and_evals(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    log = MetricsLog(run_dir.metrics_path)
    Trainer(corpus, model_config, train_config, run_dir=run_dir, listeners=(log,)).run()
    log.close()
    with open(run_dir.metrics_path, "a") as f:
        f.write('{"event": "step", "iter": 2')  # a torn last line, as after a kill mid-write
    records = list(read_metrics(run_dir.metrics_path))
    kinds = [r["event"] for r in records]
    assert kinds.count("step") == 20 and kinds.count("eval") == 3
    assert all("iter" in r and "time_s" in r for r in records)
    evals = [r for r in records if r["event"] == "eval"]
    assert all("train_loss" in r and "val_loss" in r for r in evals)


def test_a_log_reopened_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    """A run killed mid-write leaves a torn last line; the resumed run's first record (its
    start) must not be glued onto it, or every reader loses that record."""
    path = tmp_path / "metrics.jsonl"
    whole = '{"event": "step", "iter": 1, "time_s": 0.1, "loss": 4.0, "lr": 0.001}\n'
    path.write_text(whole + '{"event": "step", "iter": 2')
    log = MetricsLog(path)
    log(ev.Paused(iter=2, time_s=0.5))
    log.close()
    assert [(r["event"], r["iter"]) for r in read_metrics(path)] == [("step", 1), ("pause", 2)]


def test_a_failing_listener_does_not_stop_training(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus)

    def broken(event: ev.Event) -> None:
        raise RuntimeError("listener bug")

    trainer = Trainer(corpus, model_config, train_config, listeners=(broken,))
    seen = collect(trainer)
    assert trainer.run().status == "finished"
    assert any(isinstance(e, ev.Warning) and "listener bug" in e.message for e in seen)


def test_grad_clip_bounds_the_gradient_norm(corpus: Corpus) -> None:
    def grad_norm_after_a_step(grad_clip: float) -> float:
        model_config, train_config = tiny_configs(corpus, grad_clip=grad_clip)
        trainer = Trainer(corpus, model_config, train_config)
        trainer.train_step(0)  # zero_grad comes before backward: the step's gradients stay
        return sum(float(p.grad.pow(2).sum()) for p in trainer.model.parameters() if p.grad is not None) ** 0.5

    unclipped = grad_norm_after_a_step(0.0)
    assert unclipped > 0.05
    assert grad_norm_after_a_step(0.01) == pytest.approx(0.01, rel=1e-4)


def test_weight_decay_applies_to_matrices_and_embeddings_only(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, weight_decay=0.1)
    trainer = Trainer(corpus, model_config, train_config)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in trainer.optimizer.param_groups}
    decayed, kept = groups[0.1], groups[0.0]
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert "token_embedding.weight" in decayed and "position_embedding.weight" in decayed
    assert "blocks.0.sa.qkv.weight" in decayed and "lm_head.weight" in decayed
    assert all(n.endswith(".bias") or ".ln" in n or n.startswith("ln_f") for n in kept), kept
    assert "blocks.0.ln1.weight" in kept and "lm_head.bias" in kept


def test_the_optimizer_falls_back_where_fused_adamw_is_missing(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    from model import trainer as trainer_module

    real = torch.optim.AdamW
    tried: list[bool] = []

    def old_adamw(*args: object, fused: bool | None = None, **kwargs: object) -> torch.optim.AdamW:
        tried.append(bool(fused))
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module.torch.optim, "AdamW", old_adamw)
    model_config, train_config = tiny_configs(corpus, max_iters=3, eval_interval=100)
    trainer = Trainer(corpus, model_config, train_config)
    assert tried == [True, False]
    assert trainer.run().status == "finished"


def test_a_slow_run_shows_one_early_sample_and_keeps_its_schedule(corpus: Corpus) -> None:
    def samples(early_after_s: float) -> list[tuple[int, str]]:
        model_config, train_config = tiny_configs(corpus, max_iters=300, eval_interval=10_000,
                                                  sample_interval=10_000)
        trainer = Trainer(corpus, model_config, train_config)
        trainer.sampler.early_after_s = early_after_s
        seen = collect(trainer)
        trainer.run()
        return [(e.iter, e.text) for e in seen if isinstance(e, ev.SampleGenerated)]

    early = samples(0.01)  # "a minute", scaled down: the first scheduled sample is far off
    assert len(early) == 2 and 0 < early[0][0] < 300 and early[1][0] == 300
    assert samples(float("inf")) == early[1:]  # the scheduled sample is the same text either way


def test_a_run_whose_samples_have_begun_takes_no_early_one(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=300, eval_interval=100, sample_interval=20)
    trainer = Trainer(corpus, model_config, train_config)
    trainer.sampler.early_after_s = 0.2  # reached long after the first scheduled sample, at step 20
    seen = collect(trainer)
    trainer.run()
    assert [e.iter for e in seen if isinstance(e, ev.SampleGenerated)] == list(range(20, 301, 20))
