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
    """chargpt-tui with stdin, stdout and stderr on a pty of the given size."""

    def __init__(self, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24), env: dict[str, str] | None = None):
        self.master, self.slave = pty.openpty()
        cols, rows = size
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.initial_modes = termios.tcgetattr(self.slave)
        environment = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("COLUMNS", "LINES"):
            environment.pop(name, None)
        self.proc = subprocess.Popen(
            [*COMMAND, *args], cwd=cwd, stdin=self.slave, stdout=self.slave, stderr=self.slave, env=environment,
        )
        self.output = bytearray()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Drain the terminal all the time: a full pty buffer would block the app's writes.
        while not self._done.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                with self._lock:
                    self.output += data

    def text(self) -> str:
        """Everything written so far, without escape sequences (styles, cursor moves)."""
        with self._lock:
            raw = self.output.decode("utf-8", errors="replace")
        return _ESCAPES.sub("", raw)

    def wait_for(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last bytes
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
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            time.sleep(0.2)
            self._done.set()
            self._reader.join(timeout=5)
        return code

    def modes(self) -> list:
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._done.set()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> TerminalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_terminal_restored(term: TerminalProcess) -> None:
    """Cooked mode with echo again, and every mode the app turned on turned off after."""
    lflag = term.modes()[3]
    assert lflag & termios.ICANON and lflag & termios.ECHO, "the terminal was left in raw mode"
    out = bytes(term.output)
    assert out.rfind(ALT_SCREEN_OFF) > out.rfind(ALT_SCREEN_ON), "still on the alternate screen"
    assert out.rfind(MOUSE_OFF) > out.rfind(MOUSE_ON), "mouse reporting left on"
