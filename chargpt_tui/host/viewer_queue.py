"""One viewer, as the training process sees it (Viewer): what waits to be sent to it, within its
budget, and whether its socket is taking it.

Two kinds of data wait for a viewer:
- live frames (events, replies, memory figures): shared bytes, counted against the viewer's
  budget; step batches not yet sent are merged, so a viewer that is behind gets fewer, larger ones;
- bulk data it is sent once (its catch-up, a snapshot of the weights it asked for): shared bytes
  outside the live budget, written in chunks, and to be taken at MIN_RATE at least.

Progress measures, from the outside, whether the viewer reads: the bytes still waiting in
asyncio's buffer plus those its socket holds unread (SIOCOUTQ). A socket that takes nothing for
the stall timeout is cut off, counted from the first byte it did not take, not from when asyncio's
own 64 KiB buffer filled (which took 22-39 s at a few KB/s of steps).
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chargpt_tui.wire import protocol
from model import events as ev

from .rate_limit import RateLimit

MIN_RATE = 1 << 20  # bytes a second: the slowest a viewer may take bulk data (a local socket does 100x that)
BULK_GRACE_S = 10.0  # bulk data of any size may take this long
CHUNK = 64 << 10  # bulk data is handed to asyncio this much at a time (its buffer never holds a copy of it all)


@dataclass
class Bulk:
    """Bytes sent once to a viewer, shared with any other viewer sent the same (not copied)."""

    parts: list[bytes | memoryview]
    on_done: Callable[[], None] | None = None  # called once: when written, or when the viewer is gone

    def done(self) -> None:
        self.parts = []  # nothing here keeps a shared payload alive any more
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done()

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def allowed_s(self) -> float:
        return max(BULK_GRACE_S, self.size / MIN_RATE)


@dataclass
class _Steps:
    """A step batch: its frame as every viewer is sent it; or, merged for a viewer that is behind,
    the latest batch and every step since, in lists extended in place (no copy per batch)."""

    event: ev.StepsDone  # the latest (its throughput and learning rate are the ones sent)
    frame: bytes | None  # None once merged: encoded when it is written
    iters: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def size(self) -> int:
        return _BATCH_BYTES + _STEP_BYTES * (len(self.iters) if self.frame is None else len(self.event.iters))

    def merged(self) -> ev.StepsDone:
        e = self.event
        return ev.StepsDone(e.iter, e.time_s, tuple(self.iters), tuple(self.losses), e.lr, e.tokens_per_s,
                            e.ms_per_step)


class ViewerQueue:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.items: deque[bytes | _Steps | Bulk] = deque()
        self.live_bytes = 0  # of the live frames waiting (what the budget bounds)

    def add_frame(self, data: bytes) -> bool:
        """Queue a live frame. False: past the budget (the viewer is to be cut off)."""
        self.items.append(data)
        self.live_bytes += len(data)
        return self.live_bytes <= self.budget_bytes

    def add_steps(self, event: ev.StepsDone, frame: bytes) -> bool:
        """Queue a step batch (`frame`: its shared encoding), merged with one not yet sent.
        False: past the budget."""
        last = self.items[-1] if self.items else None
        if not isinstance(last, _Steps):
            item = _Steps(event, frame)
            self.items.append(item)
            self.live_bytes += item.size
            return self.live_bytes <= self.budget_bytes
        self.live_bytes -= last.size
        if last.frame is not None:  # the first merge: its own steps become the lists'
            last.iters, last.losses, last.frame = list(last.event.iters), list(last.event.losses), None
        last.iters.extend(event.iters)
        last.losses.extend(event.losses)
        last.event = event
        self.live_bytes += last.size
        return self.live_bytes <= self.budget_bytes

    def add_bulk(self, bulk: Bulk) -> None:
        self.items.append(bulk)

    def pop(self, at: float) -> bytes | Bulk | None:
        """The next thing to write (a step batch encoded now), or None."""
        if not self.items:
            return None
        item = self.items.popleft()
        if isinstance(item, _Steps):
            self.live_bytes -= item.size
            return item.frame if item.frame is not None else protocol.encode(protocol.event_frame(item.merged(), at))
        if isinstance(item, bytes):
            self.live_bytes -= len(item)
        return item

    def release(self) -> None:
        """The viewer is gone: what it was to be sent is not (bulk data's owners hear of it)."""
        for item in self.items:
            if isinstance(item, Bulk):
                item.done()
        self.items.clear()
        self.live_bytes = 0


# What a step waiting for a viewer costs the training process: its iteration and loss as Python
# objects in the merged lists (an int, a float, two list slots; ~72 bytes), more than its JSON.
_BATCH_BYTES, _STEP_BYTES = 200, 72


@dataclass
class Progress:
    """Whether the viewer's socket takes what it is sent: checked now and then (check())."""

    transport: asyncio.WriteTransport
    since: float  # when it last took something (or had nothing to take)
    _outstanding: int = 0
    _written: int = 0
    bulk_deadline: float | None = None  # bulk data being written must be taken by then
    _fd: int = field(default=-1)

    def __post_init__(self) -> None:
        sock = self.transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def wrote(self, n: int) -> None:
        self._written += n

    def check(self, now: float) -> float:
        """Seconds since the socket last took a byte (0 when nothing waits for it)."""
        outstanding = self.transport.get_write_buffer_size() + self._unread()
        # what it took shows as less waiting than before plus what was written since (the kernel
        # counts what waits in its buffers with their overhead: never less than the bytes)
        if outstanding == 0 or outstanding < self._outstanding + self._written:
            self.since = now
        self._outstanding, self._written = outstanding, 0
        return now - self.since

    def _unread(self) -> int:
        """What the socket holds that the other end has not read yet (Linux: SIOCOUTQ)."""
        if self._fd < 0:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(self._fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0


@dataclass
class Viewer:
    """One connected viewer: its connection, its queue, how it reads, how much it may ask."""

    number: int
    writer: asyncio.StreamWriter
    queue: ViewerQueue
    progress: Progress
    requests: RateLimit
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    bad_requests: int = 0
    snapshot_pending: bool = False
    leaving: bool = False  # told "bye": what is queued is written, then the connection ends
    closed: bool = False

    @property
    def queued_bytes(self) -> int:
        return self.queue.live_bytes

    def behind(self, now: float, stall_timeout_s: float) -> bool:
        """Whether it is to be cut off: its socket took nothing for stall_timeout_s, or bulk data
        is taking it longer than MIN_RATE allows."""
        deadline = self.progress.bulk_deadline
        return self.progress.check(now) > stall_timeout_s or (deadline is not None and now > deadline)

    async def send_queued(self) -> None:
        """Write what is queued as it comes, until the viewer is closed (or leaving, and done)."""
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while not self.closed and (item := self.queue.pop(time.time())) is not None:
                    if isinstance(item, Bulk):
                        await self._send_bulk(item)
                    else:
                        await self._send(item)
                if self.leaving:
                    return
        except (ConnectionError, OSError):
            pass

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        self.progress.wrote(len(data))
        await self.writer.drain()  # waits while the viewer's socket is full

    async def _send_bulk(self, bulk: Bulk) -> None:
        """In chunks, each a copy (asyncio may keep what it is given until sent: never the shared
        payload itself), within the time its size allows. Nothing here outlives the call, so a
        payload is let go as soon as every viewer has been sent it."""
        self.progress.bulk_deadline = time.monotonic() + bulk.allowed_s
        try:
            for part in bulk.parts:
                for start in range(0, len(part), CHUNK):
                    await self._send(bytes(memoryview(part)[start:start + CHUNK]))
        finally:
            self.progress.bulk_deadline = None
            bulk.done()
