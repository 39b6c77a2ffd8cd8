"""The dashboard's side of a run: what it is told, and how it asks for things.

Two kinds of link, one interface, so that the dashboard is the same whoever trains:
- RunClient: connected to a training process's socket (runtime.py says where it is).
- RunOnDisk: a run that is not running, read back from its directory; it steers nothing, and
  generates from its ckpt.pt.

A link reports in notices (notices.py), from a thread of its own, through the
callback given to start(); requests never block the caller on the training process.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import protocol
from .notices import (
    Attached,
    CaughtUp,
    ControlRequested,
    Disconnected,
    EventReported,
    MemoryReported,
    Notice,
    Notify,
    NotRunning,
    RequestRefused,
    RunEnded,
)
from .runs import is_run_dir, load_journal_cache, load_run_model, read_config, read_journal, summarize
from .runtime import ServerInfo, connect_unix, is_running, peer_uid, untrusted_socket_folder

if TYPE_CHECKING:  # PyTorch is loaded only to generate: a viewer starts without it
    from model.gpt import GPT


class AttachError(Exception):
    """The run cannot be attached to. One line for the user, exit status 2. `transient`: it may
    work a moment later (the process is starting, or busy with its connections)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# What a read-only view never sends (and, as the dashboard's actions of the same names, shows dimmed).
STEERING_OPS = ("pause", "resume", "save", "evaluate", "stop")


class RunLink:
    run_dir: Path
    live = False
    connected = False  # to a training process, now
    ended = False  # that process said its training ended
    read_only = False  # set by a read-only view: requests that steer training are not sent

    def start(self, notify: Notify) -> None:
        raise NotImplementedError

    def request(self, op: str) -> bool:
        raise NotImplementedError

    def snapshot(self) -> GPT:
        """The weights as they are now (blocks: call it from a worker thread)."""
        raise NotImplementedError

    def reconnect(self, first_delay_s: float = 0.5) -> None:
        """Attach again after being cut off (only a link to a running run can be)."""
        raise AttachError(f"{self.run_dir} is not running")

    def close(self) -> None:
        pass


