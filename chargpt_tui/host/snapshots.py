"""The weights a viewer asks for (to generate from): one payload at a time, shared.

A snapshot is the model's state_dict as torch.save writes it (what a checkpoint holds of a
model, so that the viewer loads it as one), encoded by the training loop at a step boundary
straight from the live weights: no copy of the model is made for it (torch.save copies a GPU's
tensors to the host one at a time as it writes them). The payload is kept while any viewer is
still being sent it, and a viewer that asks meanwhile is sent the same one while it is at most
SHARE_S old (the weights of a moment ago); past that it waits for the last holder to be done, and
a new one is taken then. However many viewers ask, the training process holds at most one
payload: one model's worth of memory. And however often they ask, a new one is taken at most
once per GAP_FACTOR times as long as the last took to encode (and MIN_GAP_S): encoding is the
training loop's time, and a client asking again as soon as it has one took a third of it.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict
from typing import Any

import torch

from model.gpt import GPT
from model.trainer import Trainer

# How long a snapshot waits for the loop's next step boundary (an evaluation of the default
# preset takes about 100 s on a slow 2-core CPU); under the viewer's own 120 s, so that the
# viewer hears why rather than only that nothing came.
SNAPSHOT_TIMEOUT_S = 100.0
SHARE_S = 5.0  # how old a payload being sent may be and still be sent to one more viewer
GAP_FACTOR, MIN_GAP_S = 20.0, 1.0  # between encodings: at most 1/21 of the loop's time is spent on them

# deliver(waiter, payload or None, error or None): called in the server's loop for each waiter
Deliver = Callable[[Any, memoryview | None, str | None], None]


class Snapshots:
    def __init__(self, trainer: Trainer, run_in: Executor, call_in_loop: Callable[..., None], deliver: Deliver) -> None:
        self.trainer = trainer
        self.run_in = run_in  # the control thread (it waits for the loop's step boundary)
        self.call_in_loop = call_in_loop  # loop.call_soon_threadsafe
        self.deliver = deliver
        self.payload: memoryview | None = None  # the payload being sent, while anyone holds it
        self.payload_at = 0.0  # when it was taken (monotonic)
        self.holders = 0
        self._waiters: list[Any] = []
        self.encodings = 0  # how many were taken (tests count them)
        self._next_at = 0.0  # when the next may be taken (monotonic)
        self._deferred = False  # a take is scheduled for _next_at

    def ask(self, waiter: Any) -> None:
        """In the server's loop: send `waiter` the weights (the payload being sent, if recent; else
        a new one, once nobody holds the last)."""
        if self.payload is not None and time.monotonic() - self.payload_at <= SHARE_S:
            self.holders += 1
            self.deliver(waiter, self.payload, None)
            return
        self._waiters.append(waiter)
        if len(self._waiters) == 1 and self.payload is None:
            self._submit()

    def release(self) -> None:
        """In the server's loop: a holder has been sent the payload (or is gone)."""
        self.holders -= 1
        if self.holders <= 0:
            self.holders, self.payload = 0, None
            if self._waiters:  # (asked while an older payload was still being sent)
                self._submit()

    def _submit(self) -> None:
        """In the server's loop: take a new payload, now or once the gap since the last is over."""
        wait = self._next_at - time.monotonic()
        if wait > 0:
            if not self._deferred:
                self._deferred = True
                asyncio.get_running_loop().call_later(wait, self._deferred_submit)
            return
        try:
            self.run_in.submit(self._take)
        except RuntimeError:  # the server is closing: no more snapshots
            self._answer(None, "the run's process is closing")

    def _deferred_submit(self) -> None:
        self._deferred = False
        if self._waiters and self.payload is None:
            self._submit()

    def _take(self) -> None:
        """In the control thread: the weights, encoded at the loop's next step boundary."""
        try:
            future = self.trainer.steering.snapshot(encode=self._encode)
            try:
                payload, error = future.result(timeout=SNAPSHOT_TIMEOUT_S), None
            except FuturesTimeout:
                future.cancel()  # the loop skips a cancelled request: nothing made for nobody
                raise TimeoutError(f"the training loop did not reach a step boundary within "
                                   f"{SNAPSHOT_TIMEOUT_S:.0f} s") from None
        except Exception as exc:  # reported to the viewers; training is not this thread's business
            payload, error = None, f"snapshot failed: {exc}"
        self.call_in_loop(self._answer, payload, error)  # (nobody to tell once the loop is closed)

    def _answer(self, payload: memoryview | None, error: str | None) -> None:
        waiters, self._waiters = self._waiters, []
        if payload is not None:
            self.payload, self.payload_at, self.holders = payload, time.monotonic(), len(waiters)
        for waiter in waiters:
            self.deliver(waiter, payload, error)

    def _encode(self, model: GPT) -> memoryview:
        """In the training loop, at a step boundary: the live weights as a checkpoint holds them."""
        started = time.monotonic()
        buffer = io.BytesIO()
        state = {k: v.detach() for k, v in model.state_dict().items()}  # (the viewer loads it onto the CPU)
        torch.save({"model_config": asdict(self.trainer.model_config), "train_config": asdict(self.trainer.config),
                    "vocab": "".join(self.trainer.corpus.tokenizer.chars), "model": state}, buffer)
        done = time.monotonic()
        self.encodings += 1
        self._next_at = done + max(MIN_GAP_S, GAP_FACTOR * (done - started))
        return buffer.getbuffer()  # the buffer itself, not a copy of it
