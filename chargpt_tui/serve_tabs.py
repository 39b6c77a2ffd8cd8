"""The viewer process behind each browser tab of `chargpt-tui serve`, and its end.

textual-serve starts one process per websocket with the shell, in serve's own process group, and
at the tab's end only asks it to quit, then waits for its output to end. A viewer that cannot
quit then (its output pipe full because the tab went away mid-page, say) stayed, re-parented to
PID 1 when serve left, taking a fifth of a core or more. Here each tab's viewer is started
directly in a process group of its own, and when the tab's websocket ends, however it ends, the
viewer is asked to quit, then sent SIGTERM, then SIGKILL: it is gone within QUIT_S + TERM_S.
Serve ends every group it started when it stops. The terminal size a page asks for is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from asyncio.subprocess import Process

from textual_serve.app_service import AppService

QUIT_S = 1.0  # for the viewer to leave when asked (it closes the dashboard)
TERM_S = 1.5  # then after SIGTERM, before SIGKILL
MIN_SIZE, MAX_SIZE = (20, 5), (400, 200)  # columns, rows a page may ask for


def bounded_size(width: object, height: object) -> tuple[int, int]:
    """A page's terminal size, as integers within MIN_SIZE..MAX_SIZE (80x24 if not numbers)."""
    def clamp(value: object, default: int, low: int, high: int) -> int:
        try:
            number = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError):
            number = default
        return min(max(number, low), high)

    return clamp(width, 80, MIN_SIZE[0], MAX_SIZE[0]), clamp(height, 24, MIN_SIZE[1], MAX_SIZE[1])


class TabProcess(AppService):
    """textual-serve's AppService, with a process of its own that always ends."""

    live: set[TabProcess] = set()  # the tabs' viewers now running (serve ends them all when it stops)

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        width, height = bounded_size(width, height)
        environment = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *shlex.split(self.command), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=environment, start_new_session=True)
        assert process.stdin is not None
        self._stdin = process.stdin
        TabProcess.live.add(self)
        return process

    async def set_terminal_size(self, width: int, height: int) -> None:
        await super().set_terminal_size(*bounded_size(width, height))

    async def stop(self) -> None:
        """Ask the viewer to quit; SIGTERM its group, then SIGKILL, if it has not; wait for it."""
        process = self._process
        if process is None:
            return
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send_meta({"type": "quit"}), QUIT_S)
            for signum, wait_s in ((None, QUIT_S), (signal.SIGTERM, TERM_S), (signal.SIGKILL, None)):
                if signum is not None:
                    _signal_group(process, signum)
                try:
                    await asyncio.wait_for(process.wait(), wait_s)
                    break
                except asyncio.TimeoutError:
                    continue
            if self._task is not None:
                self._task.cancel()  # (its reading of the viewer's output ends with the process)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
        finally:
            TabProcess.live.discard(self)

    def kill_now(self) -> None:
        """At serve's exit, from a signal or a failure: no waiting."""
        if self._process is not None:
            _signal_group(self._process, signal.SIGKILL)


def _signal_group(process: Process, signum: int) -> None:
    """The viewer's whole process group (itself, and anything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
