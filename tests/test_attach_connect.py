"""How a viewer reaches a run's process: it waits for a busy listener, and it trusts only a
socket in a private folder of its own user, held by a process of that user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chargpt_tui.wire.run_link import AttachError, RunClient
from chargpt_tui.wire.runtime import RunLock, ServerInfo, runtime_dir, write_server_info


def fake_run(run_dir: Path, socket_path: Path) -> RunLock:
    """A run directory whose lock is held and whose server.json names socket_path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text("{}")
    lock = RunLock(run_dir)
    lock.acquire()
    write_server_info(run_dir, ServerInfo(os.getpid(), socket.gethostname(), str(socket_path), 1, time.time()))
    return lock


def fill_listen_queue(path: Path) -> list[socket.socket]:
    """Connections that fill the listen queue of the socket at path (nobody accepts them), as a
    flood of connections does."""
    waiting = []
    for _ in range(1024):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            return waiting
        waiting.append(s)
    pytest.fail("the listen queue never filled")


@contextmanager
def busy_listener(name: str, backlog: int) -> Iterator[tuple[Path, socket.socket, list[socket.socket]]]:
    """A socket in the runtime folder whose listen queue is full (nobody has accepted yet): its
    path, the listening socket, and the connections waiting in its queue."""
    path = runtime_dir() / f"test-{os.getpid()}-{name}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(backlog)
    waiting: list[socket.socket] = []
    try:
        waiting.extend(fill_listen_queue(path))
        yield path, listener, waiting
    finally:
        for s in waiting:
            s.close()
        listener.close()
        path.unlink(missing_ok=True)


def test_attach_waits_for_a_full_listen_queue_and_gets_in_when_a_slot_frees(tmp_path: Path) -> None:
    with busy_listener("queue", 1) as (path, listener, waiting):
        lock = fake_run(tmp_path / "run", path)
        accepted = threading.Event()

        def accept_later() -> None:  # the process gets to its queue a second later
            time.sleep(1.0)
            for _ in range(len(waiting) + 1):
                conn, _ = listener.accept()
                waiting.append(conn)
            accepted.set()

        started = time.monotonic()  # before the second starts: the connection cannot come sooner
        threading.Thread(target=accept_later, daemon=True).start()
        client = RunClient(tmp_path / "run", connect_timeout_s=10)
        client.connect()  # failed at once with EAGAIN ("Resource temporarily unavailable")
        assert client.connected and time.monotonic() - started >= 0.9
        assert accepted.wait(10)
        client.close()
        lock.release()


def test_attach_gives_up_on_a_queue_that_stays_full_with_one_line(tmp_path: Path) -> None:
    with busy_listener("full", 0) as (path, _listener, _waiting):
        lock = fake_run(tmp_path / "run", path)
        with pytest.raises(AttachError, match="did not take the connection in 0.5 s"):
            RunClient(tmp_path / "run", connect_timeout_s=0.5).connect()
        lock.release()


def test_a_socket_outside_a_private_folder_is_not_trusted(tmp_path: Path) -> None:
    """A run directory others can write (a shared folder): its server.json could name anyone's socket."""
    open_folder = Path(tempfile.mkdtemp(prefix="chargpt-open-"))
    try:
        open_folder.chmod(0o777)
        path = open_folder / "stand-in.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        lock = fake_run(tmp_path / "run", path)
        try:
            with pytest.raises(AttachError, match="not in a private folder of yours"):
                RunClient(tmp_path / "run").connect()
        finally:
            lock.release()
            listener.close()
    finally:
        shutil.rmtree(open_folder, ignore_errors=True)


def test_a_socket_held_by_another_user_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even in a folder that passes (here one this test says is private), a process of another
    uid at the other end is refused: the kernel says who it is (SO_PEERCRED)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to listen as another uid")
    from chargpt_tui.wire import run_link

    folder = Path(tempfile.mkdtemp(prefix="chargpt-other-"))
    folder.chmod(0o777)
    path = folder / "other.sock"
    code = ("import socket, sys, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"s.bind({str(path)!r}); s.listen(4); print('ready', flush=True)\n"
            "c, _ = s.accept(); time.sleep(5)\n")
    other = subprocess.Popen(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable,
                              "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        monkeypatch.setattr(run_link, "untrusted_socket_folder", lambda sock: None)
        lock = fake_run(tmp_path / "run", path)
        try:
            with pytest.raises(AttachError, match="runs as uid 65534, not as you"):
                RunClient(tmp_path / "run").connect()
        finally:
            lock.release()
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(folder, ignore_errors=True)
