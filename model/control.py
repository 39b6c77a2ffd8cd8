"""What other threads ask of a training loop, and who acts on it: RunControl.

    control = RunControl()
    control.ask(control.save, do_now)       # any thread: queued for the loop, or done now
    with control.loop():                    # the loop's thread, around the loop
        requests = control.take()           # at each step boundary: what was asked since
    # leaving loop(): control.last holds what was asked as the loop ended

A request has one owner. While the loop runs, the loop: the request is queued (and the loop
woken) and acted on at the next step boundary, or in the loop's last look at its requests as it
ends. Otherwise the caller, at once, holding the run lock so that a run cannot start under it;
or, for a listener of a run's last events, the run's own thread. The switch between the two is
made under a lock that no work is ever done under: work emits events, and a listener may ask for
more. Pause and stop are plain flags the loop reads between steps.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def take(flag: threading.Event) -> bool:
    """Whether the flag was set, clearing it."""
    was = flag.is_set()
    flag.clear()
    return was


@dataclass(frozen=True)
class Requests:
    """What was asked of the loop since it last looked: an evaluation, a save, snapshots."""

    evaluate: bool = False
    save: bool = False
    snapshots: list[Future[Any]] = field(default_factory=list)


class RunControl:
    def __init__(self) -> None:
        self.pause = threading.Event()
        self.stop = threading.Event()
        self.wake = threading.Event()  # set with every request: a paused loop looks at once
        self.save = threading.Event()
        self.evaluate = threading.Event()
        self.snapshots: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.running = threading.Lock()  # held by the loop's thread for the whole run
        self.last = Requests()  # what was asked as the latest loop ended
        self._switch = threading.Lock()  # guards _looping; never held while work is done
        self._looping = False
        self._run_thread: int | None = None

    def ask(self, enqueue: Callable[[], object], do_now: Callable[[], object]) -> None:
        """enqueue() for the running loop, or do_now() here (see the module's docstring)."""
        while True:
            with self._switch:
                if self._looping:
                    enqueue()
                    self.wake.set()
                    return
                in_run_thread = self._run_thread == threading.get_ident()
                took = not in_run_thread and self.running.acquire(blocking=False)
            if in_run_thread:
                do_now()
                return
            if took:
                try:
                    do_now()
                finally:
                    self.running.release()
                return
            time.sleep(0.01)  # a run is starting or ending: it takes requests, or lets go, soon

    @contextmanager
    def run(self) -> Iterator[None]:
        """Around a whole run, in its thread (the run lock; listeners of its last events)."""
        with self.running:
            self._run_thread = threading.get_ident()
            try:
                yield
            finally:
                self._run_thread = None

    @contextmanager
    def loop(self) -> Iterator[None]:
        """Around the loop: requests are queued for it inside, and done by whoever asks after.
        What was queued but not yet taken when it ends is in `last`."""
        with self._switch:
            self._looping = True
        try:
            yield
        finally:
            with self._switch:
                self._looping = False
                self.last = self.take()

    def take(self, evaluate: bool = True) -> Requests:
        """The requests not yet acted on (leaving a requested evaluation queued if not
        `evaluate`: the loop has just evaluated at this step)."""
        wants_evaluation = evaluate and self.evaluate.is_set()
        if wants_evaluation:
            self.evaluate.clear()
        wants_save = self.save.is_set()
        self.save.clear()
        futures = []
        while True:
            try:
                futures.append(self.snapshots.get_nowait())
            except queue.Empty:
                return Requests(wants_evaluation, wants_save, futures)

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait for a running loop to end. True if none is running now."""
        if not self.running.acquire(timeout=timeout):
            return False
        self.running.release()
        return True
