"""Signals, for real: SIGTERM, SIGHUP (a dropped SSH connection) and SIGINT sent to the real
`chargpt-tui`, on a pseudo-terminal (the dashboard) and headless. Each must save a checkpoint of
the latest step, exit promptly with a clear message, and leave the terminal usable."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import COMMAND, ENDLESS, last_step, make_text, wait_for_steps
from terminal import TerminalProcess, assert_terminal_restored

from model.checkpoint import load_checkpoint

# ENDLESS evaluates (and saves) at step 0 only, so that the checkpoint found afterwards can only
# be the one the signal saved. SIGHUP stops a run only with --on-hangup stop (today's default is
# to leave it training: tests/test_detach_attach.py).
SIGNALS = [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)]


def hangup_flags(name: str) -> list[str]:
    return ["--on-hangup", "stop"] if name == "SIGHUP" else []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signals")
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    return root


@pytest.mark.parametrize("name, code", SIGNALS)
def test_dashboard_saves_and_exits_on_signal(workdir: Path, name: str, code: int) -> None:
    out = workdir / f"tui-{name}"
    with TerminalProcess(["tiny.txt", *ENDLESS, "--out-dir", str(out), *hangup_flags(name)], workdir) as term:
        wait_for_steps(out / "metrics.jsonl", 30, term.proc)
        term.wait_for("Detach")  # the dashboard is up (before it, the signal would end the start-up)
        if name == "SIGHUP":
            term.hangup()  # the terminal goes away: the kernel sends the SIGHUP
        else:
            term.proc.send_signal(getattr(signal, name))
        sent = time.monotonic()
        assert term.wait(timeout=60) == code
        took = time.monotonic() - sent
        reached = last_step(out / "metrics.jsonl")
        saved = load_checkpoint(out / "ckpt.pt")["iter"]
        assert saved >= 30 and saved >= reached, (saved, reached)
        assert took < 30  # a hang guard, not a speed test
        assert not list(out.glob(".*.tmp"))
        if name != "SIGHUP":  # after SIGHUP there is no terminal left to restore or write to
            assert_terminal_restored(term)
            assert f"stopped by {name} at step {saved}" in term.text()
            assert "Traceback" not in term.text()


@pytest.mark.parametrize("name, code", SIGNALS)
def test_headless_saves_and_exits_on_signal(workdir: Path, name: str, code: int) -> None:
    out = workdir / f"headless-{name}"
    proc = subprocess.Popen(
        [*COMMAND, "tiny.txt", *ENDLESS, "--out-dir", str(out), "--headless", *hangup_flags(name)],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_steps(out / "metrics.jsonl", 30, proc)
        proc.send_signal(getattr(signal, name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    saved = load_checkpoint(out / "ckpt.pt")["iter"]
    assert saved >= 30 and saved >= last_step(out / "metrics.jsonl")
    assert f"stopped by {name} at step {saved}" in err and "Traceback" not in err


def test_ctrl_c_on_the_dashboard_saves_and_exits_130(workdir: Path) -> None:
    out = workdir / "tui-ctrl-c"
    with TerminalProcess(["tiny.txt", *ENDLESS, "--out-dir", str(out)], workdir) as term:
        wait_for_steps(out / "metrics.jsonl", 30, term.proc)
        term.wait_for("Detach")
        term.type("\x03")  # raw mode: Ctrl-C arrives as a key, not as SIGINT
        assert term.wait(timeout=60) == 130
        assert load_checkpoint(out / "ckpt.pt")["iter"] >= last_step(out / "metrics.jsonl")
        assert_terminal_restored(term)
        assert "stopped by SIGINT" in term.text()
