"""A Trainer's events out: its listeners, and its steps batched into a StepsDone a few times a
second (one copy of their losses to the CPU for the batch), with the loss history they feed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import events as ev
from .config import TrainConfig
from .history import LossHistory
from .optim import lr_at
from .step_timer import StepTimer
from .training_clock import TrainingClock

Listener = Callable[[ev.Event], None]


class Reporter:
    def __init__(self, clock: TrainingClock, config: TrainConfig, block_size: int, device: torch.device,
                 interval_s: float, listeners: Iterable[Listener] = ()) -> None:
        self.clock = clock
        self.config = config
        self.tokens_per_step = config.batch_size * block_size
        self.interval_s = interval_s  # how often steps are reported at most
        self.listeners: list[Listener] = list(listeners)
        self.history = LossHistory()  # every step's loss, bounded (model/history.py)
        self.step_timer = StepTimer(device)  # the steps' time on the device (model/step_timer.py)
        self.steps_timed, self.steps_timed_s = 0, 0.0  # this process's steps reported, and their time
        self._pending_iters: list[int] = []
        self._pending_losses: list[torch.Tensor] = []
        self._last_flush = 0.0

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: ev.Event) -> None:
        """To every listener; one that raises is reported to the others as a Warning, and kept."""
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not end the training
                if isinstance(event, ev.Warning):
                    continue
                warning = ev.Warning(event.iter, event.time_s, str(exc) or type(exc).__name__)
                for other in self.listeners:
                    if other is not listener:
                        try:
                            other(warning)
                        except Exception:
                            pass

    def step_done(self, steps_done: int, loss: torch.Tensor) -> None:
        """A step ended (`steps_done` steps in all), with this loss (still on the device)."""
        self._pending_iters.append(steps_done)
        self._pending_losses.append(loss.detach())

    def flush_due(self) -> bool:
        return time.perf_counter() - self._last_flush >= self.interval_s

    def flush(self) -> tuple[int, float] | None:
        """Send the steps since the last flush as one StepsDone event. Returns the first step
        whose loss is not finite (and that loss), if any."""
        self._last_flush = time.perf_counter()
        if not self._pending_iters:
            return None
        losses = torch.stack(self._pending_losses).float().cpu().tolist()  # one sync for the batch
        iters = tuple(self._pending_iters)
        step_s = self.step_timer.take()  # (after the losses' copy: on a GPU, the steps are done)
        self._pending_iters, self._pending_losses = [], []
        self.steps_timed += len(iters)
        self.steps_timed_s += step_s
        self.history.extend(iters, losses)
        tokens = len(iters) * self.tokens_per_step
        self.emit(ev.StepsDone(
            iters[-1], self.clock.time_s(), iters, tuple(losses), lr_at(iters[-1] - 1, self.config),
            tokens / step_s if step_s > 0 else 0.0, 1000.0 * step_s / len(iters),
        ))
        return next(((i, x) for i, x in zip(iters, losses) if not math.isfinite(x)), None)

    def state_dict(self) -> dict[str, Any]:
        return {"step_iters": torch.tensor(self.history.iters, dtype=torch.float64),
                "step_losses": torch.tensor(self.history.losses, dtype=torch.float32)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "step_iters" in state:
            self.history.load(state["step_iters"].tolist(), state["step_losses"].tolist())
