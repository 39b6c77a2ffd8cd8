"""The training process's side of attach: a Unix socket that viewers (dashboards) connect to.

    server = RunServer(trainer, run_dir, lock)   # lock: the run directory's RunLock, held
    trainer.add_listener(server)                 # every event goes to every viewer
    server.start()                               # its own thread and asyncio loop
    result = trainer.run()
    server.run_ended(...)                        # viewers learn how it ended
    server.close()

The training loop never waits on a viewer. Events cross into the server's loop with
call_soon_threadsafe and return at once; each viewer has its own queue, in which step batches
are merged while the viewer is behind; a viewer whose queue passes `budget_bytes`, or whose
socket has taken nothing for `stall_timeout_s`, is cut off (it may attach again and is sent
the history anew). A viewer is never trusted: each request is checked, and a bad one gets an
error reply and changes nothing; one that keeps sending garbage is cut off.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from model import events as ev
from model.device import memory_usage
from model.trainer import Trainer

from . import protocol
from .journal import RunJournal
from .runs import read_journal
from .runtime import (
    RunLock,
    ServerInfo,
    peer_uid,
    remove_dead_sockets,
    remove_stale_server,
    runtime_dir,
    write_server_info,
)

MAX_BAD_REQUESTS = 20
# How long a snapshot waits for the loop's next step boundary (an evaluation of the default
# preset takes about 100 s on a slow 2-core CPU); under the viewer's own 120 s, so that the
# viewer hears why rather than only that nothing came.
SNAPSHOT_TIMEOUT_S = 100.0


@dataclass
class _Viewer:
    number: int
    writer: asyncio.StreamWriter
    queue: deque[Any]  # encoded frames (bytes), step batches not yet encoded (StepsDone), snapshots
    queued_bytes: int = 0
    wake: asyncio.Event | None = None
    draining_since: float | None = None  # when the socket stopped taking what was written
    bad_requests: int = 0
    snapshot_pending: bool = False
    leaving: bool = False  # told "bye": what is queued is written, then the connection ends
    closed: bool = False


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
        # A resumed run's earlier samples and messages are in metrics.jsonl: late viewers get them
        # too (its loss history comes with the trainer's start event, from the checkpoint).
        self.journal = read_journal(self.run_dir) if (self.run_dir / "metrics.jsonl").exists() else RunJournal()
        self.journal.forget_end()
        self.viewers: dict[int, _Viewer] = {}
        self.cut_off = 0  # viewers disconnected for being too slow or too noisy (tests, diagnostics)
        self.socket_path: Path | None = None
        self.ended: dict[str, Any] | None = None
        self._numbers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._no_viewers = threading.Event()
        self._no_viewers.set()
        self._controls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-controls")
        self._controls_pending: set[str] = set()  # a save or evaluation asked for again meanwhile is one
        self._snapshot_waiters: list[tuple[_Viewer, int | None]] = []  # one snapshot serves them all
        self.ever_attached = threading.Event()

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
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self.socket_path = path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="run-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise OSError(f"the server for {path} did not start")
        write_server_info(self.run_dir, ServerInfo(os.getpid(), socket.gethostname(), str(path),
                                                   protocol.PROTOCOL_VERSION, time.time()))

    def _serve(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def begin() -> None:
            self._server = await asyncio.start_unix_server(self._viewer_connected, sock=sock)
            loop.create_task(self._report_memory())
            self._ready.set()

        loop.run_until_complete(begin())
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def __call__(self, event: ev.Event) -> None:
        """The trainer's listener (its thread): hand over and return at once."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_event, event, time.time())
            except RuntimeError:  # the loop closed meanwhile
                pass

    def run_ended(self, status: str, it: int, exit_code: int, summary: str, warning: str | None) -> None:
        """trainer.run() has returned: tell every viewer how, and each later one on arrival."""
        frame = {"type": "ended", "status": status, "iter": it, "exit_code": exit_code, "summary": summary,
                 "warning": warning}
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end, frame)

    def wait_for_viewers_to_leave(self, timeout: float | None = None) -> bool:
        return self._no_viewers.wait(timeout)

    @property
    def viewer_count(self) -> int:
        return len(self.viewers)

    def close(self, flush_s: float = 1.0) -> None:
        """Say goodbye, stop serving, and remove the socket and server.json."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread is not None:
            done = asyncio.run_coroutine_threadsafe(self._shut_down(flush_s), loop)
            try:
                done.result(timeout=flush_s + 5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)
        # a save or evaluation under way finishes before the lock is let go: no other process
        # may write this run's files while this one still does
        self._controls.shutdown(wait=True, cancel_futures=True)
        for path in (self.socket_path, self.run_dir / "server.json"):
            if path is None:
                continue
            try:
                if path.name != "server.json" or _names_us(path):
                    path.unlink()
            except OSError:
                pass

    async def _shut_down(self, flush_s: float) -> None:
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + flush_s
        while any(v.queue for v in self.viewers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for viewer in list(self.viewers.values()):
            self._drop(viewer, abort=False)

    # ---- events in (the server's loop) -------------------------------------------------------
    def _on_event(self, event: ev.Event, at: float) -> None:
        self.journal.add(event, at)
        for viewer in list(self.viewers.values()):
            self._queue_event(viewer, event, at)

    def _end(self, frame: dict[str, Any]) -> None:
        self.ended = frame
        for viewer in list(self.viewers.values()):
            self._send(viewer, frame)

    def _queue_event(self, viewer: _Viewer, event: ev.Event, at: float, replay: bool = False) -> None:
        if isinstance(event, ev.StepsDone) and not replay:
            # merge with a batch the viewer has not been sent yet: a slow viewer gets fewer, larger ones
            if viewer.queue and isinstance(viewer.queue[-1], ev.StepsDone):
                earlier = viewer.queue.pop()
                viewer.queued_bytes -= _step_bytes(earlier)
                event = ev.StepsDone(event.iter, event.time_s, earlier.iters + event.iters,
                                     earlier.losses + event.losses, event.lr, event.tokens_per_s, event.ms_per_step)
            self._enqueue(viewer, event, _step_bytes(event))
            return
        self._send(viewer, protocol.event_frame(event, at, replay))

    def _send(self, viewer: _Viewer, frame: dict[str, Any], payload: bytes = b"") -> None:
        data = protocol.encode(frame) + payload
        self._enqueue(viewer, data, len(data))

    def _enqueue(self, viewer: _Viewer, item: Any, size: int) -> None:
        if viewer.closed:
            return
        viewer.queue.append(item)
        viewer.queued_bytes += size
        stalled = viewer.draining_since is not None and time.monotonic() - viewer.draining_since > self.stall_timeout_s
        if viewer.queued_bytes > self.budget_bytes or stalled:
            self.cut_off += 1
            self._drop(viewer, abort=True)
            return
        assert viewer.wake is not None
        viewer.wake.set()

    # ---- viewers -----------------------------------------------------------------------------
    async def _viewer_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if self.check_peer and not _same_user(sock):
            writer.write(protocol.encode({"type": "bye", "reason": "this run belongs to another user"}))
            writer.close()
            return
        if self.socket_buffer_bytes and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer_bytes)
        self._numbers += 1
        viewer = _Viewer(self._numbers, writer, deque(), wake=asyncio.Event())
        self.viewers[viewer.number] = viewer
        self._no_viewers.clear()
        self.ever_attached.set()
        hello = {
            "type": "hello", "protocol": protocol.PROTOCOL_VERSION, "pid": os.getpid(), "run_dir": str(self.run_dir),
            "vocab": "".join(self.trainer.corpus.tokenizer.chars), "preset": self.preset,
            "peak_flops": self.peak_flops, "paused": self.trainer.paused, "viewer": viewer.number,
        }
        self._send(viewer, hello)
        for event, at in self.journal.catch_up():
            self._queue_event(viewer, event, at, replay=True)
        self._send(viewer, {"type": "live"})
        if self.ended is not None:
            self._send(viewer, self.ended)
        writing = asyncio.get_running_loop().create_task(self._write(viewer))
        try:
            await self._read(viewer, reader)
            if viewer.leaving:
                await asyncio.wait([writing], timeout=1.0)
        finally:
            writing.cancel()
            self._drop(viewer, abort=False)

    async def _write(self, viewer: _Viewer) -> None:
        assert viewer.wake is not None
        try:
            while not viewer.closed:
                await viewer.wake.wait()
                viewer.wake.clear()
                while viewer.queue:
                    item = viewer.queue.popleft()
                    if isinstance(item, ev.StepsDone):
                        viewer.queued_bytes -= _step_bytes(item)
                        item = protocol.encode(protocol.event_frame(item, time.time()))
                    elif isinstance(item, _Unbudgeted):
                        item = item.data
                    else:
                        viewer.queued_bytes -= len(item)
                    viewer.writer.write(item)
                    viewer.draining_since = time.monotonic()
                    await viewer.writer.drain()  # waits while the viewer's socket is full
                    viewer.draining_since = None
                if viewer.leaving:
                    return
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass

    async def _read(self, viewer: _Viewer, reader: asyncio.StreamReader) -> None:
        while not viewer.closed and not viewer.leaving:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return  # the viewer left
            except asyncio.LimitOverrunError as exc:
                await reader.read(exc.consumed)  # drop what came, up to the limit
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
            self._handle(viewer, op, request_id)

    def _refuse(self, viewer: _Viewer, request_id: int | None, error: str) -> None:
        viewer.bad_requests += 1
        if viewer.bad_requests > MAX_BAD_REQUESTS:
            self._send(viewer, {"type": "bye", "reason": "too many malformed messages"})
            self.cut_off += 1
            viewer.leaving = True
            return
        self._send(viewer, {"type": "error", "id": request_id, "error": error})

    def _drop(self, viewer: _Viewer, abort: bool) -> None:
        viewer.closed = True
        if viewer.wake is not None:
            viewer.wake.set()
        if self.viewers.pop(viewer.number, None) is None:
            return
        transport = viewer.writer.transport
        if abort:
            transport.abort()
        else:
            viewer.writer.close()
        if not self.viewers:
            self._no_viewers.set()

    # ---- requests ----------------------------------------------------------------------------
    def _handle(self, viewer: _Viewer, op: str, request_id: int | None) -> None:
        trainer = self.trainer
        ended = self.ended is not None
        if op in ("pause", "resume", "stop") and ended:
            self._send(viewer, {"type": "error", "id": request_id, "error": "the run has ended"})
            return
        if op == "pause":
            trainer.pause()
        elif op == "resume":
            if not trainer.resume():
                self._send(viewer, {"type": "error", "id": request_id,
                                    "error": "the loss diverged: these weights cannot be trained on"})
                return
        elif op == "stop":
            trainer.stop()
        elif op == "save":
            self._control(op, trainer.request_save)
        elif op == "evaluate":
            self._control(op, trainer.request_eval)
        elif op == "snapshot":
            if viewer.snapshot_pending:
                self._send(viewer, {"type": "error", "id": request_id, "error": "a snapshot is on its way already"})
                return
            viewer.snapshot_pending = True
            self._snapshot_waiters.append((viewer, request_id))
            if len(self._snapshot_waiters) == 1:
                self._controls.submit(self._take_snapshot)
            return
        self._send(viewer, {"type": "reply", "id": request_id})
        for other in list(self.viewers.values()):
            self._send(other, {"type": "control", "op": op, "by": viewer.number})

    def _control(self, op: str, work: Any) -> None:
        """Run a save or an evaluation in the control thread; asked for again before it has
        run, it runs once."""
        if op in self._controls_pending:
            return
        self._controls_pending.add(op)

        def run() -> None:
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._controls_pending.discard, op)
            except RuntimeError:
                pass
            work()

        self._controls.submit(run)

    def _take_snapshot(self) -> None:
        """In the control thread: the weights as they are now, taken between steps, once for
        every viewer waiting."""
        loop = self._loop
        assert loop is not None
        try:
            # answered at the next step boundary or the loop's end; only a step or an evaluation
            # that takes minutes makes this wait run out
            future = self.trainer.snapshot()
            try:
                model = future.result(timeout=SNAPSHOT_TIMEOUT_S)
            except FuturesTimeout:
                future.cancel()  # the loop skips a cancelled request: no copy made for nobody
                waited = f"{SNAPSHOT_TIMEOUT_S:.0f} s"
                raise TimeoutError(f"the training loop did not reach a step boundary within {waited}") from None
            buffer = io.BytesIO()
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            del model
            # what a checkpoint holds of a model, so that the viewer reads it as one
            torch.save({"model_config": asdict(self.trainer.model_config), "train_config": asdict(self.trainer.config),
                        "vocab": "".join(self.trainer.corpus.tokenizer.chars), "model": state}, buffer)
            payload, error = buffer.getvalue(), None
        except Exception as exc:  # reported to the viewers; training is not this thread's business
            payload, error = b"", f"snapshot failed: {exc}"

        def deliver() -> None:
            waiters, self._snapshot_waiters = self._snapshot_waiters, []
            for viewer, request_id in waiters:
                viewer.snapshot_pending = False
                if viewer.closed:
                    continue
                if error is None:
                    frame = {"type": "snapshot", "id": request_id, "bytes": len(payload)}
                else:
                    frame = {"type": "error", "id": request_id, "error": error}
                # the weights may be larger than the budget: asked for, they never cut a viewer off
                viewer.queue.append(_Unbudgeted(protocol.encode(frame) + payload))
                assert viewer.wake is not None
                viewer.wake.set()

        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass

    async def _report_memory(self) -> None:
        while True:
            await asyncio.sleep(self.memory_interval_s)
            if self.viewers:
                frame = {"type": "memory", "memory": memory_usage(self.trainer.device)}
                for viewer in list(self.viewers.values()):
                    self._send(viewer, frame)


@dataclass(frozen=True)
class _Unbudgeted:
    """Bytes a viewer asked for (a snapshot), queued outside its budget."""

    data: bytes


def _step_bytes(event: ev.StepsDone) -> int:
    return 120 + 40 * len(event.iters)  # about what its JSON takes


def _same_user(sock: socket.socket | None) -> bool:
    """The peer's uid from the kernel (SO_PEERCRED, Linux). Elsewhere the folder's 0700 decides."""
    if sock is None:
        return True
    try:
        uid = peer_uid(sock)
    except OSError:
        return False
    return uid is None or uid == os.getuid()


def _names_us(server_json: Path) -> bool:
    info = ServerInfo.read(server_json.parent)
    return info is not None and info.pid == os.getpid()
