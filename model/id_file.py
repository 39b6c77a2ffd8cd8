"""The token cache's files written (model/token_cache.py): the id file fast, with O_DIRECT from an
aligned stage where the filesystem allows it and by a thread of its own (encoding the next chunk
and writing the last one overlap); the metadata atomically."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import Any


class IdFile:
    """The .npy being written: its header, then the ids. Written with O_DIRECT where the
    filesystem allows it: the ids go from an aligned buffer to the disk, not through the page
    cache (on these machines the kernel's copying into the page cache took twice the CPU time of
    all the reading and encoding). Elsewhere (tmpfs, not Linux) plain writes."""

    BLOCK = 4096  # O_DIRECT's alignment of memory, file offsets and lengths
    STAGE = 16 * 1024 * 1024

    def __init__(self, path: Path, direct_io: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        direct = getattr(os, "O_DIRECT", 0) if direct_io else 0
        self.fd = -1
        if direct:
            try:
                self.fd = os.open(path, flags | direct, 0o644)
            except OSError:  # EINVAL: the filesystem has no direct I/O
                pass
        self.stage: mmap.mmap | None = None
        if self.fd >= 0:
            try:
                self.stage = mmap.mmap(-1, self.STAGE)  # page-aligned
            except OSError:
                os.close(self.fd)
                self.fd = -1
        if self.fd < 0:
            self.fd = os.open(path, flags, 0o644)
        self.fill = 0  # bytes in stage
        self.size = 0  # bytes written, staged included

    def __enter__(self) -> IdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        if self.stage is not None:
            self.stage.close()

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self.stage is None:
            write_all(self.fd, view)
            return len(view)
        while view:
            n = min(len(view), self.STAGE - self.fill)
            self.stage[self.fill : self.fill + n] = view[:n]
            self.fill += n
            view = view[n:]
            if self.fill == self.STAGE:
                self._write_blocks()
        return len(data)

    def _write_blocks(self) -> None:
        assert self.stage is not None
        aligned = self.fill // self.BLOCK * self.BLOCK
        if aligned:
            with memoryview(self.stage) as stage:
                try:
                    write_all(self.fd, stage[:aligned])
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # the filesystem opened it for direct I/O but will not do it: plain writes
                    # from here on (nothing was written by the refused call)
                    self._plain()
                    write_all(self.fd, stage[: self.fill])
                    self.fill = 0
                    self.stage.close()
                    self.stage = None
                    return
            rest = self.fill - aligned
            self.stage[:rest] = self.stage[aligned : self.fill]
            self.fill = rest

    def _plain(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)

    def finish(self) -> None:
        """Write what is staged and wait for the disk."""
        if self.stage is not None:
            self._write_blocks()
        if self.stage is not None:
            if self.fill:  # the last, partial block: without O_DIRECT
                self._plain()
                with memoryview(self.stage) as stage:
                    write_all(self.fd, stage[: self.fill])
                self.fill = 0
        os.fsync(self.fd)


def write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


class BackgroundWriter:
    """Writes buffers to a file in a thread of its own (a write releases the GIL), one queued
    behind the one being written; an error is raised in the caller, at the next write or at
    the end."""

    def __init__(self, f: IdFile) -> None:
        self.f = f
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="token-cache-writer", daemon=True)

    def __enter__(self) -> BackgroundWriter:
        self.thread.start()
        return self

    def write(self, data: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(data)

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.f.write(data)
                except BaseException as error:  # noqa: BLE001 - handed to the caller
                    self.error = error


def write_text_atomically(path: Path, text: str) -> None:
    """The cache's metadata: whole, on the disk, or not there at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
