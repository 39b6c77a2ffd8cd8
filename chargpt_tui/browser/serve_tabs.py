"""The viewer process behind each browser tab of `chargpt-tui serve`, and its end.

textual-serve starts one process per websocket with the shell, in serve's own process group, and
at the tab's end only asks it to quit, then waits for its output to end. A viewer that cannot
quit then (its output pipe full because the tab went away mid-page, say) stayed, re-parented to
PID 1 when serve left, taking a fifth of a core or more. Here each tab's viewer is started
directly in a process group of its own, and when the tab's websocket ends, however it ends, the
viewer is asked to quit, then sent SIGTERM, then SIGKILL: it is gone within ASK_S + QUIT_S +
TERM_S. Its output is read (and dropped) meanwhile: a viewer blocked writing to a full pipe can
neither quit nor, dead, be seen to have ended. Serve ends every group it started when it stops.
A tab counts against the cap on tabs from the moment it is made. The terminal size a page asks
for is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from asyncio.subprocess import Process

from textual_serve.app_service import AppService

ASK_S = 0.5  # to hand the viewer the request to quit
QUIT_S = 1.0  # for the viewer to leave when asked (it closes the dashboard)
TERM_S = 1.5  # then after SIGTERM, before SIGKILL
KILLED_S = 5.0  # for a killed viewer's end to be seen (its pipes closing)
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

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        TabProcess.live.add(self)  # (from now: tabs opened at the same moment count against the cap)

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        width, height = bounded_size(width, height)
        environment = self._build_environment(width=width, height=height)
        self._process = process = await asyncio.create_subprocess_exec(
            *shlex.split(self.command), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=environment, start_new_session=True)
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def set_terminal_size(self, width: int, height: int) -> None:
        await super().set_terminal_size(*bounded_size(width, height))

    async def stop(self) -> None:
        """Ask the viewer to quit; SIGTERM its group, then SIGKILL, if it has not; wait for it."""
        process = self._process
        try:
            if process is None:
                return
            with contextlib.suppress(Exception):
                await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
            if self._task is not None:  # textual-serve's reading of its output, to the tab that is gone
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
            draining = [asyncio.create_task(_discard(stream)) for stream in (process.stdout, process.stderr)
                        if stream is not None]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send_meta({"type": "quit"}), ASK_S)
            for signum, wait_s in ((None, QUIT_S), (signal.SIGTERM, TERM_S), (signal.SIGKILL, KILLED_S)):
                if signum is not None:
                    _signal_group(process, signum)
                try:
                    await asyncio.wait_for(process.wait(), wait_s)
                    break
                except asyncio.TimeoutError:
                    continue
            for task in draining:
                task.cancel()
        finally:
            TabProcess.live.discard(self)

    def kill_now(self) -> None:
        """At serve's exit, from a signal or a failure: no waiting."""
        if self._process is not None:
            _signal_group(self._process, signal.SIGKILL)


async def _discard(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(1 << 16):
            pass


def _signal_group(process: Process, signum: int) -> None:
    """The viewer's whole process group (itself, and anything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
