"""What the training process sends its viewers, encoded once and shared by all of them.

    frames = CatchUp(journal)
    frame = frames.add(event, at)        # the journal takes it; its live frame, for every viewer
    first = frames.for_new_viewer()      # [the catch-up, then the live frames since it was encoded]

Encoding runs in the training process, under the GIL the training loop needs too: it must not
grow with the number of viewers, nor with how often they connect. A live event is encoded once
whoever watches. The catch-up (the run's start with its bounded history, recent messages and
samples, the state now; RunJournal) is encoded at most once every MAX_AGE_S however many viewers
arrive: a viewer gets the last encoding and the live frames that came after it, kept for that in
a short ring; only when the ring no longer reaches back that far is it encoded anew.
"""

from __future__ import annotations

import time
from collections import deque

from chargpt_tui.wire import protocol
from chargpt_tui.wire.journal import RunJournal
from model import events as ev

MAX_AGE_S = 5.0  # how stale a shared catch-up may be (what came since is sent from the ring)
RING_FRAMES = 1024  # live frames kept for viewers whose catch-up is older (about 4 minutes of steps)
RING_BYTES = 1 << 20


class CatchUp:
    def __init__(self, journal: RunJournal, max_age_s: float = MAX_AGE_S) -> None:
        self.journal = journal
        self.max_age_s = max_age_s
        self.seq = 0  # events the journal has taken
        self._ring: deque[tuple[int, bytes]] = deque()  # (seq, live frame), the latest
        self._ring_bytes = 0
        self._encoded: tuple[int, float, bytes] | None = None  # (seq, monotonic time, the catch-up's frames)

    def add(self, event: ev.Event, at: float) -> bytes:
        """The journal takes the event; returns its live frame, encoded once for every viewer."""
        self.journal.add(event, at)
        self.seq += 1
        frame = protocol.encode(protocol.event_frame(event, at))
        self._ring.append((self.seq, frame))
        self._ring_bytes += len(frame)
        while len(self._ring) > RING_FRAMES or self._ring_bytes > RING_BYTES:
            self._ring_bytes -= len(self._ring.popleft()[1])
        return frame

    def for_new_viewer(self) -> list[bytes]:
        """The catch-up (one shared bytes object), then the live frames that came after it."""
        now = time.monotonic()
        encoded = self._encoded
        # (an encoding from before the run started is empty: reused, it would send the run's
        # start and everything since as live events, not as a catch-up)
        empty_before_start = encoded is not None and not encoded[2] and self.journal.started is not None
        if encoded is None or empty_before_start or now - encoded[1] > self.max_age_s or not self._covers(encoded[0]):
            frames = b"".join(protocol.encode(protocol.event_frame(event, at, replay=True))
                              for event, at in self.journal.catch_up())
            encoded = self._encoded = (self.seq, now, frames)
        seq = encoded[0]
        return [encoded[2], *(frame for s, frame in self._ring if s > seq)]

    def _covers(self, seq: int) -> bool:
        """Whether the ring still holds every frame that came after event `seq`."""
        return seq == self.seq or bool(self._ring) and self._ring[0][0] <= seq + 1
