"""The runs browser from the shell: browse, open a run's dashboard (Enter), and come back to the
browser as it was when that dashboard is left, until the person quits."""

from __future__ import annotations

from pathlib import Path

from chargpt_tui.dashboard.leaving import leave_with_parent
from chargpt_tui.dashboard.session import run_app
from chargpt_tui.wire.run_link import AttachError, open_link

from .app import BrowserState, RunsApp


def browse_runs(root: Path, read_only: bool = False, browser: bool = False) -> int:
    state = BrowserState()
    if browser:  # a tab of serve: a run opens in a tab of its own, never in this one
        leave_with_parent()
        RunsApp(root, state, read_only, browser=True).run()
        return 0
    while True:
        opened = RunsApp(root, state, read_only).run()
        if not opened:
            return 0
        state.notice = ""
        try:
            link = open_link(Path(opened))
        except AttachError as exc:  # it ended, or went, meanwhile
            state.notice = str(exc)
            continue
        run_app(link, read_only=read_only, browser=browser)
