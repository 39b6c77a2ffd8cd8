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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from helpers import COMMAND, ENDLESS, make_text, one_clear_line, run_script, wait_for_steps, wait_until

from chargpt_tui.browser.serve import offline_page
from chargpt_tui.wire.runtime import is_running
from model.rundir import read_metrics

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Served:
    """`chargpt-tui serve RUN_DIR --port 0 ...` and the address it printed."""

    def __init__(self, cwd: Path, run_dir: Path, *flags: str) -> None:
        # a process group of its own, as a shell's job has: Ctrl+C reaches serve and its viewers
        self.proc = subprocess.Popen([*COMMAND, "serve", str(run_dir), "--port", "0", *flags], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        try:
            self.printed = self._read_until("Ctrl+C", 60)
            found = re.search(r"(http://[^/\s]+)/([A-Za-z0-9_-]{24,})/", "".join(self.printed))
            assert found, self.printed
        except BaseException:
            self.close()
            raise
        self.address, self.origin, self.token = found.group(0), found.group(1), found.group(2)
        self.ws_url = self.origin.replace("http", "ws") + f"/{self.token}/ws"

    def _read_until(self, fragment: str, timeout: float) -> list[str]:
        """serve's lines up to the one holding fragment (a thread reads them: a test never hangs
        on a serve that prints nothing)."""
        lines: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if fragment in line:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        assert lines and fragment in lines[-1], f"serve printed no {fragment!r} (exit {self.proc.poll()}): {lines}"
        return lines

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        finally:
            try:  # whatever of its job is left (its viewers), if it did not end them
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
    """What a browser tab does with the dashboard's websocket: reads the terminal's bytes all the
    time (and so answers the server's pings), sends keys."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.screen = ""  # everything written so far, escape codes removed
        self.mark = 0  # where read_until looks from: after the last key pressed, or what it last found
        self.closed = False
        self.meta: list[list[object]] = []  # what the server says to the page itself (open_url, ...)
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, served: Served, width: int = 120, height: int = 40,
                   ws_url: str | None = None) -> Tab:
        ws = await session.ws_connect(f"{ws_url or served.ws_url}?width={width}&height={height}",
                                      headers={"Origin": served.origin})
        return cls(ws)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.screen += ANSI.sub("", self.decoder.decode(message.data))
            elif message.type == aiohttp.WSMsgType.TEXT:
                self.meta.append(json.loads(message.data))
        self.closed = True

    async def read_until(self, *fragments: str, timeout: float = 60.0) -> str:
        """Until every fragment has been drawn since the last key pressed (or the last find)."""
        mark = self.mark
        deadline = time.monotonic() + timeout
        while not all(f in self.screen[mark:] for f in fragments):
            assert not self.closed, f"the websocket closed; last text: {self.screen[-600:]!r}"
            assert time.monotonic() < deadline, f"{fragments} not seen; last text: {self.screen[-600:]!r}"
            await asyncio.sleep(0.05)
        self.mark = len(self.screen)
        return self.screen[mark:]

    async def press(self, key: str) -> None:
        self.mark = len(self.screen)  # what the key does is drawn after this
        await self.ws.send_str(json.dumps(["stdin", key]))

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self.reader, 30)


async def until(condition, timeout: float = 60.0, what: str = "a condition") -> None:  # noqa: ANN001
    """wait_until for async tests: the event loop (and the tabs' readers) go on meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


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
    assert served.origin.startswith("http://127.0.0.1:") and len(served.token) >= 32
    assert re.search(r"ssh -N -L (\d+):127\.0\.0\.1:\1 \S+@\S+", printed), printed
    assert "Ctrl+C stops serving, not the run" in printed


async def test_the_page_its_files_and_its_websocket_need_the_token(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(served.address) as page:
            assert page.status == 200
            html = await page.text()
            assert "textual-terminal" in html and served.ws_url in html
            assert not page.cookies  # nothing a server on another port of this host could be sent
        async with session.get(served.address + "static/js/textual.js") as script:
            assert script.status == 200
        wrong = "x" * len(served.token)
        for path in ("/", f"/{wrong}/", "/static/js/textual.js", f"/{wrong}/static/js/textual.js", "/ws",
                     f"/{wrong}/ws", f"/{served.token[:-1]}/", f"/?token={served.token}"):
            async with session.get(served.origin + path) as refused:
                assert refused.status == 403, path


async def test_the_page_needs_nothing_from_the_internet(served: Served) -> None:
    async with aiohttp.ClientSession() as session, session.get(served.address) as page:
        html = await page.text()
    fetched = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)""", html) + re.findall(r"url\(\s*[\"']?([^\"')]+)", html)
    assert fetched and all(url.startswith(served.address + "static/") for url in fetched), fetched
    assert "fonts/RobotoMono" in html  # the font textual-serve ships, instead of Google's
    assert "googleapis" not in offline_page('<link rel="stylesheet" href="https://fonts.googleapis.com/x" />\n<style>')


async def test_a_page_that_rebinds_its_name_to_loopback_is_refused(served: Served) -> None:
    # DNS rebinding: evil.example resolves to 127.0.0.1; the browser sends Host: evil.example
    port = served.origin.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        for host in (f"evil.example:{port}", "[", f"127.0.0.1.evil.example:{port}"):
            async with session.get(served.address, headers={"Host": host}) as page:
                assert page.status == 403, host
        async with session.get(served.address.replace("127.0.0.1", "localhost")) as page:
            assert page.status == 200  # localhost is loopback too (an SSH tunnel opened as localhost)


# ---- the websocket ---------------------------------------------------------------------------
async def test_a_websocket_from_another_origin_is_refused(served: Served) -> None:
    for origin in ("http://evil.example", "null", served.origin.replace("127.0.0.1", "127.0.0.2"), None):
        headers = {"Origin": origin} if origin else {}
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(served.ws_url + "?width=100&height=30", headers=headers)
            assert refused.value.status == 403, origin


async def test_the_dashboard_comes_through_the_websocket_and_keys_steer_the_run(served: Served,
                                                                                 training: Path) -> None:
    async with aiohttp.ClientSession() as session:
        tab = await Tab.open(session, served)
        screen = await tab.read_until("loss", "step ", "TRAINING")
        assert re.search(r"step [\d,]+ / 1,000,000", tab.screen), screen[-2000:]
        pauses = len(events(training, "pause"))
        await tab.press("p")
        await tab.read_until("PAUSED", timeout=30)
        await until(lambda: len(events(training, "pause")) > pauses, 30, "the run to pause")
        await tab.press("p")
        await tab.read_until("TRAINING", timeout=30)
        await until(lambda: len(events(training, "resume")) > pauses, 30, "the run to resume")
        assert len(browser_processes(training)) == 1
        await tab.press("d")  # detach: this tab's viewer closes, the run goes on
        await until(lambda: tab.closed, 30, "the server to close the tab's websocket")
    await until(lambda: not browser_processes(training), 30, "the tab's viewer to end")
    assert is_running(training)
    steps = events(training, "step")[-1]["iter"]
    await until(lambda: events(training, "step")[-1]["iter"] > steps, 30, "training to go on")


async def test_closing_the_tab_ends_its_viewer_and_nothing_else(served: Served, training: Path) -> None:
    async with aiohttp.ClientSession() as session:
        tabs = [await Tab.open(session, served, 80, 24) for _ in range(2)]
        for tab in tabs:
            await tab.read_until("TRAINING")
        assert len(browser_processes(training)) == 2
        await tabs[0].close()
        await until(lambda: len(browser_processes(training)) == 1, 30, "the closed tab's viewer to end")
        await tabs[1].press("p")  # the other tab still steers the run
        await tabs[1].read_until("PAUSED", timeout=30)
        await tabs[1].press("p")
        await tabs[1].read_until("TRAINING", timeout=30)
        await tabs[1].close()
    await until(lambda: not browser_processes(training), 30, "every viewer to end")
    assert is_running(training)


async def test_read_only_keys_do_not_steer_the_run(workdir: Path, training: Path) -> None:
    server = Served(workdir, training, "--read-only")
    try:
        assert "read-only" in "".join(server.printed)
        counted = ("pause", "checkpoint", "eval", "finished")
        before = {kind: len(events(training, kind)) for kind in counted}
        steps = events(training, "step")[-1]["iter"]
        async with aiohttp.ClientSession() as session:
            tab = await Tab.open(session, server)
            await tab.read_until("TRAINING", "loss", "READ-ONLY")
            for key in "pse":
                await tab.press(key)
                await tab.read_until("read-only view", timeout=30)  # said, not done
            await tab.press("\x11")  # ctrl+q: on a read-only view, closes it; the run goes on
            await until(lambda: tab.closed, 30, "ctrl+q to close the read-only view")
        await until(lambda: events(training, "step")[-1]["iter"] > steps + 5, 30, "training to go on")
        assert {kind: len(events(training, kind)) for kind in counted} == before
        assert is_running(training)
    finally:
        server.close()


async def test_ctrl_c_on_serve_closes_the_tabs_and_leaves_the_run_training(workdir: Path, training: Path) -> None:
    server = Served(workdir, training)
    try:
        async with aiohttp.ClientSession() as session:
            tab = await Tab.open(session, server, 80, 24)
            await tab.read_until("TRAINING")
            assert len(browser_processes(training)) == 1
            steps = events(training, "step")[-1]["iter"]
            os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl+C in serve's terminal: the whole job
            await until(lambda: tab.closed, 30, "serve to close the tab")
        assert server.proc.wait(timeout=30) == 0
        await until(lambda: not browser_processes(training), 30, "the tab's viewer to end")
        assert not events(training, "finished") and is_running(training)  # the viewer did not stop the run
        await until(lambda: events(training, "step")[-1]["iter"] > steps, 30, "training to go on")
    finally:
        if server.proc.poll() is None:
            server.close()


# ---- bounds: processes, tabs, sizes, connections -----------------------------------------------
async def test_a_tab_gone_before_its_page_loaded_leaves_no_viewer_behind(served: Served, training: Path) -> None:
    """A headless browser's screenshot opens the websocket and leaves at once: its viewer stayed,
    at a fifth of a core, outliving serve."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            ws = await session.ws_connect(f"{served.ws_url}?width=80&height=24", headers={"Origin": served.origin})
            await ws.close()
    # serve ends a viewer within 3 s of its tab (ask, quit, terminate; then a kill): 15 s leaves a
    # loaded machine its margin, and still catches the viewers that stayed for good
    await until(lambda: not browser_processes(training), 15, "every viewer to end soon after its tab")


def test_a_headless_browsers_screenshot_leaves_no_viewer_behind(served: Served, training: Path,
                                                               tmp_path: Path) -> None:
    """As it was found: `chromium --headless --screenshot` loads the page and leaves while the
    dashboard starts. Its viewer (and the shell textual-serve started it with) stayed running,
    and survived Ctrl+C on serve."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Chromium (apt install chromium)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={tmp_path / 'shot.png'}",
                    "--window-size=800,600", served.address], capture_output=True, timeout=120)
    deadline = time.monotonic() + 15
    while browser_processes(training):
        assert time.monotonic() < deadline, "a viewer outlived its tab by more than 15 s"
        time.sleep(0.1)


async def test_a_tabs_viewer_leaves_within_2_s_of_sigterm(served: Served, training: Path) -> None:
    async with aiohttp.ClientSession() as session:
        tab = await Tab.open(session, served, 80, 24)
        await tab.read_until("TRAINING")
        [pid] = browser_processes(training)
        os.kill(pid, signal.SIGTERM)
        # it leaves within 2 s of handling the signal; the margin is for a loaded machine
        await until(lambda: not browser_processes(training), 6, "the viewer to leave soon after SIGTERM")
        await until(lambda: tab.closed, 10, "its tab to close")


async def test_the_terminal_size_a_page_asks_for_is_bounded(served: Served, training: Path) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{served.ws_url}?width=1000000&height=-5", headers={"Origin": served.origin})
        try:
            await until(lambda: browser_processes(training), 10, "the viewer to start")
            [pid] = browser_processes(training)
            env = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in line)
            assert (env[b"COLUMNS"], env[b"ROWS"]) == (b"400", b"5")
        finally:
            await ws.close()
    await until(lambda: not browser_processes(training), 15, "the viewer to end")


async def test_past_the_cap_on_tabs_the_page_says_so(workdir: Path, training: Path) -> None:
    server = Served(workdir, training, "--max-tabs", "1")
    try:
        async with aiohttp.ClientSession() as session:
            tab = await Tab.open(session, server, 80, 24)
            await tab.read_until("TRAINING")
            async with session.get(server.address) as page:
                assert page.status == 503 and "1 tabs are open on this run already, each one" in await page.text()
            ws = await session.ws_connect(f"{server.ws_url}?width=80&height=24", headers={"Origin": server.origin})
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert len(browser_processes(training)) == 1
            await tab.close()
            await until(lambda: not browser_processes(training), 15, "the viewer to end")
            # its process is gone a moment before serve has reaped it and counted its tab closed
            for _ in range(100):
                async with session.get(server.address) as page:
                    if page.status == 200:
                        break
                    assert page.status == 503
                await asyncio.sleep(0.1)
            assert page.status == 200
    finally:
        server.close()


def test_an_idle_http_connection_is_closed(served: Served) -> None:
    host, port = served.origin.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"GET /{served.token}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        started = time.monotonic()
        while s.recv(65536):  # the page, then nothing: the server closes the idle connection
            pass
        assert time.monotonic() - started < 15


async def test_ctrl_c_on_serve_ends_every_viewer_it_started(workdir: Path, training: Path) -> None:
    server = Served(workdir, training)
    async with aiohttp.ClientSession() as session:
        tabs = [await Tab.open(session, server, 80, 24) for _ in range(2)]
        for tab in tabs:
            await tab.read_until("TRAINING")
        os.kill(server.proc.pid, signal.SIGINT)  # serve alone: its viewers are in groups of their own
        assert server.proc.wait(timeout=30) == 0
    await until(lambda: not browser_processes(training), 15, "every viewer serve started to end")


async def test_a_killed_serve_leaves_no_viewer_behind(workdir: Path, training: Path) -> None:
    """kill -9 of serve: its viewers (each in a session of its own, so no hangup reaches them)
    stayed, idle or drawing for nobody."""
    server = Served(workdir, training)
    async with aiohttp.ClientSession() as session:
        tab = await Tab.open(session, server, 80, 24)
        await tab.read_until("TRAINING")
        assert browser_processes(training)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
    await until(lambda: not browser_processes(training), 15, "the viewer of a killed serve to end")


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
    server.close()
    assert server.proc.stderr is not None and "not on loopback" in server.proc.stderr.read()


# ---- a folder of runs ------------------------------------------------------------------------
async def test_serving_a_folder_of_runs_serves_the_runs_browser_and_opens_a_run_in_a_tab(workdir: Path,
                                                                                         training: Path) -> None:
    server = Served(workdir, workdir)  # the folder the run is in
    try:
        assert "the runs browser of" in "".join(server.printed)
        async with aiohttp.ClientSession() as session:
            tab = await Tab.open(session, server)
            await tab.read_until("runs in", "running")
            await tab.press("\r")  # Enter on the run: its dashboard in a tab of its own
            await until(lambda: any(m[0] == "open_url" for m in tab.meta), 30, "the page told to open a tab")
            opened = next(m[1] for m in tab.meta if m[0] == "open_url")
            assert opened == {"url": f"run/{training.name}/", "new_tab": True}
            async with session.get(server.address + opened["url"]) as page:
                assert page.status == 200
                ws_url = server.ws_url.rsplit("/ws", 1)[0] + f"/run/{training.name}/ws"
                assert ws_url in await page.text()
            run_tab = await Tab.open(session, server, ws_url=ws_url)
            await run_tab.read_until("loss", "TRAINING")
            for name in ("nope", "%2e%2e", "tiny.txt", ".%2e"):
                url = yarl.URL(server.address + f"run/{name}/", encoded=True)  # as sent, not resolved here
                async with session.get(url) as refused:
                    assert refused.status in (403, 404), name
            await run_tab.close()
            await tab.close()
    finally:
        server.close()
