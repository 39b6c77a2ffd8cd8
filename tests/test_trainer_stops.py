"""The training loop's ends and interruptions: a loss that is not finite, a divergence paused,
a stop during an evaluation, and requests (save, evaluate, stop) made between steps or as the
loop ends."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from helpers import collect, steps_of, tiny_configs

from model import events as ev
from model.checkpoint import load_checkpoint
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import RunResult, Trainer


def test_a_nan_loss_fails_the_run_without_overwriting_checkpoints(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=30, eval_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)

    def poison(event: ev.Event) -> None:
        if isinstance(event, ev.CheckpointSaved) and event.iter == 10:
            with __import__("torch").no_grad():
                trainer.model.lm_head.weight.fill_(float("nan"))

    trainer.add_listener(poison)
    seen = collect(trainer)
    result = trainer.run()
    assert result.status == "failed" and "nan" in (result.error or "")
    assert isinstance(seen[-1], ev.Failed)
    assert load_checkpoint(run_dir.ckpt_path)["iter"] == 10


def test_on_divergence_pause_holds_the_loop_and_refuses_to_save(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=1000, eval_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0,
                      on_divergence="pause")
    diverged = threading.Event()

    def listener(event: ev.Event) -> None:
        if isinstance(event, ev.CheckpointSaved) and event.iter == 10:
            with torch.no_grad():
                trainer.model.blocks[0].ffwd.net[0].weight.fill_(float("inf"))
        if isinstance(event, ev.Diverged):
            diverged.set()

    trainer.add_listener(listener)
    seen = collect(trainer)
    result: list[RunResult] = []
    thread = threading.Thread(target=lambda: result.append(trainer.run()))
    thread.start()
    assert diverged.wait(timeout=60)
    event = next(e for e in seen if isinstance(e, ev.Diverged))
    assert event.last_good == str(run_dir.ckpt_path) and event.last_good_iter == 10
    assert trainer.steering.paused and not trainer.steering.resume()
    trainer.steering.request_save()
    trainer.steering.stop()
    thread.join(timeout=60)
    assert result[0].status == "failed" and "training is held" in (result[0].error or "")
    refused = [e for e in seen if isinstance(e, ev.CheckpointFailed)]
    assert refused and all("not saved" in e.error for e in refused)
    assert load_checkpoint(run_dir.ckpt_path)["iter"] == 10
    assert not any(isinstance(e, ev.EvalDone) and e.iter > 10 for e in seen)


def test_a_stop_during_an_evaluation_is_done_again_on_resume(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, eval_iters=4)
    one_go = Trainer(corpus, model_config, train_config)
    straight = collect(one_go)
    one_go.run()

    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    stopped = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)

    def stop_in_the_evaluation_at_10(event: ev.Event) -> None:
        if isinstance(event, ev.EvalProgress) and event.iter == 10:
            stopped.steering.stop()

    stopped.add_listener(stop_in_the_evaluation_at_10)
    first = collect(stopped)
    assert stopped.run().status == "stopped"
    assert [e.iter for e in first if isinstance(e, ev.EvalDone)] == [0]  # the one at 10 was abandoned
    state = load_checkpoint(run_dir.ckpt_path)
    assert state["iter"] == 10 and state["due_done"] is False
    stopped.steering.request_save()  # a later save of the same step (a viewer's `s`) says the same
    assert load_checkpoint(run_dir.ckpt_path)["due_done"] is False

    resumed = Trainer(corpus, model_config, train_config, resume=state)
    after = collect(resumed)
    resumed.run()
    # the evaluation and the sample at 10 are done on resume, as the uninterrupted run did them
    def evals(events: list[ev.Event]) -> list[tuple[int, float, float]]:
        return [(e.iter, e.train_loss, e.val_loss) for e in events if isinstance(e, ev.EvalDone)]

    def samples(events: list[ev.Event]) -> list[tuple[int, str]]:
        return [(e.iter, e.text) for e in events if isinstance(e, ev.SampleGenerated)]

    assert evals(after) == evals(straight)[1:]
    assert samples(after) == samples(straight)
    assert steps_of(after) == steps_of(straight)[10:]


def test_a_stop_during_the_last_evaluation_resumes_to_do_it(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=10, eval_interval=10, eval_iters=4)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)
    trainer.add_listener(lambda e: trainer.steering.stop() if isinstance(e, ev.EvalProgress) and e.iter == 10 else None)
    assert trainer.run().status == "stopped"
    state = load_checkpoint(run_dir.ckpt_path)
    assert state["iter"] == 10 and state["due_done"] is False
    resumed = Trainer(corpus, model_config, train_config, resume=state)
    seen = collect(resumed)
    assert resumed.run().status == "finished"
    assert [e.iter for e in seen if isinstance(e, ev.EvalDone)] == [10]


def test_requests_made_as_the_loop_ends_are_answered(corpus: Corpus, tmp_path: Path) -> None:
    # A stop's checkpoint is the loop's last act, after its last look at the requests: a
    # request made then (here by a listener of that save) is the one that races with the end.
    model_config, train_config = tiny_configs(corpus, max_iters=100_000, eval_interval=100_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    asked: list[object] = []

    def at_the_stop(event: ev.Event) -> None:
        if isinstance(event, ev.StepsDone) and event.iter >= 3:
            trainer.steering.stop()
        if isinstance(event, ev.CheckpointSaved) and event.reason == "stop":
            asked.append(trainer.steering.snapshot())
            trainer.steering.request_save()

    trainer.add_listener(at_the_stop)
    seen = collect(trainer)
    assert trainer.run().status == "stopped"
    assert asked[0].result(timeout=5).training is False  # type: ignore[attr-defined]
    assert any(isinstance(e, ev.CheckpointSaved) and e.reason == "request" for e in seen)


def test_requests_from_a_listener_of_the_last_events_are_answered(corpus: Corpus, tmp_path: Path) -> None:
    # Finished comes from the run's own thread after the loop: done there and then, no deadlock
    model_config, train_config = tiny_configs(corpus, max_iters=5, eval_interval=100)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    asked: list[object] = []

    def at_the_end(event: ev.Event) -> None:
        if isinstance(event, ev.Finished):
            asked.append(trainer.steering.snapshot())
            trainer.steering.request_save()

    trainer.add_listener(at_the_end)
    seen = collect(trainer)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    snapshot = asked[0].result(timeout=5)  # type: ignore[attr-defined]
    assert not snapshot.training
    assert any(isinstance(e, ev.CheckpointSaved) and e.reason == "request" for e in seen)


def test_requests_while_training_are_served_by_the_loop_at_a_step_boundary(corpus: Corpus) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=100_000, eval_interval=100_000)
    trainer = Trainer(corpus, model_config, train_config, event_interval_s=0.0)
    held, release = threading.Event(), threading.Event()

    def hold_the_loop(event: ev.Event) -> None:  # mid-run, between two steps, until released
        if isinstance(event, ev.StepsDone) and event.iter == 3:
            held.set()
            release.wait(30)

    trainer.add_listener(hold_the_loop)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        assert held.wait(30)
        futures = [trainer.steering.snapshot() for _ in range(3)]
        cancelled = trainer.steering.snapshot()
        assert not any(f.done() for f in (*futures, cancelled))  # queued for the loop
        assert cancelled.cancel()
        release.set()
        models = [f.result(timeout=30) for f in futures]
        assert len({id(m) for m in models}) == 3 and all(not m.training for m in models)
        assert cancelled.cancelled()
    finally:
        trainer.steering.stop()
        thread.join(timeout=60)
