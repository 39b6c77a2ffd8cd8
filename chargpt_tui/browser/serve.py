"""`chargpt-tui serve`: the dashboard in a browser tab, through textual-serve (or, given a folder
of runs, the runs browser, whose Enter opens a run's dashboard in a tab of its own).

textual-serve starts one process for each browser connection; here each is `chargpt-tui attach
RUN_DIR` on Textual's web driver, so a tab is one more viewer of the run: the same dashboard and
keys, cut off like any viewer if it stalls, and closing it changes nothing for the run.

What a web server on a shared machine needs, and textual-serve (1.1) does not have, is added here:
- a token, random and printed in the address: every URL of the page (the page, its scripts, its
  websocket) is under /TOKEN/, and anything else is refused (403). In the path, not in a cookie:
  browsers send a host's cookies to every port of it, so another local user's server on another
  port would be sent the token by any page of theirs the user opened;
- Host and Origin checks: the Host must be a name of the address served (a loopback name when
  serving on loopback, so a page that rebinds its DNS name to 127.0.0.1 is refused), and a
  websocket must come from a page of that same origin (not from a hostile page's script);
- a page that needs nothing from the internet: textual-serve's own template without its link to
  Google Fonts, using the Roboto Mono files textual-serve ships instead;
- a port of 0 (any free port): the address printed is the one bound;
- bounds (serve_tabs.py): each tab's viewer in a process group of its own, ended with its tab
  however the tab ends and when serve stops; at most --max-tabs tabs (the next gets a page saying
  so); the terminal size a page asks for bounded; idle HTTP connections closed after
  KEEPALIVE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hmac
import ipaddress
import logging
import re
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.server import Server

from chargpt_tui.wire.runs import is_run_dir

from .serve_tabs import TabProcess, bounded_size

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ALL_INTERFACES = ("0.0.0.0", "::", "")
FONT_FACES = """
      @font-face {
        font-family: "Roboto Mono";
        src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf") format("truetype");
        font-weight: 100 700;
        font-style: normal;
      }
      @font-face {
        font-family: "Roboto Mono";
        src: url("{{ config.static.url }}fonts/RobotoMono-Italic-VariableFont_wght.ttf") format("truetype");
        font-weight: 100 700;
        font-style: italic;
      }
"""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEEPALIVE_S = 5.0  # an idle HTTP connection is closed after this long


class ServeError(Exception):
    """The address cannot be served (in use, not ours to bind): one line, exit status 2."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def offline_page(template: str) -> str:
    """textual-serve's page template with nothing fetched from elsewhere: links to other sites
    (its web font) are dropped and the font it ships is declared instead."""
    template = re.sub(r"<link\b[^>]*\bhref=\"https?://[^>]*>", "", template, flags=re.S)
    return template.replace("<style>", "<style>" + FONT_FACES, 1)


