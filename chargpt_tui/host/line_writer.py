"""Lines written to a stream by a thread of their own: whoever hands them over never waits.

A training process's stdout may be a terminal someone stopped with Ctrl-S, or a pipe nobody
reads (`chargpt-tui TEXT | less` left open, a job scheduler's log reader that hung). A write
to either blocks until it is read, and a loop that wrote its own lines would stop training
with it (under torchrun the other ranks would then die at their collective timeout). Here
lines wait in a bounded queue for a writer thread; when the queue is full, new lines are
dropped and counted, and a line says how many once the stream takes data again.

A stream with a file descriptor (stdout, stderr) is written with os.write on that descriptor:
a thread blocked inside the stream's own write would hold its buffer's lock, and a process
leaving meanwhile would abort when its shutdown flushes that stream. Blocked in os.write, the
thread holds nothing and is simply left behind (it is a daemon).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import TextIO

# Enough for hours of progress lines and many samples; what a stopped stream can cost the process.
MAX_QUEUED_CHARS = 1 << 20


class LineWriter:
    def __init__(self, stream: TextIO, max_queued_chars: int = MAX_QUEUED_CHARS) -> None:
        self.stream = stream
        self._fd = _descriptor(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self.max_queued_chars = max_queued_chars
        self.dropped = 0  # lines dropped since the stream last took some
        self._lines: deque[str] = deque()
        self._queued_chars = 0
        self._writing = False  # the thread holds lines it has taken from the queue
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def write_line(self, line: str) -> None:
        """Queue one line (no newline at its end) for the stream; never blocks on the stream."""
        with self._changed:
            if self._queued_chars + len(line) > self.max_queued_chars:
                self.dropped += 1
                return
            self._lines.append(line + "\n")
            self._queued_chars += len(line) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chargpt-tui log lines", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for what is queued to reach the stream (the end of a run:
        its last lines). True if it did; False if the stream still does not take it."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._lines and not self._writing, timeout=timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._lines))
                text = "".join(self._lines)
                self._lines.clear()
                self._queued_chars = 0
                dropped, self.dropped = self.dropped, 0
                self._writing = True
            if dropped:  # (they came after these, while the queue was full)
                text += f"({dropped} log lines were dropped here: the output was not being read)\n"
            try:
                self._write(text)
            except Exception:  # noqa: BLE001 - a closed pipe, a dropped SSH connection, no stdout at all:
                pass  # the lines are lost, the thread lives on, and training matters more
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _write(self, text: str) -> None:
        if self._fd is None:
            self.stream.write(text)
            self.stream.flush()
            return
        data = memoryview(text.encode(self._encoding, "replace"))
        while data:
            data = data[os.write(self._fd, data):]


def _descriptor(stream: TextIO) -> int | None:
    """The stream's file descriptor, once what its own buffer holds is written (else None: a
    StringIO, pytest's capture)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
    return fd
