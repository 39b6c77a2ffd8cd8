"""Training state a person relies on: best.pt holds the best evaluation's weights whoever asked for
it, and the settings README says may change on resume do change."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import collect, make_text, tiny_configs

from model import events as ev
from model.checkpoint import load_checkpoint
from model.data import Corpus
from model.evaluation import FIRST_EVAL_BATCHES
from model.optim import lr_at
from model.rundir import MetricsLog, RunDir
from model.trainer import Trainer


def test_a_requested_evaluation_that_is_the_best_so_far_writes_best_pt(corpus: Corpus, tmp_path: Path) -> None:
    """Scheduled evaluations at 0 and 10, one asked for (the `e` key) at 14, then stopped: the
    best evaluation is the one at 14, and best.pt must hold its weights (it stayed at 10)."""
    model_config, train_config = tiny_configs(corpus, max_iters=1000, eval_interval=10, eval_iters=20,
                                              learning_rate=1e-2)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)
    seen = collect(trainer)
    evaluated_at_14 = threading.Event()

    def steer(event: ev.Event) -> None:
        if isinstance(event, ev.StepsDone) and event.iter == 14:
            trainer.steering.pause()
        if isinstance(event, ev.Paused):
            trainer.steering.request_eval()
        if isinstance(event, ev.EvalDone) and event.iter == 14:
            evaluated_at_14.set()
            trainer.steering.stop()

    trainer.add_listener(steer)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    assert evaluated_at_14.wait(60)
    thread.join(60)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert [e.iter for e in evals] == [0, 10, 14]
    assert evals[-1].is_best and trainer.evaluator.best_iter == 14  # the case this test is about (loss falls fast here)
    best = load_checkpoint(run_dir.best_path)
    assert best["iter"] == 14 and best["best_iter"] == 14 and best["best_val_loss"] == evals[-1].val_loss
    for name, weight in trainer.model.state_dict().items():
        assert torch.equal(best["model"][name], weight), name


def test_a_requested_evaluation_that_is_not_the_best_writes_nothing(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    trainer.run()
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir.ckpt_path, run_dir.best_path)}
    trainer.evaluator.best_val_loss = 0.0  # nothing beats it
    seen = collect(trainer)
    trainer.steering.request_eval()  # not training: done at once
    assert any(isinstance(e, ev.EvalDone) and not e.is_best for e in seen)
    assert not any(isinstance(e, ev.CheckpointSaved) for e in seen)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir.ckpt_path, run_dir.best_path)} == before


CHANGED = dict(learning_rate=2e-3, lr_schedule="cosine", warmup_iters=3, min_lr=1e-4, weight_decay=0.5,
               beta1=0.8, beta2=0.95, grad_clip=0.25, eval_interval=4, sample_interval=6, max_iters=24)


def test_every_setting_that_may_change_on_resume_takes_effect(corpus: Corpus, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model_config, first = tiny_configs(corpus, max_iters=10, eval_interval=10, sample_interval=10)
    assert all(getattr(first, k) != v for k, v in CHANGED.items())  # each one really changes
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    Trainer(corpus, model_config, first, run_dir=run_dir).run()
    changed = replace(first, **CHANGED)

    clipped_at: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters: object, max_norm: float, *args: object, **kwargs: object) -> torch.Tensor:
        clipped_at.append(max_norm)
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    resumed = Trainer(corpus, model_config, changed, resume=load_checkpoint(run_dir.ckpt_path), event_interval_s=0.0)
    decay, no_decay = resumed.optimizer.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == no_decay["betas"] == (0.8, 0.95)
    seen = collect(resumed)
    lrs: dict[int, float] = {}
    real_step = resumed.train_step

    def step(it: int) -> None:
        real_step(it)
        lrs[it] = resumed.optimizer.param_groups[0]["lr"]

    resumed.train_step = step  # type: ignore[method-assign]
    result = resumed.run()
    assert result.status == "finished" and result.iter == 24
    assert lrs == {it: pytest.approx(lr_at(it, changed)) for it in range(10, 24)}
    assert lrs[10] > 1.5e-3 and lrs[23] < 2e-4  # the new cosine from 2e-3 to 1e-4, not the constant 3e-4 before
    assert clipped_at and set(clipped_at) == {0.25}
    assert [e.iter for e in seen if isinstance(e, ev.EvalDone)] == [12, 16, 20, 24]
    assert [e.iter for e in seen if isinstance(e, ev.SampleGenerated)] == [12, 18, 24]
    # and what a checkpoint of the resumed run says is what it ran with
    state = resumed.state_dict()
    assert state["train_config"]["weight_decay"] == 0.5
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.5, 0.0]


# ---- random states: a checkpoint from any number of GPUs resumes on 1, on N, on the CPU -----------------------------
def gpu_checkpoint(corpus: Corpus, tmp_path: Path, gpus: int) -> dict:
    """A checkpoint as rank 0 of a job on `gpus` GPUs wrote it before this fix (one CUDA state per
    visible GPU) and with a CUDA sample generator's state: made on the CPU, the GPU parts written
    in as CUDA's generator writes them (16 bytes: seed and offset)."""
    model_config, train_config = tiny_configs(corpus, max_iters=4, eval_interval=4, sample_interval=4)
    run_dir = RunDir(tmp_path / "gpus")
    run_dir.prepare()
    Trainer(corpus, model_config, train_config, run_dir=run_dir).run()
    state = load_checkpoint(run_dir.ckpt_path)
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    state["rng"].update(cuda=[cuda_state.clone() for _ in range(gpus)], samples=cuda_state.clone(), device="cuda")
    state["world_size"] = gpus
    return state


