"""A hint, once, early in a run on a CPU that will take long: its ETA, and the preset made for
such a machine. Tried as a new user would, the seed's settings on a 2-core CPU ran at a second a
step with an ETA of 1 h 40 min, and nothing on screen said that `--preset cpu` exists.

    trainer.add_listener(SlowRunHint(trainer, preset))   # added last: it emits through the trainer

It watches the run's own steps and evaluations; a few seconds in (into the first steps, or into
the first evaluation, which comes before them) it estimates the time the whole run takes (the
steps left at the step time, the evaluations left at the evaluation time) and, when that is over
`limit_s`, emits one Hint event: the dashboard's messages and the headless log show it, and
metrics.jsonl keeps it.
"""

from __future__ import annotations

from chargpt_tui.format import about
from model import events as ev
from model.config import PRESETS
from model.trainer import Trainer

FAST_PRESET = "cpu"


class SlowRunHint:
    def __init__(self, trainer: Trainer, preset: str | None, limit_s: float = 20 * 60, after_s: float = 5.0,
                 after_steps: int = 5) -> None:
        self.trainer = trainer
        self.limit_s = limit_s
        self.after_s, self.after_steps = after_s, after_steps
        # only on a CPU, and only where a faster preset is there to name
        self.done = trainer.device.type != "cpu" or preset == FAST_PRESET
        self._steps = 0
        self._step_s = 0.0
        self._eval_started: float | None = None
        self._eval_s: float | None = None  # an evaluation's time at eval_iters batches
        self._eval_batches = 1  # of each split, in the evaluation that started last
        self._estimated = False  # from the first evaluation, before any step

    def __call__(self, event: ev.Event) -> None:
        if self.done:
            return
        if isinstance(event, ev.EvalStarted):
            self._eval_started = event.time_s
            self._eval_batches = max(1, event.eval_iters)
        elif isinstance(event, ev.EvalDone) and self._eval_started is not None:
            # (the one at step 0 may take fewer batches than the later ones)
            self._eval_s = (event.time_s - self._eval_started) * self.trainer.config.eval_iters / self._eval_batches
        elif isinstance(event, ev.EvalProgress) and self._steps == 0 and self._eval_started is not None:
            # The first evaluation comes before any step (at the seed's settings on a slow CPU, it
            # alone takes minutes): estimate from its batches, a step being about three of them
            # (forward, and a backward of twice its work).
            spent = event.time_s - self._eval_started
            if spent >= self.after_s and event.done >= self.after_steps and not self._estimated:
                self._estimated = True  # once from the evaluation; the steps' own time is better, later
                batch_s = spent / event.done
                self.done = self._maybe_hint(event.iter, event.time_s + (event.total - event.done) * batch_s,
                                             3 * batch_s, batch_s * 2 * self.trainer.config.eval_iters,
                                             "estimated from its first evaluation")
        elif isinstance(event, ev.StepsDone):
            self._steps += len(event.iters)
            self._step_s += event.ms_per_step * len(event.iters) / 1000.0
            if self._steps >= self.after_steps and self._step_s >= self.after_s:
                self.done = True  # one estimate, one hint at most
                step_s = self._step_s / self._steps
                # an evaluation is 2 x eval_iters forward passes, about a third of a step each
                eval_s = self._eval_s if self._eval_s is not None else 2 * self.trainer.config.eval_iters * step_s / 3
                self._maybe_hint(event.iter, event.time_s, step_s, eval_s, "measured")

    def estimate_s(self, it: int, time_s: float, step_s: float, eval_s: float) -> float:
        """Training time the whole run will have taken: `time_s` so far (at step `it`), plus the
        steps and the scheduled evaluations still to come."""
        cfg = self.trainer.config
        steps_left = max(0, cfg.max_iters - it)
        evals_left = max(0, cfg.max_iters // cfg.eval_interval - it // cfg.eval_interval)
        return time_s + steps_left * step_s + evals_left * eval_s

    def _maybe_hint(self, it: int, time_s: float, step_s: float, eval_s: float, how: str) -> bool:
        """Hint if the run will take over limit_s; whether it did."""
        total = self.estimate_s(it, time_s, step_s, eval_s)
        if total <= self.limit_s:
            return False
        preset = PRESETS[FAST_PRESET]
        reaches = f": {preset.reaches}" if preset.reaches else ""
        self.trainer.hint(
            f"at about {1000 * step_s:.0f} ms a step ({how}), these settings take about {about(total)} "
            f"on this CPU. --preset {FAST_PRESET} is made for a CPU{reaches}"
        )
        return True
