"""Run the real `chargpt-tui` on a pseudo-terminal, as a person's terminal would: read what it
draws, type keys, send signals, and look at the terminal's modes after it exits."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from helpers import COMMAND

# What Textual turns on while it runs, and the sequences that turn each off again.
ALT_SCREEN_ON, ALT_SCREEN_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
MOUSE_ON, MOUSE_OFF = b"\x1b[?1000h", b"\x1b[?1000l"


_ESCAPES = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class TerminalProcess:
    """chargpt-tui on a pty of the given size, which is its controlling terminal, as a person's
    terminal is: it leads a session of its own, Ctrl-C in cooked mode is SIGINT, and closing
    the terminal (hangup()) is a real hangup: the kernel sends it SIGHUP and its reads and
    writes on the terminal fail from then on."""

    def __init__(self, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24), env: dict[str, str] | None = None):
        self.master, slave = pty.openpty()
        cols, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.initial_modes = termios.tcgetattr(slave)
        environment = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("COLUMNS", "LINES"):
            environment.pop(name, None)
        try:
            self.proc = subprocess.Popen(
                [*COMMAND, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=environment,
                start_new_session=True, preexec_fn=_take_the_terminal,
            )
        finally:
            # the child holds the terminal alone: when it exits, reading the master ends (EOF)
            os.close(slave)
        self.output = bytearray()
        self.hung_up = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._eof = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Drain the terminal all the time: a full pty buffer would block the app's writes.
        try:
            while not self._done.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: every process holding the terminal has closed it
                        return
                    if not data:
                        return
                    with self._lock:
                        self.output += data
        finally:
            self._eof.set()

    def text(self) -> str:
        """Everything written so far, without escape sequences (styles, cursor moves)."""
        with self._lock:
            raw = self.output.decode("utf-8", errors="replace")
        return _ESCAPES.sub("", raw)

    def wait_for(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                self._eof.wait(timeout=5)  # everything it wrote, to the end
                if needle in self.text():
                    return
                code = self.proc.returncode
                raise AssertionError(f"exited ({code}) before showing {needle!r}: {self.text()[-2000:]!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} did not appear within {timeout} s: {self.text()[-2000:]!r}")
            time.sleep(0.05)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = 60.0) -> int:
        """The exit status, once the process has exited and everything it wrote has been read."""
        code = self.proc.wait(timeout=timeout)
        assert self._eof.wait(timeout=10) or self.hung_up, "the terminal is still held open after the exit"
        return code

    def hangup(self) -> None:
        """Close the terminal, as a dropped SSH connection or a closed window does."""
        self._done.set()
        self._reader.join(timeout=5)
        self.hung_up = True
        os.close(self.master)

    def modes(self) -> list:
        return termios.tcgetattr(self.master)  # the master reports its terminal's modes

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._done.set()
        self._reader.join(timeout=5)
        if not self.hung_up:
            self.hung_up = True
            os.close(self.master)

    def __enter__(self) -> TerminalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_the_terminal() -> None:
    """In the child, after setsid(): make its stdin, the pty, its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def assert_terminal_restored(term: TerminalProcess) -> None:
    """Cooked mode with echo again, and every mode the app turned on turned off after."""
    lflag = term.modes()[3]
    assert lflag & termios.ICANON and lflag & termios.ECHO, "the terminal was left in raw mode"
    out = bytes(term.output)
    assert out.rfind(ALT_SCREEN_OFF) > out.rfind(ALT_SCREEN_ON), "still on the alternate screen"
    assert out.rfind(MOUSE_OFF) > out.rfind(MOUSE_ON), "mouse reporting left on"
