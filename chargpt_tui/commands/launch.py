"""`chargpt-tui TEXT` on a terminal: start the training in a process of its own, then open the
dashboard on it as its first viewer.

The training process is a fresh interpreter (not a fork: threads, OpenMP and CUDA do not
survive fork), in a session of its own so that no terminal signal reaches it, with standard
input from /dev/null and its log lines in <run>/train.log. Closing the dashboard (d, a dropped
connection) leaves it training; `chargpt-tui attach` finds it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from chargpt_tui.host.run_process import LOG_NAME
from chargpt_tui.wire.run_link import AttachError, RunClient, open_link
from chargpt_tui.wire.runtime import RunBusyError, ServerInfo, is_running, runtime_dir

EXIT_INTERRUPTED = 130


def start_training_process(argv: list[str], run_dir: Path) -> subprocess.Popen[bytes]:
    """The same command, headless, in its own session, logging to <run>/train.log."""
    command = [sys.executable, "-m", "chargpt_tui", *argv, "--out-dir", str(run_dir), "--spawned"]
    log_path = run_dir / LOG_NAME
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_until_served(proc: subprocess.Popen[bytes], run_dir: Path, poll_s: float = 0.05) -> int | None:
    """Wait for the training process to serve viewers. None when it does; its exit status if it
    ended first (its last log line, which says why, is printed)."""
    while True:
        code = proc.poll()
        if code is not None:
            lines = _log_tail(run_dir / LOG_NAME)
            for line in lines:
                print(line, file=sys.stderr)
            return code
        info = ServerInfo.read(run_dir)
        if info is not None and info.pid == proc.pid:
            return None
        time.sleep(poll_s)


def _log_tail(path: Path, lines: int = 3) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    useful = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in useful if line.startswith("chargpt-tui")]
    return errors[-1:] if errors else useful[-lines:]


def launch_dashboard(argv: list[str], run_dir: Path, preset: str | None, on_hangup: str) -> int:
    if is_running(run_dir):
        raise RunBusyError(f"{run_dir} is in use by another process; watch it with: chargpt-tui attach {run_dir}")
    runtime_dir()  # the private socket folder, checked here so that a problem is one line now
    proc = start_training_process(argv, run_dir)
    try:
        code = wait_until_served(proc, run_dir)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        print("chargpt-tui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if code is not None:
        return code
    from chargpt_tui.dashboard.session import run_app

    client = RunClient(run_dir)
    try:
        client.connect()
    except AttachError:  # a short run may have ended already: show it as it was left
        code = run_app(open_link(run_dir), preset, on_hangup)
        proc.wait(timeout=30)
        return code or (proc.returncode or 0)
    code = run_app(client, preset, on_hangup)
    if client.ended:  # the run ended while watched: let its process finish leaving
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # another viewer is still attached; it stays for them
            pass
    return code