# ---- a running run ----------------------------------------------------------------------------------
class RunClient(RunLink):
    live = True

    def __init__(self, run_dir: Path, connect_timeout_s: float = 5.0) -> None:
        self.run_dir = Path(run_dir)
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._snapshots: dict[int, Future[GPT]] = {}
        self._closing = False
        self._left = threading.Event()  # close(): the viewer is leaving; nothing attaches again
        self._notify: Notify | None = None
        self.connected = False
        self.ended = False  # the run's process said its training ended
        self.ended_status: str | None = None

    def connect(self) -> None:
        info = ServerInfo.read(self.run_dir)
        running = is_running(self.run_dir)
        if not running:
            raise AttachError(f"{self.run_dir} is not running")
        if info is None:
            raise AttachError(f"{self.run_dir} is starting (its process does not serve viewers yet); try again",
                              transient=True)
        if info.host != socket.gethostname():
            raise AttachError(f"{self.run_dir} is training on {info.host} (pid {info.pid}); attach from there")
        if info.protocol != protocol.PROTOCOL_VERSION:
            raise AttachError(f"{self.run_dir} is served with protocol version {info.protocol}; "
                              f"this chargpt-tui speaks {protocol.PROTOCOL_VERSION}")
        why = untrusted_socket_folder(Path(info.socket))
        if why is not None:
            raise AttachError(f"{self.run_dir}: its server.json names the socket {info.socket}, and {why}; "
                              "not connecting")
        try:
            sock = connect_unix(info.socket, self.connect_timeout_s)
        except PermissionError:
            raise AttachError(f"{self.run_dir}: permission denied "
                              "(only the user who started a run can attach)") from None
        except OSError as exc:
            raise AttachError(f"cannot reach the run's process {info.pid} at {info.socket} "
                              f"({exc.strerror or exc})", transient=True) from None
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = -1
        if uid is not None and uid != os.getuid():
            sock.close()
            raise AttachError(f"{self.run_dir}: the process at {info.socket} runs as uid {uid}, not as you; "
                              "not connecting")
        self._sock, self._file = sock, sock.makefile("rb")
        self._closing = False
        self.connected = True

    def start(self, notify: Notify) -> None:
        self._notify = notify
        if self._sock is None:
            self.connect()
        threading.Thread(target=self._read, name="run-client", daemon=True).start()

    def reconnect(self, first_delay_s: float = 0.5, max_delay_s: float = 30.0) -> None:
        """After being cut off: a new connection, and the history again; or, once the run's process
        is found gone, NotRunning. A killed process closes its socket a moment before the kernel
        lets go of its lock, so the run may look alive for that moment: a failed try is tried again,
        less often each time, for as long as the lock is held."""
        assert self._notify is not None
        notify = self._notify
        self._disconnect()
        delay = first_delay_s
        while not self._left.wait(delay):  # (close() ends the wait, and the trying)
            if not is_running(self.run_dir):
                notify(NotRunning(summarize(self.run_dir).state))
                return
            try:
                self.start(notify)
            except AttachError as exc:
                if not exc.transient:  # (another host, another protocol, not ours): trying again changes nothing
                    raise
                delay = min(max(2 * delay, 0.25), max_delay_s)
                continue
            if self._left.is_set():  # closed while it attached: leave again
                self._disconnect()
            return

    def _read(self) -> None:
        notify, f = self._notify, self._file
        assert notify is not None and f is not None
        reason = "the run's process closed the connection"
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                frame = protocol.decode(line)
                payload = f.read(int(frame["bytes"])) if "bytes" in frame else b""
                if frame.get("type") == "bye":
                    reason = str(frame.get("reason"))
                notice = self._notice(frame, payload)
                if notice is not None:
                    notify(notice)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"connection lost ({exc})"
        self.connected = False
        for future in list(self._snapshots.values()):
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self._snapshots.clear()
        if self._closing:
            return
        if self.ended_status is not None:  # it said its training ended: this is its leaving
            notify(Disconnected(reason, False))
            notify(NotRunning(self.ended_status))
            return
        running = is_running(self.run_dir)
        notify(Disconnected(reason, running))
        if not running:
            notify(NotRunning(summarize(self.run_dir).state))

    def _notice(self, frame: dict[str, Any], payload: bytes) -> Notice | None:
        kind = frame.get("type")
        if kind == "event":
            try:
                event = protocol.event_from_record(frame["event"])
            except protocol.ProtocolError:
                return None  # an event this version does not know
            return EventReported(event, float(frame.get("at") or 0.0), bool(frame.get("replay")))
        if kind == "hello":
            return Attached(True, str(frame.get("vocab", "")), frame.get("preset"), frame.get("peak_flops"),
                            bool(frame.get("paused")), frame.get("pid"), frame.get("viewer"))
        if kind == "live":
            return CaughtUp()
        if kind == "control":
            return ControlRequested(str(frame.get("op")), int(frame.get("by") or 0))
        if kind == "memory":
            return MemoryReported(dict(frame.get("memory") or {}), figures(frame.get("samples")))
        if kind == "error":
            future = self._snapshots.pop(frame.get("id"), None) if frame.get("id") is not None else None
            if future is not None:
                future.set_exception(RuntimeError(str(frame.get("error"))))
                return None
            return RequestRefused(str(frame.get("error")))
        if kind == "snapshot":
            future = self._snapshots.pop(frame.get("id"), None)
            if future is not None:
                try:
                    future.set_result(_model_from_bytes(payload))
                except Exception as exc:
                    future.set_exception(exc)
            return None
        if kind == "ended":
            self.ended = True
            self.ended_status = str(frame.get("status"))
            return RunEnded(str(frame.get("status")), int(frame.get("iter") or 0), int(frame.get("exit_code") or 0),
                            str(frame.get("summary") or ""), frame.get("warning"))
        return None  # "reply", and what a newer process may say

    def request(self, op: str) -> bool:
        """Send a request; False (and a RequestRefused notice) if it could not be sent."""
        if self.read_only and op in STEERING_OPS:
            if self._notify is not None:
                self._notify(RequestRefused(f"a read-only view: {op} is not sent to the run"))
            return False
        return self._send({"op": op, "id": next(self._ids)})

    def _send(self, frame: dict[str, Any]) -> bool:
        sock = self._sock
        if sock is None or not self.connected:
            if self._notify is not None:
                self._notify(RequestRefused("the run is not running"))
            return False
        try:
            with self._send_lock:
                sock.sendall(protocol.encode(frame))
        except OSError as exc:
            if self._notify is not None:
                self._notify(RequestRefused(f"the request did not reach the run ({exc.strerror or exc})"))
            return False
        return True

    def snapshot(self, timeout: float = 120.0) -> GPT:
        if not self.connected:
            return load_run_model(self.run_dir)
        request_id = next(self._ids)
        future: Future[GPT] = Future()
        self._snapshots[request_id] = future
        if not self._send({"op": "snapshot", "id": request_id}):
            self._snapshots.pop(request_id, None)
            return load_run_model(self.run_dir)
        try:
            return future.result(timeout=timeout)
        except ConnectionError:
            return load_run_model(self.run_dir)  # the run ended meanwhile: its last checkpoint

    def close(self) -> None:
        """The viewer leaves: the connection ends, and a reconnect under way gives up."""
        self._left.set()
        self._disconnect()

    def _disconnect(self) -> None:
        self._closing = True
        self.connected = False
        sock, f = self._sock, self._file
        self._sock = self._file = None
        if sock is not None:
            try:  # first: it wakes the reader thread, which holds the file's lock in readline()
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thing in (f, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass


SAMPLE_KEYS = ("t", "cpu", "rss", "gpu_util", "gpu_mem")
MAX_SAMPLES = 600


def figures(samples: object) -> tuple[dict[str, float], ...]:
    """The samples of a memory frame that are what they should be (numbers under known names)."""
    if not isinstance(samples, list):
        return ()
    return tuple({k: float(v) for k, v in s.items() if k in SAMPLE_KEYS and isinstance(v, (int, float))}
                 for s in samples[-MAX_SAMPLES:] if isinstance(s, dict))


def _model_from_bytes(payload: bytes) -> GPT:
    import torch

    from model.checkpoint import model_from_checkpoint

    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return model_from_checkpoint(state)[0]


# ---- a run that is not running ----------------------------------------------------------------------
@dataclass
class RunOnDisk(RunLink):
    run_dir: Path
    notify: Notify | None = field(default=None, repr=False)

    def start(self, notify: Notify) -> None:
        self.notify = notify
        threading.Thread(target=self._replay, name="run-on-disk", daemon=True).start()

    def _replay(self) -> None:
        assert self.notify is not None
        try:
            config = read_config(self.run_dir)
            events = load_journal_cache(self.run_dir)
            if events is None:
                events = read_journal(self.run_dir).catch_up()
            state = summarize(self.run_dir).state
        except OSError as exc:  # (a disk error mid-read): the dashboard says so, not a thread's traceback
            self.notify(Attached(False, "", None, None, False))
            self.notify(CaughtUp())
            self.notify(RequestRefused(f"could not read {self.run_dir}: {exc.strerror or exc}"))
            self.notify(NotRunning("unknown"))
            return
        self.notify(Attached(False, str(config.get("vocab", "")), config.get("preset"), None, False))
        for event, at in events:
            self.notify(EventReported(event, at, True))
        self.notify(CaughtUp())
        self.notify(NotRunning(state))

    def request(self, op: str) -> bool:
        if self.notify is not None:
            self.notify(RequestRefused(f"the run is not running; train on with: chargpt-tui --resume "
                                       f"{self.run_dir / 'ckpt.pt'}"))
        return False

    def snapshot(self) -> GPT:
        return load_run_model(self.run_dir)

    @property
    def best_checkpoint(self) -> str:
        """What the views of the model's inside look at on a run that is not running: its best."""
        return "best.pt" if (self.run_dir / "best.pt").is_file() else "ckpt.pt"

    def best_snapshot(self) -> GPT:
        return load_run_model(self.run_dir, self.best_checkpoint)


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise AttachError(f"{run_dir}: no such run directory")
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise AttachError(f"cannot read {run_dir} (permission denied)")
    if not is_run_dir(run_dir):
        raise AttachError(f"{run_dir} is not a run directory (no config.json or metrics.jsonl)")


def open_link(run_dir: Path) -> RunLink:
    """A client of the run's process if it is running, else the run read from disk."""
    check_run_dir(run_dir)
    if is_running(run_dir):
        client = RunClient(run_dir)
        client.connect()
        return client
    return RunOnDisk(run_dir)
