"""What other threads ask of a Trainer: pause, resume, stop, save, evaluate and snapshots of the
model. Safe from any thread; acted on between steps (model/control.py says who acts on what, and
when), so a checkpoint never lands mid-step.

With several processes (torchrun) a request is rank 0's: it goes to an inbox (`asked`) that
every rank's loop takes on at the points they agree on (model/distributed.py); with one, the
inbox is the loop's control itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .control import Requests, RunControl, take
from .gpt import GPT
from .reporting import Reporter


class Snapshot(Future):  # type: ignore[type-arg]
    """A snapshot asked for, and what to make of the model (None: a copy of it)."""

    def __init__(self, encode: Callable[[GPT], Any] | None) -> None:
        super().__init__()
        self.encode = encode


@dataclass(frozen=True)
class LoopActions:
    """What carrying out requests takes, which is the Trainer's to do."""

    step: Callable[[], int]  # the step the loop is at
    flush: Callable[[], None]  # report the steps not yet reported
    evaluate: Callable[[int], bool]  # an evaluation asked for at a step; False: a stop abandoned it
    save: Callable[[int, str], None]  # a checkpoint at a step, for a reason
    agree: Callable[[], None]  # several processes: every rank takes on rank 0's requests


class Steering:
    def __init__(self, model: GPT, reports: Reporter, actions: LoopActions, several: bool, is_main: bool) -> None:
        self.model, self.reports, self.actions, self.is_main = model, reports, actions, is_main
        self.control = RunControl()  # pause, stop, and requests: what the loop acts on
        self.asked = self.control if not several else RunControl()  # where requests go (see the module)
        self.broken = False  # the loss diverged: resuming is refused (those weights are broken)
        self.in_loop = False  # the loop runs (pauses hold it); outside it, requests are done at once

    @property
    def paused(self) -> bool:
        return self.asked.pause.is_set()

    def pause(self) -> None:
        self.asked.pause.set()
        self.control.wake.set()

    def resume(self) -> bool:
        """Resume a paused loop. Refused (False) after the loss diverged: those weights are broken."""
        if self.broken:
            return False
        self.asked.pause.clear()
        self.control.wake.set()
        return True

    def hold_for_good(self) -> None:
        """The weights broke: pause, and refuse to resume."""
        self.broken = True
        self.asked.pause.set()
        self.control.pause.set()

    def request_save(self) -> None:
        """Save ckpt.pt at the next step boundary; at once (in this thread) when not training."""
        self.control.ask(self.asked.save.set, lambda: self.actions.save(self.actions.step(), "request"))

    def request_eval(self) -> None:
        """Evaluate at the next step boundary; at once (in this thread) when not training."""
        self.control.ask(self.asked.evaluate.set, lambda: self.actions.evaluate(self.actions.step()))

    def stop(self) -> None:
        self.asked.stop.set()
        self.control.wake.set()

    @property
    def stop_requested(self) -> bool:
        return self.asked.stop.is_set()

    def snapshot(self, encode: Callable[[GPT], Any] | None = None) -> Future[Any]:
        """A copy of the model as it is now (eval mode), taken between steps; or, with `encode`,
        what encode(model) makes of the live model then (bytes of its weights, say: no copy of
        the model is made, and nothing changes the weights while it runs).

        For generating while training goes on. Resolves at the next step boundary (after the
        evaluation in progress, if any, unless a pause holds it: then at once), at the loop's end
        if that comes first, or at once when the loop is not running: never left unanswered. A
        cancelled future is skipped.
        """
        future = Snapshot(encode)
        self.control.ask(lambda: self.control.snapshots.put(future), lambda: self.answer(future))
        return future

    # ---- the loop's side ----------------------------------------------------------------------
    def serve(self, it: int, evaluated: bool = False) -> bool:
        """Act on the evaluate, save and snapshot requests made since the last step (`evaluated`:
        just evaluated, or in one: a requested evaluation waits). False if a stop abandoned the
        evaluation asked for."""
        requests = self.control.take(evaluate=not evaluated)
        abandoned = requests.evaluate and not self.actions.evaluate(it)
        if requests.save and not abandoned:  # (abandoned: the stop's own save comes next)
            self.actions.save(it, "request")
        self.answer_all(requests.snapshots)
        return not abandoned

    def wait_while_paused(self, it: int, evaluating: bool = False) -> None:
        """Hold until resumed or stopped, serving requests meanwhile. `evaluating`: held inside an
        evaluation, which goes on from the same batch after; no other evaluation starts then (one
        asked for waits for the next step boundary), and a save holds the run as it was before
        this evaluation (Evaluator.state_dict)."""
        self.actions.flush()
        clock = self.reports.clock
        self.reports.emit(ev.Paused(it, clock.time_s()))
        clock.hold()  # time spent paused is not training time
        try:
            while self.control.pause.is_set() and not self.control.stop.is_set():
                if self.is_main:  # (the others wait for rank 0 in agree)
                    self.control.wake.wait(timeout=1.0)
                    self.control.wake.clear()
                self.actions.agree()
                if not self.serve(it, evaluated=evaluating):
                    break
        finally:
            clock.release()
        if not self.control.stop.is_set():
            self.reports.emit(ev.Resumed(it, clock.time_s()))

    def between_eval_batches(self, it: int) -> bool:
        """Before each batch of an evaluation: agree (a stop abandons it in every process), and
        hold there if a pause was asked for during it (an evaluation asked for while paused runs
        through: the person asked for it; one done after the run has no pause to hold for).
        False: a stop abandons it."""
        self.actions.agree()
        control = self.control
        if self.in_loop and control.pause.is_set() and not self.reports.clock.held and not control.stop.is_set():
            self.wait_while_paused(it, evaluating=True)
        return not control.stop.is_set()

    def serve_last(self, it: int, several: bool) -> None:
        """At the loop's end, on the process that acts (rank 0): what was asked while it ended
        (with several processes, also what its inbox holds, not yet agreed on). An evaluation is
        done unless a stop ended the run; a save always (snapshots were answered already)."""
        last = self.control.last
        if several:
            last = Requests(last.evaluate or take(self.asked.evaluate), last.save or take(self.asked.save),
                            last.snapshots)
        try:
            if last.evaluate and not self.control.stop.is_set():
                self.actions.evaluate(it)
            if last.save:
                self.actions.save(it, "request")
        except Exception as exc:  # the run's own ending (finished, failed) is what to report
            message = f"a request at the end of the run failed: {exc}"
            self.reports.emit(ev.Warning(it, self.reports.clock.time_s(), message))

    def answer_all(self, futures: list[Future[Any]]) -> None:
        for future in futures:
            self.answer(future)

    def answer(self, future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled: no copy made for nobody
        encode = future.encode if isinstance(future, Snapshot) else None
        try:
            future.set_result(encode(self.model) if encode is not None else self._copy_model())
        except Exception as exc:  # out of memory, say: the caller hears of it rather than waits
            future.set_exception(exc)

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait for a running loop to end (after stop(), say). True if it is not running now."""
        return self.control.wait_until_idle(timeout)

    def _copy_model(self) -> GPT:
        model = copy.deepcopy(self.model)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