class DashboardServer(Server):
    """Serves one run's dashboard, or (runs_folder) the runs browser of a folder of runs, whose
    Enter opens a run's dashboard in a tab of its own: /TOKEN/run/NAME/ (a run directly in it)."""

    def __init__(self, run_dir: Path, host: str, port: int, token: str, read_only: bool = False,
                 max_tabs: int = 8, runs_folder: bool = False) -> None:
        self.runs_folder = runs_folder
        self.read_only = read_only
        command = self._command("runs" if runs_folder else "attach", run_dir)
        super().__init__(command, host=host, port=port, title=f"chargpt-tui · {run_dir.name}")
        self.run_dir = run_dir
        self.token = token
        self.max_tabs = max_tabs

    def _command(self, kind: str, path: Path) -> str:
        command = [sys.executable, "-m", "chargpt_tui", kind, str(path.resolve()), "--browser"]
        return shlex.join(command + (["--read-only"] if self.read_only else []))

    def run_named(self, name: str) -> Path | None:
        """A run directly in the folder served, by its directory's name; None for anything else."""
        if not self.runs_folder or not name or name != Path(name).name or name in (".", ".."):
            return None
        path = self.run_dir / name
        return path if path.is_dir() and is_run_dir(path) else None

    def too_many_tabs(self) -> str | None:
        if len(TabProcess.live) < self.max_tabs:
            return None
        where = "here" if self.runs_folder else "on this run"
        return (f"chargpt-tui: {self.max_tabs} tabs are open {where} already, each one a viewer; "
                "close one, then reload this page")

    # ---- who may ----------------------------------------------------------------------------
    def host_allowed(self, host_header: str) -> bool:
        """A name of the address served: loopback names when serving on loopback, the name given
        with --host, any when serving on all interfaces (the token still guards those)."""
        name = (urlsplit("//" + host_header).hostname or "").lower()
        if self.host in ALL_INTERFACES:
            return bool(name)
        return name == self.host.lower().strip("[]") or (is_loopback(self.host) and is_loopback(name))

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            host_ok = self.host_allowed(request.host)
        except ValueError:  # a Host header that is not one
            host_ok = False
        if not host_ok:
            raise web.HTTPForbidden(text=f"chargpt-tui: not served as {request.host!r}\n")
        prefix = request.path.split("/", 2)[1] if request.path.count("/") >= 2 else ""
        if not hmac.compare_digest(prefix.encode("utf-8", "surrogateescape"), self.token.encode()):
            raise web.HTTPForbidden(text="chargpt-tui: open the address `chargpt-tui serve` printed, with its token\n")
        if request.path.endswith("/ws") and request.headers.get("Origin") != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="chargpt-tui: a websocket from another page is refused\n")
        return await handler(request)

    # ---- textual-serve's app, adjusted ---------------------------------------------------------
    async def _make_app(self) -> web.Application:
        """textual-serve's app (its page, websocket and files) under /TOKEN/, in an app that
        refuses everything else."""
        page = await super()._make_app()
        template = (Path(self.templates_path) / "app_index.html").read_text(encoding="utf-8")
        aiohttp_jinja2.setup(page, loader=jinja2.DictLoader({"app_index.html": offline_page(template)}))
        page.router.add_get("/run/{name}/", self.handle_run_index)
        page.router.add_get("/run/{name}/ws", self.handle_websocket)
        app = web.Application(middlewares=[self.guard])
        app.add_subapp(f"/{self.token}/", page)
        return app

    async def handle_run_index(self, request: web.Request) -> web.StreamResponse:
        """A run's dashboard, opened from the runs browser (Enter) in a tab of its own."""
        name = request.match_info["name"]
        if self.run_named(name) is None:
            raise web.HTTPNotFound(text="chargpt-tui: no such run here\n")
        if (refusal := self.too_many_tabs()) is not None:
            raise web.HTTPServiceUnavailable(text=refusal + "\n")
        self.public_url = f"{request.scheme}://{request.host}"
        context = await Server.handle_index.__wrapped__(self, request)  # textual-serve's page, undecorated
        context["app_websocket_url"] = context["app_websocket_url"].rsplit("/ws", 1)[0] + f"/run/{quote(name)}/ws"
        context["application"] = {"name": f"chargpt-tui · {name}"}
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def handle_index(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        if (refusal := self.too_many_tabs()) is not None:
            raise web.HTTPServiceUnavailable(text=refusal + "\n")
        # The page's URLs (the prefix /TOKEN/ included) go back to the host the page came from,
        # not to the address served: opened as localhost through an SSH tunnel, they work.
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)  # type: ignore[no-any-return]

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's, with a viewer process that ends with its tab (serve_tabs.py), a cap
        on tabs, and a bounded terminal size."""
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        if (refusal := self.too_many_tabs()) is not None:
            await websocket.close(message=refusal.encode()[:120])
            return websocket
        width, height = bounded_size(request.query.get("width"), request.query.get("height"))
        command = self.command
        if "name" in request.match_info:  # a run of the folder served
            run = self.run_named(request.match_info["name"])
            if run is None:
                await websocket.close(message=b"no such run here")
                return websocket
            command = self._command("attach", run)
        tab = TabProcess(command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                         close=websocket.close, download_manager=self.download_manager, debug=self.debug)
        try:
            await tab.start(width, height)
            await self._process_messages(websocket, tab)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the tab went away, or serve is stopping: either way the viewer ends below
        except Exception as error:  # a page that sends what textual-serve does not expect
            logging.getLogger(__name__).warning("a tab failed: %s", error)
        finally:
            await asyncio.shield(tab.stop())
            with contextlib.suppress(Exception):
                await websocket.close()
        return websocket

    async def on_startup(self, app: web.Application) -> None:
        pass  # textual-serve prints its logo and the address before binding; serve() says it after

    def initialize_logging(self) -> None:
        logging.basicConfig(level=logging.WARNING, format="chargpt-tui serve: %(message)s")

    # ---- running -----------------------------------------------------------------------------
    async def serve_until_stopped(self, ready: Callable[[str], None]) -> None:
        """Bind, call ready(address), serve until SIGINT, SIGTERM or SIGHUP; then close every
        tab's viewer (the runs go on)."""
        self.initialize_logging()
        app = await self._make_app()
        # on shutdown, open websockets (tabs) get 1 s before their handlers are cancelled, which
        # closes each tab and its viewer (textual-serve does not close them itself)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
                               keepalive_timeout=KEEPALIVE_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ServeError(f"cannot serve on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = runner.addresses[0][1]
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stopped.set)
        ready(self.address)
        try:
            await stopped.wait()
        finally:
            try:
                await asyncio.wait_for(runner.cleanup(), 10)
            finally:  # whatever did not end with its tab ends now
                for tab in list(TabProcess.live):
                    tab.kill_now()

    @property
    def address(self) -> str:
        host = socket.gethostname() if self.host in ALL_INTERFACES else url_host(self.host)
        return f"http://{host}:{self.port}/{self.token}/"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def new_token() -> str:
    return secrets.token_urlsafe(24)


def serve(run_dir: Path, host: str, port: int, read_only: bool, state: str, max_tabs: int = 8,
          runs_folder: bool = False) -> int:
    """state: the run's (or, runs_folder, how many runs the folder holds)."""
    if host.lower() == "localhost":  # one address: "localhost" binds 127.0.0.1 and ::1, on two ports if 0
        host = "127.0.0.1"
    server = DashboardServer(run_dir, host, port, new_token(), read_only, max_tabs, runs_folder)

    def ready(address: str) -> None:
        view = "a read-only view of " if read_only else ""
        what = f"the runs browser of {run_dir}" if runs_folder else str(run_dir)
        print(f"serving {view}{what} ({state}) to a browser; open:\n\n    {address}\n", flush=True)
        if is_loopback(host):
            print(f"from another machine, forward the port first, then open the address there:\n\n"
                  f"    ssh -N -L {server.port}:{url_host(host)}:{server.port} "
                  f"{getpass.getuser()}@{socket.gethostname()}\n",
                  flush=True)
        else:
            print(f"warning: serving on {host}, not on loopback: anyone who can reach this port and has the "
                  "address can watch the run" + ("" if read_only else " and steer it") + "; the token travels "
                  "unencrypted (plain http). Prefer the default and an SSH tunnel.", file=sys.stderr, flush=True)
        them = "the runs" if runs_folder else "the run"
        print(f"each tab is one viewer; closing it leaves {them} as it is. Ctrl+C stops serving, not {them}.",
              flush=True)

    asyncio.run(server.serve_until_stopped(ready))
    return 0
