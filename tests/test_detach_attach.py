"""Runs that outlive their terminal, for real: the `chargpt-tui` script on pseudo-terminals,
training processes of its own, detach, attach, hangups, kill -9, and `chargpt-tui runs`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import (
    COMMAND,
    ENDLESS,
    TINY_FLAGS,
    last_step,
    make_text,
    one_clear_line,
    run_script,
    wait_for_steps,
    wait_until,
)
from terminal import TerminalProcess, assert_terminal_restored

from chargpt_tui.wire.runs import load_journal_cache
from chargpt_tui.wire.runtime import ServerInfo, is_running
from model import events as ev
from model.checkpoint import load_checkpoint
from model.rundir import read_metrics


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attach")
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    return root


def headless(workdir: Path, out: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, "tiny.txt", *ENDLESS, "--out-dir", str(out), "--headless", *flags], cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def runs_json(workdir: Path, *args: str) -> dict[str, dict[str, object]]:
    result = run_script(["runs", *args, "--json"], workdir)
    assert result.returncode == 0, result.stderr
    return {(r := json.loads(line))["name"]: r for line in result.stdout.splitlines()}


def stop_training_process(run_dir: Path) -> None:
    """SIGTERM to the process that trains run_dir (not a child of the test), then wait for it."""
    info = ServerInfo.read(run_dir)
    assert info is not None
    os.kill(info.pid, signal.SIGTERM)
    wait_until(lambda: not is_running(run_dir), 60, "the training process to end")


def test_d_detaches_training_goes_on_and_attach_steers_it(workdir: Path) -> None:
    out = workdir / "detached"
    with TerminalProcess(["tiny.txt", *ENDLESS, "--out-dir", str(out)], workdir) as term:
        wait_for_steps(out / "metrics.jsonl", 30, term.proc)
        term.wait_for("Detach")
        term.type("d")
        assert term.wait(timeout=30) == 0
        assert_terminal_restored(term)
        assert f"Come back with: chargpt-tui attach {out}" in term.text()
    # the shell has its prompt back; the run trains on, in a process of its own
    assert is_running(out)
    reached = last_step(out / "metrics.jsonl")
    wait_for_steps(out / "metrics.jsonl", reached + 50)
    assert (out / "train.log").read_text().startswith("training on tiny.txt")
    assert runs_json(workdir, str(workdir))["detached"]["state"] == "running"
    with TerminalProcess(["attach", str(out)], workdir, size=(100, 30)) as viewer:
        viewer.wait_for("TRAINING")
        viewer.type("p")
        viewer.wait_for("PAUSED")
        wait_until(lambda: any(r["event"] == "pause" for r in read_metrics(out / "metrics.jsonl")), 30, "a pause")
        viewer.type("p")
        viewer.wait_for("Pause ")  # the footer offers Pause again: resumed
        viewer.type("q")
        viewer.wait_for("The run is training")
        viewer.type("q")  # stop it, with a checkpoint
        assert viewer.wait(timeout=60) == 0
        assert "stopped at step" in viewer.text()
        assert_terminal_restored(viewer)
    wait_until(lambda: not is_running(out), 30, "the training process to leave")
    saved = load_checkpoint(out / "ckpt.pt")["iter"]
    assert saved == last_step(out / "metrics.jsonl")
    summary = runs_json(workdir, str(workdir))["detached"]
    assert summary["state"] == "stopped" and summary["iter"] == saved and summary["pid"] is None
    assert not (out / "server.json").exists()


def test_a_hangup_leaves_the_run_training(workdir: Path) -> None:
    out = workdir / "hangup"
    with TerminalProcess(["tiny.txt", *ENDLESS, "--out-dir", str(out)], workdir) as term:
        wait_for_steps(out / "metrics.jsonl", 30, term.proc)
        term.wait_for("Detach")
        term.hangup()  # the terminal goes away: the kernel sends the SIGHUP
        assert term.wait(timeout=30) == 129
    reached = last_step(out / "metrics.jsonl")
    wait_for_steps(out / "metrics.jsonl", reached + 50)  # still training, with no terminal at all
    stop_training_process(out)
    assert load_checkpoint(out / "ckpt.pt")["iter"] == last_step(out / "metrics.jsonl")
    assert "stopped by SIGTERM" in (out / "train.log").read_text()


def test_a_headless_run_ignores_a_hangup_and_can_be_attached_to(workdir: Path) -> None:
    out = workdir / "headless"
    proc = headless(workdir, out)
    try:
        wait_for_steps(out / "metrics.jsonl", 30, proc)
        proc.send_signal(signal.SIGHUP)  # nohup's job, done by the run itself
        wait_for_steps(out / "metrics.jsonl", last_step(out / "metrics.jsonl") + 30, proc)
        with TerminalProcess(["attach"], workdir / "..", size=(80, 24)) as nothing:  # no runs/ there
            assert nothing.wait(timeout=30) == 2
            assert "no run is training under runs/" in nothing.text()
        with TerminalProcess(["attach", str(out)], workdir) as viewer:
            viewer.wait_for("TRAINING")
            viewer.wait_for("attached at step")
            viewer.type("\x11")  # ctrl+q: stop it and quit, no question
            assert viewer.wait(timeout=60) == 0
            assert_terminal_restored(viewer)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert load_checkpoint(out / "ckpt.pt")["iter"] == last_step(out / "metrics.jsonl")
    # as it ended, the training process left what a later viewer is sent, read once
    cached = load_journal_cache(out)
    assert cached is not None and isinstance(cached[0][0], ev.RunStarted) and cached[0][0].iter == last_step(
        out / "metrics.jsonl")
    with TerminalProcess(["attach", str(out)], workdir) as viewer:  # the finished run, from it
        viewer.wait_for("not running")
        viewer.type("q")
        assert viewer.wait(timeout=30) == 0


def test_kill_9_leaves_a_stale_run_that_reads_back_and_resumes(workdir: Path) -> None:
    out = workdir / "killed"
    proc = headless(workdir, out, "--eval-interval", "25")
    try:
        wait_for_steps(out / "metrics.jsonl", 60, proc)
        # one training process per run directory: a second is refused with one line
        second = run_script(["tiny.txt", *TINY_FLAGS, "--out-dir", str(out), "--headless"], workdir)
        assert second.returncode == 2
        one_clear_line(second.stderr, f"{out} is in use by process {proc.pid}", "chargpt-tui attach")
        info = ServerInfo.read(out)
        assert info is not None and info.pid == proc.pid
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # what the dead process left (server.json, its socket) is stale: the lock says so
    assert (out / "server.json").exists() and Path(info.socket).exists()
    assert not is_running(out)
    assert runs_json(workdir, str(workdir))["killed"]["state"] == "crashed"
    with TerminalProcess(["attach", str(out)], workdir, size=(100, 30)) as viewer:
        viewer.wait_for("not running (crashed)")
        viewer.type("p")  # nothing to pause: it never trains from here
        viewer.type("q")  # and no question: nothing trains
        assert viewer.wait(timeout=30) == 0
    assert not is_running(out)
    kept = load_checkpoint(out / "ckpt.pt")["iter"]
    resumed = run_script(["--resume", str(out / "ckpt.pt"), "--max-iters", str(kept + 20), "--headless"], workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {kept}" in resumed.stdout
    assert not Path(info.socket).exists()  # the stale socket went with the new lock holder
    assert runs_json(workdir, str(workdir))["killed"]["state"] == "finished"


def test_attach_chooses_among_several_running_runs(workdir: Path) -> None:
    root = workdir / "several"
    (root / "runs").mkdir(parents=True)
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    procs = [headless(root, root / "runs" / name) for name in ("a", "b")]
    try:
        for name, proc in zip("ab", procs):
            wait_for_steps(root / "runs" / name / "metrics.jsonl", 5, proc)
        listed = run_script(["runs"], root)
        assert listed.returncode == 0
        rows = listed.stdout.splitlines()
        assert rows[0].split()[:2] == ["RUN", "STATE"]
        assert [r.split()[:3] for r in rows[1:]] == [["a", "running", "(pid"], ["b", "running", "(pid"]]
        piped = run_script(["attach"], root)  # no terminal to ask on: name them
        assert piped.returncode == 2
        one_clear_line(piped.stderr, "2 runs are training", "runs/a", "runs/b")
        with TerminalProcess(["attach"], root) as viewer:
            viewer.wait_for("attach to which run?")
            viewer.type("2\r")
            viewer.wait_for("TRAINING")
            viewer.wait_for("runs/b")  # "attached at step N in runs/b"
            viewer.type("d")
            assert viewer.wait(timeout=30) == 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_attach_refuses_what_it_cannot_attach_to(workdir: Path) -> None:
    missing = run_script(["attach", "no-such-run"], workdir)
    assert missing.returncode == 2
    one_clear_line(missing.stderr, "no-such-run", "no such run directory")
    not_a_run = run_script(["attach", str(workdir)], workdir)
    assert not_a_run.returncode == 2
    one_clear_line(not_a_run.stderr, "not a run directory")
    no_dir = run_script(["runs", "no-such-folder"], workdir)
    assert no_dir.returncode == 2
    one_clear_line(no_dir.stderr, "no-such-folder")


def test_bad_input_is_refused_before_a_training_process_starts(workdir: Path) -> None:
    with TerminalProcess(["missing.txt", *TINY_FLAGS], workdir) as term:
        assert term.wait(timeout=60) == 2
        assert "missing.txt: no such file" in term.text() and "Traceback" not in term.text()
    assert not (workdir / "runs").exists()  # no run directory, no process
