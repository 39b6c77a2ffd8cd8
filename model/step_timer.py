"""How long training steps take on the device that runs them: what step times, tokens/s and MFU
are computed from.

    timer = StepTimer(device)
    timer.start(); ...one step...; timer.stop()      # around each step, no synchronisation
    seconds = timer.take()                           # the steps' time since the last take()

On the CPU a step's work is done when its Python returns: the wall time between start and stop.
On a GPU it is not (kernels are queued and run later), so the time between the calls leaves out
most of it and tokens/s would read too high. There each step is bracketed by two CUDA events
recorded in the stream; take() waits for the last one (the trainer calls it right after copying
the steps' losses to the CPU, which has already waited for them) and sums the GPU time between
each pair. That is the step's time whichever side is the bottleneck: with the GPU busy the events
run back to back with the kernels; with the GPU waiting on Python, the gap between them is the
time Python took to queue the step. It matches `chargpt-tui bench`, which synchronises around
its steps, without a synchronisation per step in the training loop.
"""

from __future__ import annotations

import time

import torch


class StepTimer:
    def __init__(self, device: torch.device) -> None:
        self.on_gpu = device.type == "cuda"
        self._seconds = 0.0  # CPU: steps stopped since the last take()
        self._started = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # GPU: each step's pair
        self._start_event: torch.cuda.Event | None = None

    def start(self) -> None:
        if self.on_gpu:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self.on_gpu:
            assert self._start_event is not None, "stop() without start()"
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start_event, end))
            self._start_event = None
        else:
            self._seconds += time.perf_counter() - self._started

    def take(self) -> float:
        """Seconds the steps stopped since the last take() ran for; starts counting anew."""
        if self.on_gpu:
            if self._events:
                self._events[-1][1].synchronize()
            seconds = sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
            self._events.clear()
            return seconds
        seconds, self._seconds = self._seconds, 0.0
        return seconds
