"""A hint, once, early in a run on a CPU that will take long: its ETA, and the preset made for
such a machine. Tried as a new user would, the seed's settings on a 2-core CPU ran at a second a
step with an ETA of 1 h 40 min, and nothing on screen said that `--preset cpu` exists.

    trainer.add_listener(SlowRunHint(trainer, preset))   # added last: it emits through the trainer

It watches the run's own steps and evaluations; after the first few seconds of steps it
estimates the time the whole run takes (steps left at the measured step time, evaluations left
at the measured evaluation time, or a guess from the step time before the first one is timed)
and, when that is over `limit_s`, emits one Hint event: the dashboard's messages and the
headless log show it, metrics.jsonl keeps it.
"""

from __future__ import annotations

from model import events as ev
from model.config import PRESETS
from model.trainer import Trainer

from .format import about

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
        self._eval_s: float | None = None

    def __call__(self, event: ev.Event) -> None:
        if self.done:
            return
        if isinstance(event, ev.EvalStarted):
            self._eval_started = event.time_s
        elif isinstance(event, ev.EvalDone) and self._eval_started is not None:
            self._eval_s = event.time_s - self._eval_started
        elif isinstance(event, ev.StepsDone):
            self._steps += len(event.iters)
            self._step_s += event.ms_per_step * len(event.iters) / 1000.0
            if self._steps >= self.after_steps and self._step_s >= self.after_s:
                self.done = True  # one estimate, one hint at most
                self._maybe_hint(event)

    def estimate_s(self, at: ev.StepsDone) -> float:
        """Training time the whole run will have taken: so far, plus what is left."""
        cfg = self.trainer.config
        step_s = self._step_s / self._steps
        # an evaluation is 2 x eval_iters forward passes, about a third of a step each
        eval_s = self._eval_s if self._eval_s is not None else 2 * cfg.eval_iters * step_s / 3
        steps_left = max(0, cfg.max_iters - at.iter)
        evals_left = cfg.max_iters // cfg.eval_interval - at.iter // cfg.eval_interval
        return at.time_s + steps_left * step_s + max(0, evals_left) * eval_s

    def _maybe_hint(self, at: ev.StepsDone) -> None:
        total = self.estimate_s(at)
        if total <= self.limit_s:
            return
        left = total - at.time_s
        preset = PRESETS[FAST_PRESET]
        reaches = f": {preset.reaches}" if preset.reaches else ""
        self.trainer.hint(
            f"at {at.ms_per_step:.0f} ms a step on this CPU, these settings take about {about(total)} "
            f"({about(left)} from now). --preset {FAST_PRESET} is made for a CPU{reaches}"
        )