@pytest.mark.parametrize("gpus", [1, 4])
def test_a_gpu_checkpoint_resumes_on_the_cpu_saying_what_was_not_restored(corpus: Corpus, tmp_path: Path,
                                                                          gpus: int) -> None:
    state = gpu_checkpoint(corpus, tmp_path, gpus)
    model_config, train_config = tiny_configs(corpus, max_iters=8, eval_interval=4, sample_interval=4)
    trainer = Trainer(corpus, model_config, train_config, resume=state)
    seen = collect(trainer)
    assert trainer.run().status == "finished"
    warnings = [e.message for e in seen if isinstance(e, ev.Warning) and "not restored" in e.message]
    assert len(warnings) == 1, warnings
    assert "GPU's random state" in warnings[0] and "samples generator's state (saved on cuda)" in warnings[0]
    assert "\n" not in warnings[0]


def test_a_gpu_checkpoint_restores_into_this_processs_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever number of GPUs wrote it (old checkpoints: one state per GPU), the state goes into
    this process's device alone: 8 states on a machine with 1 GPU raised IndexError before."""
    from model.random_state import restore_rng

    restored: list[tuple[torch.Tensor, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    gpu = torch.device("cuda", 1)
    assert restore_rng({"cuda": states}, gpu, {}) == []
    assert restore_rng({"cuda": states[3]}, gpu, {}) == []  # this version's checkpoints: one state
    assert [(int(s[0]), d) for s, d in restored] == [(0, gpu), (3, gpu)]


def test_a_checkpoint_holds_this_processs_gpu_state_only(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    model_config, train_config = tiny_configs(corpus)
    trainer = Trainer(corpus, model_config, train_config)
    asked: list[object] = []

    def get_rng_state(device: object = "cuda") -> torch.Tensor:
        asked.append(device)
        return torch.zeros(16, dtype=torch.uint8)

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state"))
    trainer.device = torch.device("cuda", 2)  # rank 2's GPU
    state = trainer.state_dict()
    assert asked == [torch.device("cuda", 2)] and state["rng"]["cuda"].shape == (16,)
    assert state["rng"]["device"] == "cuda"


@pytest.mark.cuda
def test_a_gpu_checkpoint_resumes_on_the_gpu_and_on_the_cpu(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=4, eval_interval=4, device="cuda")
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    Trainer(corpus, model_config, train_config, run_dir=run_dir).run()
    state = load_checkpoint(run_dir.ckpt_path)
    for device, lost in (("cuda", False), ("cpu", True)):
        again = replace(train_config, max_iters=6, device=device)
        trainer = Trainer(corpus, model_config, again, resume=state)
        seen = collect(trainer)
        assert trainer.run().status == "finished"
        assert any(isinstance(e, ev.Warning) and "not restored" in e.message for e in seen) == lost


# ---- a pause during an evaluation ------------------------------------------------------------------------------------
def test_a_pause_during_an_evaluation_holds_it_within_a_batch_and_it_goes_on_after(corpus: Corpus,
                                                                                  tmp_path: Path) -> None:
    """`p` during the first, long evaluation held nothing for minutes: the evaluation ran to its
    end first. Now it holds at the next batch, a save then holds the run as it was before the
    evaluation (resumed, it evaluates there again on the same batches), and resumed it goes on
    from the batch it stopped at, to the loss an uninterrupted evaluation gives."""
    model_config, train_config = tiny_configs(corpus, max_iters=1, eval_interval=10, eval_iters=50)
    straight = Trainer(corpus, model_config, train_config)
    seen_straight = collect(straight)
    straight.run()
    uninterrupted = [e for e in seen_straight if isinstance(e, ev.EvalDone)]

    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)
    seen = collect(trainer)
    held, saved = threading.Event(), threading.Event()

    def steer(event: ev.Event) -> None:
        if isinstance(event, ev.EvalProgress) and event.done == 5 and not held.is_set():
            trainer.steering.pause()
        if isinstance(event, ev.Paused):
            held.set()
        if isinstance(event, ev.CheckpointSaved) and event.reason == "request":
            saved.set()

    trainer.add_listener(steer)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        assert held.wait(30)
        progress = [e.done for e in seen if isinstance(e, ev.EvalProgress)]
        assert progress[-1] == 5 and not any(isinstance(e, ev.EvalDone) for e in seen)  # held within a batch
        trainer.steering.request_save()
        assert saved.wait(30)
        state = load_checkpoint(run_dir.ckpt_path)
        trainer.steering.request_eval()  # waits for the step boundary: no evaluation inside the held one
        assert trainer.iter == 0 and [e.done for e in seen if isinstance(e, ev.EvalProgress)] == progress
        trainer.steering.resume()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        trainer.steering.stop()
        trainer.steering.resume()
        thread.join(60)
    kinds = [type(e) for e in seen]
    assert kinds.index(ev.Paused) < kinds.index(ev.Resumed) < kinds.index(ev.EvalDone)
    after = [e.done for e in seen[kinds.index(ev.Resumed):kinds.index(ev.EvalDone)] if isinstance(e, ev.EvalProgress)]
    assert after[0] == 6 and after[-1] == 2 * FIRST_EVAL_BATCHES  # from where it stopped (step 0's: 10 a split)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert evals[0].iter == 0 and evals[0].val_loss == uninterrupted[0].val_loss
    assert evals[0].train_loss == uninterrupted[0].train_loss

    # the checkpoint saved while it was held: step 0, its evaluation not done, on the same batches when resumed
    assert state["iter"] == 0 and state["due_done"] is False
    again = Trainer(corpus, model_config, train_config, resume=state)
    seen_again = collect(again)
    again.run()
    first = next(e for e in seen_again if isinstance(e, ev.EvalDone))
    assert (first.iter, first.val_loss) == (0, uninterrupted[0].val_loss)


def test_an_evaluation_after_the_run_is_not_held_by_a_pause_left_set(corpus: Corpus) -> None:
    """`p` pressed as the run made its last sample: the loop ended paused. An evaluation asked for
    after it (a viewer's `e` on a finished run) must run, not wait forever for a resume that the
    ended run refuses (its server's control thread, and so the process's exit, hung on it)."""
    model_config, train_config = tiny_configs(corpus, max_iters=4, eval_interval=4, sample_interval=4)
    trainer = Trainer(corpus, model_config, train_config)
    trainer.add_listener(lambda e: trainer.steering.pause() if isinstance(e, ev.SampleGenerated) else None)
    seen = collect(trainer)
    assert trainer.run().status == "finished"
    asked = threading.Thread(target=trainer.steering.request_eval, daemon=True)
    asked.start()
    asked.join(30)
    assert not asked.is_alive(), "the evaluation is held by the pause"
    assert isinstance(seen[-1], ev.EvalDone) and not any(isinstance(e, ev.Paused) for e in seen[-3:])


def test_a_checkpoint_saved_while_held_counts_no_paused_time(corpus: Corpus, tmp_path: Path) -> None:
    model_config, train_config = tiny_configs(corpus, max_iters=1_000_000, eval_interval=1_000_000)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, event_interval_s=0.0)
    held = threading.Event()
    trainer.add_listener(lambda e: trainer.steering.pause() if isinstance(e, ev.StepsDone) and e.iter >= 3 else None)
    trainer.add_listener(lambda e: held.set() if isinstance(e, ev.Paused) else None)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        assert held.wait(30)
        at_pause = trainer.clock.time_s()
        import time

        time.sleep(1.0)
        trainer.steering.request_save()
        for _ in range(300):
            if run_dir.ckpt_path.exists() and load_checkpoint(run_dir.ckpt_path)["iter"] >= 3:
                break
            time.sleep(0.01)
        assert load_checkpoint(run_dir.ckpt_path)["elapsed_s"] == pytest.approx(at_pause, abs=0.05)
    finally:
        trainer.steering.stop()
        trainer.steering.resume()
        thread.join(30)


def test_a_checkpoint_of_another_optimizer_implementation_resumes_under_this_ones(
        corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint written where fused AdamW was missing (for-each), resumed where it is there:
    the groups say fused, and the moments were placed for it when loaded (on a GPU a CPU step
    count under fused AdamW fails the first step)."""
    from model import optim

    model_config, train_config = tiny_configs(corpus, max_iters=4, eval_interval=4)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    real = torch.optim.AdamW

    def without_fused(*args: object, fused: bool | None = None, **kwargs: object) -> torch.optim.AdamW:
        if fused:
            raise RuntimeError("no fused AdamW here")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(optim.torch.optim, "AdamW", without_fused)
    Trainer(corpus, model_config, train_config, run_dir=run_dir).run()
    monkeypatch.undo()
    state = load_checkpoint(run_dir.ckpt_path)
    assert not any(g.get("fused") for g in state["optimizer"]["param_groups"])
    placed: list[bool] = []
    load = torch.optim.Optimizer.load_state_dict

    def spy(self: torch.optim.Optimizer, given: dict) -> None:
        placed.extend(bool(g.get("fused")) for g in given["param_groups"])
        load(self, given)

    monkeypatch.setattr(torch.optim.Optimizer, "load_state_dict", spy)
    resumed = Trainer(corpus, model_config, replace(train_config, max_iters=6), resume=state)
    assert placed == [True, True]  # loaded with this run's flags, not set after the loading
    assert all(g["fused"] for g in resumed.optimizer.param_groups)
    assert resumed.run().status == "finished"


def test_a_best_that_could_not_be_written_does_not_stop_a_later_best_from_being(
        corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation losses 3.0, 2.0, 1.5 (its save fails: a full disk), 1.7, 1.8: best.pt must end
    with 1.7's weights. It stayed at 2.0's, and ckpt.pt named a best of 1.5 that no file held."""
    import errno

    import model.checkpointing as checkpointing
    from model.checkpoint import save_checkpoint
    from model.evaluation import Evaluator

    losses = iter([3.0, 2.0, 1.5, 1.7, 1.8, 3.0, 2.0, 1.5])
    monkeypatch.setattr(Evaluator, "estimate", lambda self, it, between, group=None: dict.fromkeys(
        ("train", "val"), next(losses)))
    saves_of_best = []

    def full_once(state: dict, path: Path, also: Path | None = None) -> None:
        if also is not None:
            saves_of_best.append(state["iter"])
            if len(saves_of_best) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        save_checkpoint(state, path, also)

    monkeypatch.setattr(checkpointing, "save_checkpoint", full_once)
    model_config, train_config = tiny_configs(corpus, max_iters=40, eval_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    seen = collect(trainer)
    result = trainer.run()
    assert saves_of_best == [0, 10, 20, 30]  # 1.7 beat the best best.pt held
    best, ckpt = load_checkpoint(run_dir.best_path), load_checkpoint(run_dir.ckpt_path)
    assert best["iter"] == 30 and (ckpt["best_val_loss"], ckpt["best_iter"]) == (1.7, 30)
    assert (result.best_val_loss, result.best_iter) == (1.7, 30)
    assert [e.iter for e in seen if isinstance(e, ev.CheckpointFailed)] == [20]
    # and when the failed one was the last evaluation: what `runs` says is the best kept
    from chargpt_tui.wire.runs import summarize

    saves_of_best.clear()
    monkeypatch.setattr(checkpointing, "save_checkpoint", full_once)
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10)
    run_dir = RunDir(tmp_path / "ended")
    run_dir.prepare()
    trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir)
    trainer.add_listener(log := MetricsLog(run_dir.metrics_path))
    trainer.run()
    log.close()
    summary = summarize(run_dir.path)
    assert (summary.best_val_loss, summary.best_iter) == (2.0, 10) == (load_checkpoint(run_dir.best_path)[
        "best_val_loss"], load_checkpoint(run_dir.best_path)["iter"])


def test_resuming_from_best_pt_in_its_own_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--resume RUN/best.pt went on in RUN, replacing its ckpt.pt, 160 steps later, without a word."""
    from chargpt_tui.commands.cli import main

    (tmp_path / "t.txt").write_text(make_text(), encoding="utf-8")
    run = tmp_path / "run"
    flags = ["--n-layers", "1", "--n-embed", "16", "--n-heads", "2", "--block-size", "8", "--batch-size", "2",
             "--device", "cpu", "--dtype", "float32", "--eval-iters", "1", "--headless"]
    assert main([str(tmp_path / "t.txt"), *flags, "--max-iters", "20", "--eval-interval", "10",
                 "--out-dir", str(run)]) == 0
    (run / "best.pt").unlink()
    (run / "best.pt").write_bytes((run / "ckpt.pt").read_bytes())  # a best.pt that is not ckpt.pt's file
    before = (run / "ckpt.pt").read_bytes()
    capsys.readouterr()
    assert main([str(tmp_path / "t.txt"), "--resume", str(run / "best.pt"), "--max-iters", "30", "--headless"]) == 2
    assert "--fork" in capsys.readouterr().err and (run / "ckpt.pt").read_bytes() == before
    # into another folder, its best is its own there, as a fork's: a file there (none was, ever)
    assert main([str(tmp_path / "t.txt"), "--resume", str(run / "ckpt.pt"), "--max-iters", "30",
                 "--out-dir", str(tmp_path / "on"), "--headless"]) == 0
    assert load_checkpoint(tmp_path / "on" / "best.pt")["best_val_loss"] == load_checkpoint(
        tmp_path / "on" / "ckpt.pt")["best_val_loss"]


def test_a_best_written_whose_ckpt_pt_was_not_stays_the_best(corpus: Corpus, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt is renamed into place first: when ckpt.pt's rename then fails, best.pt does hold
    the new best (1.5), and a later, worse evaluation (1.7) must not replace it."""
    import errno
    import os

    from model.evaluation import Evaluator

    losses = iter([3.0, 2.0, 1.5, 1.7])
    monkeypatch.setattr(Evaluator, "estimate", lambda self, it, between, group=None: dict.fromkeys(
        ("train", "val"), next(losses)))
    real_replace, best_renames = os.replace, []

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "best.pt":
            best_renames.append(dst)
        elif Path(dst).name == "ckpt.pt" and len(best_renames) == 3 and Path(src).exists():
            os.unlink(src)
            raise OSError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    model_config, train_config = tiny_configs(corpus, max_iters=30, eval_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    result = Trainer(corpus, model_config, train_config, run_dir=run_dir).run()
    monkeypatch.setattr(os, "replace", real_replace)
    assert load_checkpoint(run_dir.best_path)["iter"] == 20 and (result.best_val_loss, result.best_iter) == (1.5, 20)
