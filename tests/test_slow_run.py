"""chargpt_tui/host/slow_run.py: the hint, once, that a CPU run will take long and a preset fits."""

from __future__ import annotations

from helpers import tiny_configs

from chargpt_tui.host.slow_run import SlowRunHint
from model import events as ev
from model.data import Corpus
from model.trainer import Trainer


def steps(first: int, last: int, time_s: float, ms_per_step: float) -> ev.StepsDone:
    iters = tuple(range(first, last + 1))
    return ev.StepsDone(last, time_s, iters, tuple(3.0 for _ in iters), 3e-4, 1000.0, ms_per_step)


def watched(corpus: Corpus, preset: str | None, **train: object) -> tuple[Trainer, SlowRunHint, list[ev.Hint]]:
    model_config, train_config = tiny_configs(corpus, **train)
    trainer = Trainer(corpus, model_config, train_config)
    hint = SlowRunHint(trainer, preset)
    hints: list[ev.Hint] = []
    trainer.add_listener(lambda e: hints.append(e) if isinstance(e, ev.Hint) else None)
    trainer.add_listener(hint)
    return trainer, hint, hints


def test_the_seeds_settings_on_a_slow_cpu_get_one_hint_naming_the_cpu_preset(corpus: Corpus) -> None:
    # the numbers: 5000 steps of 972 ms, an evaluation of 100 s every 500 steps
    trainer, hint, hints = watched(corpus, "seed", max_iters=5000, eval_interval=500, eval_iters=200)
    for event in (ev.EvalStarted(0, 0.0, 200), ev.EvalDone(0, 100.0, 4.2, 4.2, 4.2, 0, True),
                  steps(1, 3, 103.0, 972.0), steps(4, 6, 106.0, 972.0), steps(7, 9, 109.0, 972.0)):
        trainer.reports.emit(event)
    assert len(hints) == 1
    message = hints[0].message
    assert "972 ms a step (measured)" in message and "--preset cpu" in message and "1 h" in message, message
    assert 5000 * 0.972 + 10 * 100 < hint.estimate_s(9, 109.0, 0.972, 100.0) < 5000 * 0.972 + 11 * 100 + 200
    trainer.reports.emit(steps(10, 12, 112.0, 972.0))
    assert len(hints) == 1  # once


def test_no_hint_for_a_quick_run_for_the_cpu_preset_itself_or_off_the_cpu(corpus: Corpus) -> None:
    trainer, _, hints = watched(corpus, "seed", max_iters=2000, eval_interval=500, eval_iters=20)
    for i in range(1, 40, 3):
        trainer.reports.emit(steps(i, i + 2, i * 0.02, 20.0))  # 20 ms a step: under a minute in all
    assert hints == []
    trainer, _, hints = watched(corpus, "cpu", max_iters=100_000, eval_interval=500)
    trainer.reports.emit(steps(1, 10, 10.0, 1000.0))
    assert hints == []
    trainer, hint, hints = watched(corpus, None, max_iters=100_000, eval_interval=500)
    assert not hint.done  # custom settings on a CPU: watched
    trainer.device = type(trainer.device)("cuda")
    assert SlowRunHint(trainer, None).done  # a GPU: nothing to say


def test_a_first_evaluation_that_takes_minutes_gives_the_hint_before_any_step(corpus: Corpus) -> None:
    # 400 batches of 0.3 s: two minutes of evaluation before step 1, then about 0.9 s a step
    trainer, _, hints = watched(corpus, "seed", max_iters=5000, eval_interval=500, eval_iters=200)
    trainer.reports.emit(ev.EvalStarted(0, 0.0, 200))
    for done in range(1, 30):
        trainer.reports.emit(ev.EvalProgress(0, done * 0.3, done, 400))
    assert len(hints) == 1 and hints[0].iter == 0
    assert "900 ms a step (estimated from its first evaluation)" in hints[0].message, hints[0].message
    assert "--preset cpu" in hints[0].message


def test_an_estimate_from_the_evaluation_under_the_limit_leaves_the_steps_to_decide(corpus: Corpus) -> None:
    trainer, hint, hints = watched(corpus, "seed", max_iters=5000, eval_interval=500, eval_iters=200)
    trainer.reports.emit(ev.EvalStarted(0, 0.0, 200))
    for done in range(1, 30):
        trainer.reports.emit(ev.EvalProgress(0, done * 0.01, done, 400))  # a quick evaluation: no hint
    assert hints == [] and not hint.done
    for i in range(1, 10, 3):
        trainer.reports.emit(steps(i, i + 2, 4.0 + i, 1000.0))  # but the steps take a second each
    assert len(hints) == 1 and "(measured)" in hints[0].message
