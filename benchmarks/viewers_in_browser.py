"""Browser tabs on a run (`chargpt-tui serve`): training speed with 0, 1 and 3 tabs open, bytes
sent to each tab, and how soon a key pressed in one tab shows in it and in another.

    python benchmarks/viewers_in_browser.py TEXT [ROUNDS] [extra chargpt-tui flags...]

A tab is what a browser does with the page's websocket, done here by aiohttp: it reads every
frame the dashboard sends and keeps the text when a figure needs it. The browser itself (drawing
the terminal) runs on the machine that opens the page, usually not the one that trains (an SSH
tunnel), so its cost is not counted; the server's is: textual-serve's process and one dashboard
process per tab. Speed is compared inside one headless run, in windows of WINDOW_S seconds
(default 30): none, one tab, three tabs, none again, ROUNDS times (default 3); each tab window
against the mean of the tab-less windows before and after it, as benchmarks/viewers_in_tmux.sh
does for terminals.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
CLI = os.environ.get("CHARGPT_TUI", "chargpt-tui")
WINDOW_S = float(os.environ.get("WINDOW_S", "30"))


class Tab:
    def __init__(self, session: aiohttp.ClientSession, origin: str, token: str) -> None:
        self.session, self.origin, self.token = session, origin, token
        self.bytes = 0
        self.text = ""
        self.keep_text = False
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        url = self.origin.replace("http", "ws") + f"/{self.token}/ws?width=120&height=40"
        self.ws = await self.session.ws_connect(url, headers={"Origin": self.origin})
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.bytes += len(message.data)
                if self.keep_text:
                    self.text += ANSI.sub("", self.decoder.decode(message.data))

    async def wait_for(self, fragment: str, since: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.text[since:]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{fragment!r} not shown")
            await asyncio.sleep(0.005)

    async def press(self, key: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(["stdin", key]))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            await self.task


def mark(run: Path) -> tuple[int, float]:
    """The latest whole step line of the run: (iter, time_s)."""
    lines = (run / "metrics.jsonl").read_bytes().splitlines()[-200:]
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "step":
            return record["iter"], record["time_s"]
    return 0, 0.0


async def window(run: Path, tokens_per_step: int) -> float:
    a = mark(run)
    await asyncio.sleep(WINDOW_S)
    b = mark(run)
    return (b[0] - a[0]) * tokens_per_step / (b[1] - a[1])


async def main(text: str, rounds: int, flags: list[str]) -> None:
    work = Path(tempfile.mkdtemp())
    run = work / "speed"
    trainer = subprocess.Popen([CLI, text, "--max-iters", "1000000", "--eval-interval", "1000000", "--eval-iters", "2",
                                "--sample-interval", "1000000", *flags, "--out-dir", str(run), "--headless"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        while not (run / "server.json").exists() or mark(run)[0] == 0:
            await asyncio.sleep(0.5)
        config = json.loads((run / "config.json").read_text())
        tokens_per_step = config["train"]["batch_size"] * config["model"]["block_size"]
        server = subprocess.Popen([CLI, "serve", str(run), "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert server.stdout is not None
        while not (found := re.search(r"(http://[^/\s]+)/([A-Za-z0-9_-]{24,})/", server.stdout.readline())):
            pass
        origin, token = found.group(1), found.group(2)
        await asyncio.sleep(10)
        rows: list[tuple[str, float]] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):
                rows.append(("none", await window(run, tokens_per_step)))
                tabs = [Tab(session, origin, token)]
                await tabs[0].open()
                await asyncio.sleep(5)
                rows.append(("one", await window(run, tokens_per_step)))
                for _ in range(2):
                    tabs.append(Tab(session, origin, token))
                    await tabs[-1].open()
                await asyncio.sleep(5)
                before = [t.bytes for t in tabs]
                start = time.monotonic()
                rows.append(("three", await window(run, tokens_per_step)))
                rate = [(t.bytes - b) / (time.monotonic() - start) for t, b in zip(tabs, before)]
                print(f"bytes to each of three tabs: {', '.join(f'{r / 1000:.1f} KB/s' for r in rate)}", flush=True)
                for t in tabs:
                    await t.close()
                await asyncio.sleep(3)
                print(" ".join(f"{label} {value:.1f}" for label, value in rows[-3:]), flush=True)
            rows.append(("none", await window(run, tokens_per_step)))
            for kind in ("one", "three"):
                ratios = []
                for i, (label, value) in enumerate(rows):
                    if label == kind:
                        before_v = next(v for lab, v in reversed(rows[:i]) if lab == "none")
                        after_v = next(v for lab, v in rows[i:] if lab == "none")
                        ratios.append(value / ((before_v + after_v) / 2))
                print(f"{kind} tab(s): {', '.join(f'{100 * r:.1f}%' for r in sorted(ratios))} of the tab-less windows "
                      f"(median {100 * statistics.median(ratios):.1f}%)", flush=True)

            # keys: pause in one tab, seen there and in another, acted on by the run; then resume
            tabs = [Tab(session, origin, token) for _ in range(2)]
            for t in tabs:
                t.keep_text = True
                await t.open()
            for t in tabs:
                await t.wait_for("TRAINING", 0, 60)
            await asyncio.sleep(3)
            for _ in range(3):
                since = [len(t.text) for t in tabs]
                pauses = (run / "metrics.jsonl").read_text().count('"event": "pause"')
                start = time.monotonic()
                await tabs[0].press("p")
                await tabs[0].wait_for("Resume", since[0])  # its footer's key, as the tmux benchmark reads it
                own = time.monotonic() - start
                await tabs[1].wait_for("Resume", since[1])  # another tab (without the focus)
                other = time.monotonic() - start
                while (run / "metrics.jsonl").read_text().count('"event": "pause"') == pauses:
                    await asyncio.sleep(0.01)
                acted = time.monotonic() - start
                print(f"p in tab 1: on its page {1000 * own:.0f} ms, on tab 2's {1000 * other:.0f} ms, "
                      f"the run paused at a step boundary {1000 * acted:.0f} ms", flush=True)
                since = [len(t.text) for t in tabs]
                start = time.monotonic()
                await tabs[1].press("p")
                await tabs[1].wait_for("Pause", since[1])
                own = time.monotonic() - start
                await tabs[0].wait_for("TRAINING", since[0])
                print(f"p in tab 2 (resume): on its page {1000 * own:.0f} ms, training again on tab 1's "
                      f"{1000 * (time.monotonic() - start):.0f} ms", flush=True)
                await asyncio.sleep(2)
            for t in tabs:
                await t.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        trainer.terminate()
        trainer.wait(timeout=60)
        print(f"run in {work}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = sys.argv[1:]
    rounds = int(args[1]) if len(args) > 1 and args[1].isdigit() else 3
    extra = args[2:] if len(args) > 1 and args[1].isdigit() else args[1:]
    asyncio.run(main(args[0], rounds, extra))
