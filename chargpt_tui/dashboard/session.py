"""A dashboard from the shell (`chargpt-tui TEXT` on a terminal, `attach`, a browser tab's viewer):
run it on a run until the person leaves, then say what became of the run."""

from __future__ import annotations

import signal
import sys

from chargpt_tui.wire.run_link import RunLink

from .app import ChargptApp
from .leaving import DETACHED, leave_with_parent


def run_app(link: RunLink, preset: str | None = None, on_hangup: str = "detach", read_only: bool = False,
            browser: bool = False) -> int:
    """Run the dashboard on a run until the person leaves it; say what became of the run; return
    the exit status (the run's, when it ended while watched; 0 after a detach)."""
    link.read_only = read_only  # and the link refuses to send what steers training
    if browser:
        leave_with_parent()
    app = ChargptApp(link, preset, on_hangup, read_only, browser)
    code = app.run()
    if browser:  # stdout was the page's terminal, and the page is gone
        return 0
    run_dir = link.run_dir
    if app.leaving.outcome == DETACHED:
        pid = f" (process {app.pid})" if app.pid else ""
        print(f"detached: training goes on{pid}. Come back with: chargpt-tui attach {run_dir}")
        return 0
    ended = app.ended
    if ended is not None:
        how = ended.status
        if app.leaving.exit_code > 128:
            how = f"stopped by {signal.Signals(app.leaving.exit_code - 128).name}"
        print(f"{how} {ended.summary}")
        if ended.warning:
            print(f"chargpt-tui: {ended.warning}", file=sys.stderr)
        if app.leaving.exit_code:
            return app.leaving.exit_code
        return ended.exit_code
    return code if code is not None else (app.return_code or 0)
