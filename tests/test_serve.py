"""`chargpt-tui serve`: the dashboard in a browser tab, private by default.

The server for real (the `chargpt-tui` script, beside a headless run training in a process of its
own), talked to as a browser talks to it: the page over HTTP, the dashboard over its websocket,
keys as the page's terminal sends them."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import COMMAND, ENDLESS, make_text, one_clear_line, run_script, wait_for_steps, wait_until

from chargpt_tui.runtime import is_running
from chargpt_tui.serve import offline_page
from model.rundir import read_metrics

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Served:
    """`chargpt-tui serve RUN_DIR --port 0 ...` and the address it printed."""

    def __init__(self, cwd: Path, run_dir: Path, *flags: str) -> None:
        # a process group of its own, as a shell's job has: Ctrl+C reaches serve and its viewers
        self.proc = subprocess.Popen([*COMMAND, "serve", str(run_dir), "--port", "0", *flags], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.printed: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            assert line, f"serve exited: {self.proc.wait()} {self.proc.stderr.read() if self.proc.stderr else ''}"
            self.printed.append(line)
            found = re.search(r"(http://[^/\s]+)/\?token=(\S+)", line)
            if found:
                self.origin, self.token = found.group(1), found.group(2)
                self.address = found.group(0)
                break
        else:
            raise AssertionError("serve printed no address")
        for _ in range(6):  # the lines after the address (the ssh line, what a tab is)
            self.printed.append(self.proc.stdout.readline())
            if "Ctrl+C" in self.printed[-1]:
                break

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def training(workdir: Path) -> Iterator[Path]:
    """A headless run that trains until the module is done."""
    out = workdir / "run"
    proc = subprocess.Popen([*COMMAND, "tiny.txt", *ENDLESS, "--out-dir", str(out), "--headless"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_steps(out / "metrics.jsonl", 5, proc)
        wait_until(lambda: is_running(out), 30, "the run to serve viewers")
        yield out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def served(workdir: Path, training: Path) -> Iterator[Served]:
    server = Served(workdir, training)
    yield server
    server.close()


class Tab:
    """What a browser tab does with the dashboard's websocket: reads the terminal's bytes, sends keys."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.screen = ""  # everything written so far, escape codes removed

    async def read_until(self, *fragments: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        mark = len(self.screen)
        while not all(f in self.screen[mark:] for f in fragments):
            left = deadline - time.monotonic()
            assert left > 0, f"{fragments} not seen; last text: {self.screen[-600:]!r}"
            try:
                message = await asyncio.wait_for(self.ws.receive(), left)
            except asyncio.TimeoutError:
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                self.screen += ANSI.sub("", self.decoder.decode(message.data))
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise AssertionError(f"the websocket closed; last text: {self.screen[-600:]!r}")
        return self.screen[mark:]

    async def press(self, key: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", key]))


def events(run_dir: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == kind]


def browser_processes(run_dir: Path) -> list[int]:
    """The viewers serve started for run_dir (`chargpt_tui attach RUN_DIR --browser`), by /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--browser" in cmdline and str(run_dir.resolve()).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


# ---- the page --------------------------------------------------------------------------------
def test_serve_prints_the_address_with_its_token_and_the_ssh_line(served: Served) -> None:
    printed = "".join(served.printed)
    assert served.origin.startswith("http://127.0.0.1:") and len(served.token) >= 24
    assert re.search(r"ssh -N -L (\d+):127\.0\.0\.1:\1 \S+@\S+", printed), printed
    assert "Ctrl+C stops serving, not the run" in printed


async def test_the_page_needs_the_token(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(served.address) as page:
            assert page.status == 200
            html = await page.text()
            assert "textual-terminal" in html and "ws://127.0.0.1" in html
            cookie = page.cookies  # the token, for the page's own requests
        for url in (served.origin + "/", served.origin + "/?token=wrong", served.origin + "/static/js/textual.js",
                    served.origin + "/ws"):
            async with aiohttp.ClientSession() as stranger, stranger.get(url) as refused:
                assert refused.status == 403, url
        async with aiohttp.ClientSession(cookies=cookie) as same_browser:
            async with same_browser.get(served.origin + "/static/js/textual.js") as script:
                assert script.status == 200


async def test_the_page_needs_nothing_from_the_internet(served: Served) -> None:
    async with aiohttp.ClientSession() as session, session.get(served.address) as page:
        html = await page.text()
    fetched = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)""", html) + re.findall(r"url\(\s*[\"']?([^\"')]+)", html)
    assert fetched and all(url.startswith(served.origin + "/static/") for url in fetched), fetched
    assert "fonts/RobotoMono" in html  # the font textual-serve ships, instead of Google's
    assert "googleapis" not in offline_page('<link rel="stylesheet" href="https://fonts.googleapis.com/x" />\n<style>')


async def test_a_page_that_rebinds_its_name_to_loopback_is_refused(served: Served) -> None:
    # DNS rebinding: evil.example resolves to 127.0.0.1; the browser sends Host: evil.example
    port = served.origin.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        async with session.get(served.address, headers={"Host": f"evil.example:{port}"}) as page:
            assert page.status == 403
        async with session.get(served.address.replace("127.0.0.1", "localhost")) as page:
            assert page.status == 200  # localhost is loopback too (an SSH tunnel opened as localhost)


# ---- the websocket ---------------------------------------------------------------------------
async def test_a_websocket_from_another_origin_is_refused(served: Served) -> None:
    ws_url = served.origin.replace("http", "ws") + f"/ws?width=100&height=30&token={served.token}"
    for origin in ("http://evil.example", "null", served.origin.replace("127.0.0.1", "127.0.0.2"), None):
        headers = {"Origin": origin} if origin else {}
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url, headers=headers)
            assert refused.value.status == 403, origin


