"""What a loss or weights that are no longer finite do to a run: "stop" fails it (headless);
"pause" holds the loop, paused, so that a person can read what happened (the dashboard). Either
way the broken weights are never saved, and resuming from them is refused."""

from __future__ import annotations

import torch

from . import events as ev
from .checkpointing import Checkpoints
from .reporting import Reporter
from .steering import Steering

MODES = ("stop", "pause")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Divergence:
    @staticmethod
    def check(mode: str) -> None:
        if mode not in MODES:
            raise ValueError("on_divergence is 'stop' or 'pause'")

    def __init__(self, mode: str, checkpoints: Checkpoints, steering: Steering, reports: Reporter) -> None:
        self.check(mode)
        self.mode, self.checkpoints, self.steering, self.reports = mode, checkpoints, steering, reports
        self.message: str | None = None  # what happened, and what is kept; None while all is well

    def check_weights(self, model: torch.nn.Module, it: int, at: int) -> None:
        """Broken weights must hold or stop the run (and never be saved or sampled from)."""
        if self.message is None and not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            self.diverge(f"the weights are no longer finite at step {it}", at)

    def diverge(self, what: str, at: int) -> None:
        """Stop (raise TrainingDiverged) or hold, paused; `at`: the loop's step, for the event."""
        if self.message is not None:
            return
        kept = self.checkpoints.kept()
        self.steering.broken = True  # resuming these weights is refused, whichever the mode
        if self.mode == "stop":
            self.message = f"{what}; training stopped; {kept}"
            raise TrainingDiverged(self.message)
        self.message = f"{what}; training is held and these weights will not be saved; {kept}"
        path = self.checkpoints.kept_path()
        self.steering.hold_for_good()
        self.reports.emit(ev.Diverged(at, self.reports.clock.time_s(), self.message, str(path) if path else None,
                                      self.checkpoints.last_saved_iter))
