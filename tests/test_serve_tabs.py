"""A browser tab's viewer process (chargpt_tui/browser/serve_tabs.py) always ends with its tab."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time

from chargpt_tui.browser import serve_tabs
from chargpt_tui.browser.serve_tabs import TabProcess, bounded_size

# A viewer at its worst: it writes its screen without end, and ignores SIGTERM.
STUBBORN = """
import signal, struct, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = sys.stdout.buffer
out.write(b"__GANGLION__\\n"); out.flush()
while True:
    out.write(b"D" + struct.pack(">I", 65536) + b"x" * 65536); out.flush()
"""


class NoDownloads:
    async def cancel_app_downloads(self, app_service_id: str) -> None:
        pass


async def test_a_viewer_whose_tab_went_away_mid_page_is_ended_even_with_its_output_pipe_full() -> None:
    """The tab is gone: writing the viewer's output to it fails, textual-serve stops reading the
    output, the pipe fills and the viewer blocks in a write; it ignores SIGTERM. stop() waited
    for ever on a killed process whose end it never saw, and the tab counted against the cap."""
    async def gone(data: bytes) -> None:
        raise ConnectionResetError("the tab is gone")

    async def nothing(*args: object) -> None:
        pass

    tab = TabProcess(shlex.join([sys.executable, "-c", STUBBORN]), write_bytes=gone, write_str=nothing,
                     close=nothing, download_manager=NoDownloads())  # type: ignore[arg-type]
    assert tab in TabProcess.live  # counted from the moment it is made
    await tab.start(80, 24)
    process = tab._process
    assert process is not None
    await asyncio.sleep(1.0)  # its output unread now: the pipe fills, the viewer blocks
    started = time.monotonic()
    await asyncio.wait_for(tab.stop(), 30)
    took = time.monotonic() - started
    limit = serve_tabs.ASK_S + serve_tabs.QUIT_S + serve_tabs.TERM_S + serve_tabs.KILLED_S
    assert took < limit, took
    assert process.returncode is not None and tab not in TabProcess.live
    try:
        os.kill(process.pid, 0)
        raise AssertionError("the viewer is still there")
    except ProcessLookupError:
        pass


def test_a_pages_terminal_size_is_bounded() -> None:
    assert bounded_size("1000000", "-5") == (400, 5)
    assert bounded_size("abc", None) == (80, 24)
    assert bounded_size(120, 40) == (120, 40)
