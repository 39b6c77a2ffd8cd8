"""Who owns a run directory, and where its training process can be reached.

One training process per run directory: it holds an exclusive ``flock`` on ``<run>/.lock`` for
its whole life. The kernel releases the lock when the process dies, however it dies (kill -9
included), so "is this run training?" is answered by the lock alone, never by a pid that may
have been reused. Beside the lock, ``<run>/server.json`` says where the process listens: a Unix
socket in a private runtime folder (0700, owned by the user; sockets 0600), the process's pid
and host. A server.json whose lock is free is stale: what it names is removed by the next
process that takes the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from model.rundir import RunDirError, process_exists

LOCK_NAME = ".lock"
SERVER_NAME = "server.json"
RUNTIME_ENV = "CHARGPT_TUI_RUNTIME_DIR"


class RunBusyError(RunDirError):
    """Another process trains in this run directory. One line for the user, exit status 2."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    socket: str
    protocol: int
    started: float

    @classmethod
    def read(cls, run_dir: Path) -> ServerInfo | None:
        try:
            data = json.loads((run_dir / SERVER_NAME).read_text(encoding="utf-8"))
            return cls(int(data["pid"]), str(data["host"]), str(data["socket"]), int(data["protocol"]),
                       float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None


def runtime_dir() -> Path:
    """The private folder for this user's sockets: $XDG_RUNTIME_DIR/chargpt-tui, else
    /tmp/chargpt-tui-<uid>. Created 0700; refused if it is a link, someone else's, or open to
    others (as tmux refuses its socket folder). Short, so socket paths stay under 107 bytes."""
    override = os.environ.get(RUNTIME_ENV)
    if override:
        path = Path(override)
    elif os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "chargpt-tui"
    else:
        path = Path(tempfile.gettempdir()) / f"chargpt-tui-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise RunDirError(f"cannot make the private folder {path} for the run's socket "
                          f"({exc.strerror or exc})") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RunDirError(f"{path} is not a private folder of this user (it must be a 0700 directory you own); "
                          f"remove it, or set {RUNTIME_ENV} to one")
    return path


class RunLock:
    """The exclusive lock a training process holds on its run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunBusyError naming the process that has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for attempt in range(5):  # a `runs` or `attach` probe holds a shared lock for microseconds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES) or attempt == 4:
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                        raise RunDirError(f"cannot lock {self.path} ({exc.strerror})") from None
                    info = ServerInfo.read(self.run_dir)
                    who = f"process {info.pid}" + (f" on {info.host}" if info.host != socket.gethostname() else "") \
                        if info else "another process"
                    raise RunBusyError(f"{self.run_dir} is in use by {who}; watch it with: "
                                       f"chargpt-tui attach {self.run_dir}") from None
                time.sleep(0.02)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_running(run_dir: Path) -> bool:
    """True while some process holds the run directory's lock (a training process is alive)."""
    return lock_held(run_dir) is True


def lock_held(run_dir: Path) -> bool | None:
    """Whether a process holds the run directory's lock; None when this user cannot tell (the lock
    file is another user's, 0600: their run, running or not)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        return None
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if it was taken
    return False


def write_server_info(run_dir: Path, info: ServerInfo) -> None:
    tmp = run_dir / f".{SERVER_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info.__dict__, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / SERVER_NAME)


def remove_stale_server(run_dir: Path, runtime: Path) -> None:
    """With the lock held: forget what a dead process left, its server.json and its socket (when
    that socket is in our private folder and nothing answers on it: a copied run directory's
    server.json may name the live socket of the run it was copied from)."""
    info = ServerInfo.read(run_dir)
    if info is None:
        return
    sock = Path(info.socket)
    if info.host == socket.gethostname() and sock.parent == runtime and not _answers(sock):
        try:
            sock.unlink()
        except OSError:
            pass
    try:
        (run_dir / SERVER_NAME).unlink()
    except OSError:
        pass


def remove_dead_sockets(runtime: Path) -> None:
    """Sockets in our folder whose process is gone (killed -9 in a run directory never trained
    again). Named <pid>-<random>.sock; one whose pid lives, or that still answers, stays."""
    for sock in runtime.glob("*.sock"):
        pid = sock.name.split("-", 1)[0]
        if not pid.isdigit() or process_exists(int(pid)) or _answers(sock):
            continue
        try:
            sock.unlink()
        except OSError:
            pass


def _answers(sock: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(sock))
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


def untrusted_socket_folder(sock: Path) -> str | None:
    """Why a socket named in a run's server.json is not to be trusted, or None. Only a folder
    that is this user's own and closed to others (a runtime folder, 0700) holds sockets that
    only this user could have made: a run directory others can write (a shared folder) could
    otherwise name a socket of someone else's, standing in for the run."""
    folder = Path(sock).parent
    try:
        info = folder.lstat()
    except OSError as exc:
        return f"its folder {folder} cannot be read ({exc.strerror or exc})"
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return f"it is not in a private folder of yours ({folder} must be a 0700 directory you own)"
    return None


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket, from the kernel (SO_PEERCRED,
    Linux); None where that cannot be asked."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def same_user(sock: socket.socket) -> bool:
    """Whether the process at the other end is this user's (SO_PEERCRED, Linux; elsewhere the
    folder's 0700 decides)."""
    try:
        uid = peer_uid(sock)
    except OSError:
        return False
    return uid is None or uid == os.getuid()


def connect_unix(path: str, timeout: float) -> socket.socket:
    """A connected Unix socket, waiting up to `timeout` seconds for the listener to take it.

    A socket with a timeout is non-blocking inside, and Linux answers a non-blocking connect to a
    listener whose queue is full with EAGAIN at once, not a wait: during a flood of connections
    every attach failed. Here a full queue is tried again (a fresh socket each time) until the
    deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError) as exc:  # EAGAIN: the listen queue is full
            sock.close()
            if time.monotonic() + delay > deadline:
                raise TimeoutError(errno.ETIMEDOUT, f"the run's process did not take the connection in {timeout:g} s "
                                   "(busy with other connections)") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock
