"""What a viewer that arrives late needs to draw the dashboard: the run's start, the whole loss
history (bounded, as the chart keeps it), recent messages and samples, and the state now.

It is fed the trainer's events, live in the training process or read back from metrics.jsonl,
and hands out a short list of events that, replayed, put a fresh dashboard where a dashboard
that watched from the start would be. Bounded whatever the run does: the loss history is thinned
as the chart thins it, evaluations likewise past MAX_EVALS, and of the messages and samples it
keeps the latest (MAX_SAMPLES samples), each text cut at MAX_TEXT characters.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from model import events as ev
from model.history import LossHistory

# Events a late viewer is shown again: what the messages and samples panels list, and the end.
REPLAYED = (ev.EvalDone, ev.SampleGenerated, ev.CheckpointSaved, ev.CheckpointFailed, ev.Warning, ev.Hint,
            ev.Diverged, ev.Finished, ev.Failed)
MAX_EVALS = 2000  # evaluations in the catch-up's history; past it, every other one of the older half goes
MAX_SAMPLES = 20  # samples among the replayed events (the panel shows the latest; earlier ones scroll)
MAX_TEXT = 2000  # characters of a replayed sample or message (a sample is as long as --sample-tokens)
_TEXT_FIELDS = {ev.SampleGenerated: "text", ev.Warning: "message", ev.Hint: "message", ev.Failed: "error",
                ev.Diverged: "message", ev.CheckpointFailed: "error"}


class RunJournal:
    def __init__(self, max_replayed: int = 200) -> None:
        self.started: ev.RunStarted | None = None
        self.steps = LossHistory(max_points=4000)
        self.evals: list[tuple[int, float, float]] = []
        self.recent: deque[tuple[ev.Event, float]] = deque(maxlen=max_replayed)
        self.last_steps: ev.StepsDone | None = None
        self.threads: ev.ThreadsChanged | None = None  # the latest change since the start
        self.iter = 0
        self.time_s = 0.0
        self.paused = False
        self.ended: ev.Finished | ev.Failed | None = None

    def add(self, event: ev.Event, at: float) -> None:
        if isinstance(event, ev.RunStarted):
            self._start(event)
        elif isinstance(event, ev.StepsDone):
            self.steps.extend(event.iters, event.losses)
            self.last_steps = event
        elif isinstance(event, ev.EvalDone):
            self.evals.append((event.iter, event.train_loss, event.val_loss))
            if len(self.evals) > MAX_EVALS:
                half = len(self.evals) // 2
                self.evals = self.evals[:half:2] + self.evals[half:]
        elif isinstance(event, ev.ThreadsChanged):
            self.threads = event
        elif isinstance(event, ev.Paused):
            self.paused = True
        elif isinstance(event, ev.Resumed):
            self.paused = False
        elif isinstance(event, (ev.Finished, ev.Failed)):
            self.ended = event
        if isinstance(event, REPLAYED):
            self._replay_later(event, at)
        self.iter = max(self.iter, event.iter) if not isinstance(event, ev.RunStarted) else event.iter
        self.time_s = event.time_s

    def _start(self, event: ev.RunStarted) -> None:
        if not event.resumed or event.step_history or event.eval_history or self.started is None:
            # a new run starts from nothing; a resumed one has its history from the checkpoint
            self.steps = LossHistory(max_points=4000)
            self.steps.load((p[0] for p in event.step_history), (p[1] for p in event.step_history))
            self.evals = [(int(i), t, v) for i, t, v in event.eval_history]
        else:
            # read back from metrics.jsonl, where a start line has no history: what was logged
            # after the step this run resumed from was lost with the process that logged it
            self.steps.truncate_after(event.iter)
            self.evals = [e for e in self.evals if e[0] <= event.iter]
        self.started = event
        self.threads = None
        self.forget_end()

    def _replay_later(self, event: ev.Event, at: float) -> None:
        name = _TEXT_FIELDS.get(type(event))
        if name is not None and len(getattr(event, name)) > MAX_TEXT:
            event = dataclasses.replace(event, **{name: getattr(event, name)[:MAX_TEXT] + "…"})
        if isinstance(event, ev.SampleGenerated):
            samples = [i for i, (e, _) in enumerate(self.recent) if isinstance(e, ev.SampleGenerated)]
            if len(samples) >= MAX_SAMPLES:
                del self.recent[samples[0]]
        self.recent.append((event, at))

    def forget_end(self) -> None:
        """A new segment of the run begins (a resume): an earlier segment's end is not its own."""
        self.paused = False
        self.ended = None
        kept = [(e, at) for e, at in self.recent if not isinstance(e, (ev.Finished, ev.Failed))]
        self.recent = deque(kept, maxlen=self.recent.maxlen)

    def catch_up(self) -> list[tuple[ev.Event, float]]:
        """Events that bring a new dashboard up to now, oldest first, with their wall times."""
        if self.started is None:
            return []
        at = self.recent[-1][1] if self.recent else 0.0
        start = dataclasses.replace(
            self.started, iter=self.iter, time_s=self.time_s, step_history=self.steps.pairs(),
            eval_history=tuple(self.evals), resumed=self.started.resumed,
        )
        out: list[tuple[ev.Event, float]] = [(start, at), *self.recent]
        if self.threads is not None:  # the threads now, where they changed since the start
            out.append((self.threads, at))
        if self.last_steps is not None:  # the latest throughput and learning rate, no points
            out.append((dataclasses.replace(self.last_steps, iter=self.iter, time_s=self.time_s, iters=(), losses=()),
                        at))
        if self.paused and self.ended is None:
            out.append((ev.Paused(self.iter, self.time_s), at))
        return out
