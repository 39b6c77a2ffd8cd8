"""How a dashboard is left, and with which exit status: detached (the run trains on), closed, or
once the run it stopped has ended; by key (d, q, ctrl+q, ctrl+c) or by signal (SIGINT, SIGTERM,
and SIGHUP: a dropped SSH connection, after which the run trains on unless --on-hangup stop)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from textual.app import App

from chargpt_tui.wire.notices import RunEnded
from chargpt_tui.wire.run_link import RunLink

from .screens import QuitScreen
from .state import RunState

# Where the dashboard was left: how run_app reports the end to the shell.
DETACHED, CLOSED, ENDED = "detached", "closed", "ended"
BROWSER_EXIT_S = 2.0  # a tab's viewer told to leave (SIGTERM) is gone by then


class Leaving:
    def __init__(self, app: App[int], link: RunLink, state: RunState, show: Callable[[], None], on_hangup: str,
                 browser: bool) -> None:
        self.app, self.link, self.state, self.show = app, link, state, show
        self.on_hangup = on_hangup  # SIGHUP: "detach" (the run trains on) or "stop" it with a checkpoint
        self.browser = browser  # a browser tab's viewer (serve): no terminal of its own
        self.outcome = CLOSED
        self.exit_code = 0
        self.quitting = False  # asked to stop the run and quit once it has ended
        self.ended: RunEnded | None = None  # how the training process's run ended, when it told us

    # ---- keys ----------------------------------------------------------------------------------
    def detach(self) -> None:
        """Leave the run training and this dashboard closed; attach again any time."""
        self.outcome = DETACHED if self.state.live and not self.state.finished else CLOSED
        self.app.exit(0)

    def quit(self) -> None:
        """q: on a run that trains, ask first (stop it, detach, or cancel); else just close."""
        if self.quitting:
            self.app.exit(self.exit_code)
        elif not self.state.live or self.state.finished or self.state.read_only:
            self.app.exit(0)
        else:
            self.app.push_screen(QuitScreen(), self._answered)

    def _answered(self, answer: str | None) -> None:
        if answer == "stop":
            self.stop_then_exit()
        elif answer == "detach":
            self.detach()

    def interrupt(self) -> None:
        """Ctrl-C: as ctrl+q, with the exit status of an interrupt (130), as headless."""
        if not self.quitting:
            self.exit_code = 130
        self.stop_then_exit()

    def stop_then_exit(self) -> None:
        """ctrl+q: stop the run with a checkpoint, then quit; no question. Again: quit at once."""
        if self.state.read_only:  # closes this view; the run is not this viewer's to stop
            self.app.exit(0)
            return
        if self.quitting:
            self.app.exit(self.exit_code)
            return
        self.quitting = True
        if not self.state.live or self.ended is not None:
            self.outcome = ENDED if self.ended is not None else CLOSED
            self.app.exit(self.exit_code)
            return
        self.state.quit_pressed()
        self.show()
        self.link.request("stop")  # the run saves at the next step boundary; its end closes this app

    # ---- the run's end -------------------------------------------------------------------------
    def run_ended(self, ended: RunEnded) -> None:
        self.ended = ended
        if self.quitting:
            self.outcome = ENDED
            self.app.exit(self.exit_code)

    def not_running(self) -> None:
        if self.quitting:
            self.outcome = ENDED if self.ended is not None else CLOSED
            self.app.exit(self.exit_code)

    # ---- signals -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        if self.app.is_headless:  # under App.run_test: leave the test runner's signals alone
            return
        loop = asyncio.get_running_loop()
        # SIGINT too: in raw mode Ctrl-C arrives as a key, but `kill -INT` is a signal.
        for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            try:
                loop.add_signal_handler(signum, self.on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), Windows
                pass

    def on_signal(self, signum: int) -> None:
        if self.browser:
            # A tab's viewer has no terminal: signals come from `serve` (its Ctrl+C reaches the
            # whole process group; serve then closes every tab itself). This viewer just closes,
            # within 2 s whatever holds it (a thread, a page that stopped reading its output).
            if signum != signal.SIGINT:
                leave = threading.Timer(BROWSER_EXIT_S, os._exit, args=(0,))
                leave.daemon = True
                leave.start()
                self.app.exit(0)
            return
        if not self.quitting:
            self.exit_code = 128 + signum
        if signum == getattr(signal, "SIGHUP", None):
            # The terminal is gone (a dropped SSH connection): nothing can be drawn or restored,
            # and waiting on it could hang. The run goes on (its process is not this one),
            # unless --on-hangup stop asked for today's behaviour: stop it with a checkpoint.
            threading.Thread(target=self._leave_after_hangup, daemon=True).start()
            return
        self.stop_then_exit()  # a second signal, like a second ctrl+c, quits at once

    def _leave_after_hangup(self) -> None:
        if self.on_hangup == "stop" and self.state.live and not self.state.finished:
            self.link.request("stop")  # then wait for the run to save and say it has ended
            deadline = time.monotonic() + 120
            while self.link.connected and not self.link.ended and time.monotonic() < deadline:
                time.sleep(0.05)
        os._exit(self.exit_code)


PR_SET_PDEATHSIG = 1  # Linux's prctl option: a signal for this process when its parent ends


def leave_with_parent() -> None:
    """A browser tab's viewer (started by `serve` in a session of its own, so that no hangup
    reaches it) ends when serve does, however serve ends, a kill -9 too: Linux sends it SIGTERM
    then, which it answers by closing (on_signal). It stayed, idle or drawing for nobody.
    Elsewhere than Linux, nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # serve was gone before this was asked for
        os.kill(os.getpid(), signal.SIGTERM)