async def test_the_dashboard_comes_through_the_websocket_and_keys_steer_the_run(served: Served,
                                                                                 training: Path) -> None:
    ws_url = served.origin.replace("http", "ws") + f"/ws?width=120&height=40&token={served.token}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, headers={"Origin": served.origin}) as ws:
            tab = Tab(ws)
            screen = await tab.read_until("loss", "step ", "TRAINING")
            assert re.search(r"step [\d,]+ / 1,000,000", tab.screen), screen[-2000:]
            pauses = len(events(training, "pause"))
            await tab.press("p")
            await tab.read_until("PAUSED", timeout=30)
            wait_until(lambda: len(events(training, "pause")) > pauses, 30, "the run to pause")
            await tab.press("p")
            await tab.read_until("TRAINING", timeout=30)
            wait_until(lambda: len(events(training, "resume")) > pauses, 30, "the run to resume")
            viewers = browser_processes(training)
            assert len(viewers) == 1
            await tab.press("d")  # detach: this tab's viewer closes, the run goes on
            message = await ws.receive(timeout=30)
            while message.type == aiohttp.WSMsgType.BINARY:
                message = await ws.receive(timeout=30)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    wait_until(lambda: not browser_processes(training), 30, "the tab's viewer to end")
    assert is_running(training)
    steps = events(training, "step")[-1]["iter"]
    wait_until(lambda: events(training, "step")[-1]["iter"] > steps, 30, "training to go on")


async def test_closing_the_tab_ends_its_viewer_and_nothing_else(served: Served, training: Path) -> None:
    ws_url = served.origin.replace("http", "ws") + f"/ws?width=80&height=24&token={served.token}"
    async with aiohttp.ClientSession() as session:
        tabs = [await session.ws_connect(ws_url, headers={"Origin": served.origin}) for _ in range(2)]
        for ws in tabs:
            await Tab(ws).read_until("TRAINING")
        assert len(browser_processes(training)) == 2
        await tabs[0].close()
        wait_until(lambda: len(browser_processes(training)) == 1, 30, "the closed tab's viewer to end")
        await Tab(tabs[1]).press("p")  # the other tab still steers the run
        await Tab(tabs[1]).read_until("PAUSED", timeout=30)
        await Tab(tabs[1]).press("p")
        await Tab(tabs[1]).read_until("TRAINING", timeout=30)
        await tabs[1].close()
    wait_until(lambda: not browser_processes(training), 30, "every viewer to end")
    assert is_running(training)


def test_read_only_keys_do_not_steer_the_run(workdir: Path, training: Path) -> None:
    server = Served(workdir, training, "--read-only")
    try:
        assert "read-only" in "".join(server.printed)

        async def press_pause_and_save() -> str:
            ws_url = server.origin.replace("http", "ws") + f"/ws?width=120&height=40&token={server.token}"
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url, headers={"Origin": server.origin}) as ws:
                    tab = Tab(ws)
                    await tab.read_until("TRAINING", "loss")
                    for key in "pse":
                        await tab.press(key)
                    return await tab.read_until("read-only", timeout=30)

        pauses, saves = len(events(training, "pause")), len(events(training, "checkpoint"))
        steps = events(training, "step")[-1]["iter"]
        asyncio.run(asyncio.wait_for(press_pause_and_save(), 120))
        wait_until(lambda: events(training, "step")[-1]["iter"] > steps + 5, 30, "training to go on")
        assert len(events(training, "pause")) == pauses and len(events(training, "checkpoint")) == saves
    finally:
        server.close()


# ---- the command -----------------------------------------------------------------------------
def test_serve_refuses_what_it_cannot_serve(workdir: Path, training: Path) -> None:
    result = run_script(["serve", str(workdir / "nothing-here")], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "no such run directory")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_script(["serve", str(training), "--port", str(taken.getsockname()[1])], workdir)
    assert result.returncode == 2
    one_clear_line(result.stderr, "cannot serve on 127.0.0.1")


def test_serve_warns_when_not_on_loopback(workdir: Path, training: Path) -> None:
    server = Served(workdir, training, "--host", "0.0.0.0")
    try:
        assert server.proc.stderr is not None
        server.proc.terminate()
        server.proc.wait(timeout=30)
        assert "not on loopback" in server.proc.stderr.read()
    finally:
        if server.proc.poll() is None:
            server.close()



async def test_ctrl_c_on_serve_closes_the_tabs_and_leaves_the_run_training(workdir: Path, training: Path) -> None:
    server = Served(workdir, training)
    try:
        ws_url = server.origin.replace("http", "ws") + f"/ws?width=80&height=24&token={server.token}"
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url, headers={"Origin": server.origin})
            await Tab(ws).read_until("TRAINING")
            assert len(browser_processes(training)) == 1
            steps = events(training, "step")[-1]["iter"]
            os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl+C in serve's terminal: the whole job
            message = await asyncio.wait_for(ws.receive(), 30)
            while message.type == aiohttp.WSMsgType.BINARY:
                message = await asyncio.wait_for(ws.receive(), 30)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert server.proc.wait(timeout=30) == 0
        wait_until(lambda: not browser_processes(training), 30, "the tab's viewer to end")
        assert not events(training, "finished") and is_running(training)  # the viewer did not stop the run
        wait_until(lambda: events(training, "step")[-1]["iter"] > steps, 30, "training to go on")
    finally:
        if server.proc.poll() is None:
            server.close()
