"""The training process's side of attach: a Unix socket that viewers (dashboards) connect to.

    server = RunServer(trainer, run_dir, lock)   # lock: the run directory's RunLock, held
    trainer.add_listener(server)                 # every event goes to every viewer
    server.start()                               # its own thread and asyncio loop
    result = trainer.run()
    server.run_ended(...)                        # viewers learn how it ended
    server.close()

The training loop never waits on a viewer, and what a client can cause is bounded (README,
"Who can attach"): events cross into the server's loop with call_soon_threadsafe and are encoded
once for all viewers, a late viewer's catch-up is shared (catch_up.py); connections are accepted
at ACCEPT_RATE, MAX_VIEWERS at most; requests at REQUEST_RATE a viewer (run_requests.py); each
viewer's queue keeps live frames within `budget_bytes` and streams bulk data outside it
(viewer_queue.py); a viewer whose socket takes nothing for `stall_timeout_s`, that falls past its
budget or takes bulk data too slowly is cut off (it may attach again, and is sent the history
anew).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from chargpt_tui.wire import protocol
from chargpt_tui.wire.journal import RunJournal
from chargpt_tui.wire.runs import read_journal
from chargpt_tui.wire.runtime import (
    RunLock,
    ServerInfo,
    remove_dead_sockets,
    remove_stale_server,
    runtime_dir,
    same_user,
    write_server_info,
)
from model import events as ev
from model.trainer import Trainer

from .catch_up import CatchUp
from .rate_limit import RateLimit
from .run_requests import RunRequests
from .system_figures import SystemFigures
from .viewer_queue import Bulk, Progress, Viewer, ViewerQueue

MAX_BAD_REQUESTS = 10  # malformed requests, or requests past the rate limit, before a viewer is cut off
MAX_VIEWERS = 16  # attached at once (each one's live budget is memory the run may have to hold)
ACCEPT_RATE, ACCEPT_BURST = 10.0, 10  # connections a second
REQUEST_RATE, REQUEST_BURST = 10.0, 20  # requests a second, per viewer
CLOSE_GRACE_S = 1.0  # a viewer that is let go has this long to take what it was sent
CHECK_INTERVAL_S = 0.5  # how often viewers' progress is looked at (a stall is cut off within this of its timeout)
LISTEN_BACKLOG = 64


class RunServer:
    def __init__(
        self,
        trainer: Trainer,
        run_dir: Path,
        lock: RunLock,
        *,
        preset: str | None = None,
        peak_flops: float | None = None,
        budget_bytes: int = 2 << 20,
        stall_timeout_s: float = 10.0,
        memory_interval_s: float = 2.0,
        socket_buffer_bytes: int | None = None,
        folder: Path | None = None,
        check_peer: bool = True,
        max_viewers: int = MAX_VIEWERS,
    ) -> None:
        if not lock.held:
            raise ValueError("the run directory's lock must be held first")
        self.trainer = trainer
        self.run_dir = Path(run_dir)
        self.lock = lock
        self.preset = preset
        self.peak_flops = peak_flops
        self.budget_bytes = budget_bytes
        self.stall_timeout_s = stall_timeout_s
        self.memory_interval_s = memory_interval_s
        self.socket_buffer_bytes = socket_buffer_bytes
        self.folder = folder
        self.check_peer = check_peer
        self.max_viewers = max_viewers
        # A resumed run's earlier samples and messages are in metrics.jsonl: late viewers get them
        # too (its loss history comes with the trainer's start event, from the checkpoint).
        journal = read_journal(self.run_dir) if (self.run_dir / "metrics.jsonl").exists() else RunJournal()
        journal.forget_end()
        self.frames = CatchUp(journal)
        self.system = SystemFigures(trainer.device)  # sampled every memory_interval_s
        self.viewers: dict[int, Viewer] = {}
        self.cut_off = 0  # viewers disconnected for being too slow or too noisy (tests, diagnostics)
        self.refused = 0  # connections turned away (too many viewers)
        self.socket_path: Path | None = None
        self.ended: dict[str, Any] | None = None
        self._numbers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._arriving = 0  # connections accepted, not yet viewers (they count against the cap)
        self._ready = threading.Event()
        self._no_viewers = threading.Event()
        self._no_viewers.set()
        self.requests = RunRequests(trainer, self._send, self._broadcast, self._call_in_loop,
                                    lambda: self.ended is not None)
        self.ever_attached = threading.Event()

    @property
    def journal(self) -> RunJournal:
        return self.frames.journal

    # ---- life cycle (the training process's main thread) -------------------------------------
    def start(self) -> None:
        folder = self.folder or runtime_dir()
        remove_stale_server(self.run_dir, folder)
        remove_dead_sockets(folder)
        path = folder / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # the folder is 0700 already; the socket too, as tmux does
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.socket_path, self._listener = path, sock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="run-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise OSError(f"the server for {path} did not start")
        write_server_info(self.run_dir, ServerInfo(os.getpid(), socket.gethostname(), str(path),
                                                   protocol.PROTOCOL_VERSION, time.time()))

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        self._accepting = self._task(self._accept())
        self._task(self._watch_viewers())
        self._task(self._report_memory())
        loop.call_soon(self._ready.set)
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _task(self, work: Any) -> asyncio.Task[Any]:
        """A task of the server's loop, referred to until it is done (the loop keeps weak ones)."""
        assert self._loop is not None
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call_in_loop(self, callback: Any, *args: Any) -> None:
        """From any thread: have the server's loop call it soon (nothing, once the loop is closed)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # (closed meanwhile)
                loop.call_soon_threadsafe(callback, *args)

    def __call__(self, event: ev.Event) -> None:
        """The trainer's listener (its thread): hand over and return at once."""
        self._call_in_loop(self._on_event, event, time.time())

    def run_ended(self, status: str, it: int, exit_code: int, summary: str, warning: str | None) -> None:
        """trainer.run() has returned: tell every viewer how, and each later one on arrival."""
        frame = {"type": "ended", "status": status, "iter": it, "exit_code": exit_code, "summary": summary,
                 "warning": warning}
        self._call_in_loop(self._end, frame)

    def wait_for_viewers_to_leave(self, timeout: float | None = None) -> bool:
        return self._no_viewers.wait(timeout)

    @property
    def viewer_count(self) -> int:
        return len(self.viewers)

    def close(self, flush_s: float = 1.0) -> None:
        """Let what is queued go (for flush_s), stop serving, remove the socket and server.json."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shut_down(flush_s), loop).result(timeout=flush_s + 5)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        self.requests.close()  # (a save under way finishes before the lock is let go)
        for path in (self.socket_path, self.run_dir / "server.json"):
            # (server.json only while it names this process: a new one may have taken the run over)
            if path is not None and (path.name != "server.json" or getattr(ServerInfo.read(self.run_dir), "pid",
                                                                            None) == os.getpid()):
                with contextlib.suppress(OSError):
                    path.unlink()

    async def _shut_down(self, flush_s: float) -> None:
        if self._accepting is not None:
            self._accepting.cancel()  # no more viewers (the socket is removed when the loop is done)
        deadline = time.monotonic() + flush_s
        while any(v.queue.items for v in self.viewers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for viewer in list(self.viewers.values()):
            self._drop(viewer, abort=False)

    # ---- events in (the server's loop) -------------------------------------------------------
    def _on_event(self, event: ev.Event, at: float) -> None:
        frame = self.frames.add(event, at)  # encoded once, whoever watches
        for viewer in list(self.viewers.values()):
            within = viewer.queue.add_steps(event, frame) if isinstance(event, ev.StepsDone) else \
                viewer.queue.add_frame(frame)
            self._queued(viewer, within)

    def _end(self, frame: dict[str, Any]) -> None:
        self.ended = frame
        self._broadcast(frame)

    def _broadcast(self, frame: dict[str, Any]) -> None:
        data = protocol.encode(frame)
        for viewer in list(self.viewers.values()):
            self._queued(viewer, viewer.queue.add_frame(data))

    def _send(self, viewer: Viewer, frame: dict[str, Any]) -> None:
        if not viewer.closed:
            self._queued(viewer, viewer.queue.add_frame(protocol.encode(frame)))

    def _queued(self, viewer: Viewer, within_budget: bool) -> None:
        if viewer.closed:
            return
        if not within_budget:
            self._cut_off(viewer)
            return
        viewer.wake.set()

    def _cut_off(self, viewer: Viewer) -> None:
        self.cut_off += 1
        self._drop(viewer, abort=True)

    # ---- viewers -----------------------------------------------------------------------------
    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        listener = self._listener
        assert listener is not None
        accepts = RateLimit(ACCEPT_RATE, ACCEPT_BURST)
        while True:
            wait = accepts.wait_s()
            if wait > 0:  # the next connections wait in the kernel's queue (attach waits with them)
                await asyncio.sleep(wait)
                continue
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError:
                if listener.fileno() < 0:
                    return  # closed
                await asyncio.sleep(0.05)  # out of file descriptors, say: try again soon
                continue
            accepts.take()
            if len(self.viewers) + self._arriving >= self.max_viewers:
                self.refused += 1
                _refuse_connection(conn, f"too many viewers are attached to this run ({self.max_viewers}); "
                                         "try again when one has left")
                continue
            self._arriving += 1
            self._task(self._viewer_connected(conn))

    async def _viewer_connected(self, conn: socket.socket) -> None:
        try:
            if self.check_peer and not same_user(conn):
                _refuse_connection(conn, "this run belongs to another user")
                return
            if self.socket_buffer_bytes:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer_bytes)
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except OSError:
            conn.close()
            return
        finally:
            self._arriving -= 1
        self._numbers += 1
        now = time.monotonic()
        viewer = Viewer(self._numbers, writer, ViewerQueue(self.budget_bytes), Progress(writer.transport, now),
                         RateLimit(REQUEST_RATE, REQUEST_BURST))
        self.viewers[viewer.number] = viewer
        self._no_viewers.clear()
        self.ever_attached.set()
        hello = {
            "type": "hello", "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid(), "run_dir": str(self.run_dir),
            "vocab": "".join(self.trainer.corpus.tokenizer.chars), "preset": self.preset,
            "peak_flops": self.peak_flops, "paused": self.trainer.steering.paused, "viewer": viewer.number,
        }
        self._send(viewer, hello)
        # the history, shared with every viewer arriving about now, outside the live budget
        viewer.queue.add_bulk(Bulk([*self.frames.for_new_viewer(), protocol.encode({"type": "live"}),
                                    protocol.encode(self.system.frame(history=True))]))
        if self.ended is not None:
            self._send(viewer, self.ended)
        writing = self._task(viewer.send_queued())
        try:
            await self._read(viewer, reader)
            if viewer.leaving:
                await asyncio.wait([writing], timeout=1.0)
        finally:
            writing.cancel()
            self._drop(viewer, abort=False)

    async def _watch_viewers(self) -> None:
        """Cut off the viewers that stopped reading, or take bulk data too slowly."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            now = time.monotonic()
            for viewer in list(self.viewers.values()):
                if viewer.behind(now, self.stall_timeout_s):
                    self._cut_off(viewer)

    async def _read(self, viewer: Viewer, reader: asyncio.StreamReader) -> None:
        while not viewer.closed and not viewer.leaving:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return  # the viewer left
            except asyncio.LimitOverrunError as exc:
                try:
                    await reader.read(exc.consumed)  # drop what came, up to the limit
                except (ConnectionError, OSError):
                    return
                self._refuse(viewer, None, f"message too long (at most {protocol.MAX_REQUEST_BYTES} bytes)")
                continue
            except (ConnectionError, OSError):
                return
            if len(line) > protocol.MAX_REQUEST_BYTES:
                self._refuse(viewer, None, f"message too long (at most {protocol.MAX_REQUEST_BYTES} bytes)")
                continue
            try:
                op, request_id = protocol.parse_request(line)
            except protocol.ProtocolError as exc:
                self._refuse(viewer, None, str(exc))
                continue
            if not viewer.requests.take():
                self._refuse(viewer, request_id, f"too many requests (at most {REQUEST_RATE:g} a second)")
                continue
            self.requests.handle(viewer, op, request_id)

    def _refuse(self, viewer: Viewer, request_id: int | None, error: str) -> None:
        viewer.bad_requests += 1
        if viewer.bad_requests > MAX_BAD_REQUESTS:
            viewer.leaving = True
            self._send(viewer, {"type": "bye", "reason": "too many malformed or excessive messages"})
            if not viewer.closed:  # (a bye past the budget has cut it off, counted, already)
                self.cut_off += 1
            return
        self._send(viewer, {"type": "error", "id": request_id, "error": error})

    def _drop(self, viewer: Viewer, abort: bool) -> None:
        viewer.closed = True
        viewer.wake.set()
        viewer.queue.release()
        if self.viewers.pop(viewer.number, None) is None:
            return
        transport = viewer.writer.transport
        if abort:
            transport.abort()
        else:  # what is written goes, if the viewer takes it soon: a close waits for that, unbounded
            viewer.writer.close()
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)
        if not self.viewers:
            self._no_viewers.set()

    async def _report_memory(self) -> None:
        """Figures sampled watched or not (system_figures.py): a viewer attaching gets the past."""
        while True:
            await asyncio.sleep(self.memory_interval_s)
            try:
                self.system.sample()
            except Exception:  # noqa: BLE001 - a figure missed, not the server
                continue
            if self.viewers:
                self._broadcast(self.system.frame(history=False))


def _refuse_connection(conn: socket.socket, reason: str) -> None:
    """One line saying why, if the socket takes it at once, and the end of the connection."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(protocol.encode({"type": "bye", "reason": reason}))
    conn.close()

