"""The training process's socket, spoken to directly: what a viewer is sent, what it may ask,
and what happens to viewers that misbehave. The run trains in a thread of this process
(tests/serving.py); the viewers are raw sockets, as a hostile or broken client would be."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import one_of_each_kind, tiny_configs
from serving import RawViewer, ServedRun

from chargpt_tui.dashboard.app import ChargptApp
from chargpt_tui.wire import protocol
from chargpt_tui.wire.runtime import RunBusyError, RunLock, ServerInfo, is_running, runtime_dir
from model import events as ev
from model.data import Corpus
from model.rundir import RunDir
from model.trainer import Trainer


def wait_until(condition: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_every_event_crosses_the_wire_unchanged(corpus: Corpus, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    model_config, train_config = tiny_configs(corpus, max_iters=20, eval_interval=10, sample_interval=10)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    Trainer(corpus, model_config, train_config, run_dir=run_dir, listeners=(seen.append,)).run()
    seen += [ev.Paused(3, 1.0), ev.Resumed(3, 2.0), ev.Warning(4, 2.5, "careful"), ev.Hint(4, 2.6, "try --preset cpu"),
             ev.Failed(5, 3.0, "boom"),
             ev.CheckpointFailed(5, 3.0, "/x/ckpt.pt", "No space left on device"),
             ev.Diverged(6, 4.0, "the loss became nan", "/x/ckpt.pt", 5),
             ev.EvalDone(7, 5.0, float("nan"), float("inf"), 1.5, 2, False), ev.EvalProgress(7, 5.5, 3, 4),
             ev.ThreadsChanged(8, 6.0, 1, "1 of 2 cores busy")]
    assert {type(e) for e in seen} == set(ev.BY_KIND.values())  # every kind there is
    for event in seen:
        frame = protocol.decode(protocol.encode(protocol.event_frame(event, 123.0)))
        back = protocol.event_from_record(frame["event"])
        assert type(back) is type(event)
        assert repr(back) == repr(event)  # repr: NaN != NaN, but prints the same


async def test_the_dashboard_handles_every_kind_of_event(corpus: Corpus, tmp_path: Path) -> None:
    """A renamed or new event cannot be dropped without a sound: each kind, handed to a dashboard
    attached to a live run (one that has not started training), changes what it shows: a state,
    a line, a point, a sample, a figure."""
    from chargpt_tui.dashboard.app import RunReported
    from chargpt_tui.wire.run_link import EventReported

    model_config, train_config = tiny_configs(corpus)
    run_dir = RunDir(tmp_path / "run")
    run_dir.prepare()
    with ServedRun(Trainer(corpus, model_config, train_config, run_dir=run_dir), start=False) as run:
        app = ChargptApp(run.client())
        assert set(app.view._handlers) == set(ev.BY_KIND.values())

        def shown() -> tuple:
            return (app.state, app.status.detail, len(app.chart.raw), len(app.chart.evals), len(app.messages.lines),
                    app.samples.latest_iter, app.device_panel.tokens_per_s)

        async with app.run_test(size=(100, 30)) as pilot:
            deadline = time.monotonic() + 30
            while not app.caught_up:
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            for event in one_of_each_kind():
                before = shown()
                app.on_run_reported(RunReported(EventReported(event, time.time(), False)))
                await pilot.pause()
                assert shown() != before, type(event).__name__


def test_a_viewer_gets_the_history_then_live_events(run: ServedRun) -> None:
    wait_until(lambda: run.server.journal.iter >= 100, what="100 steps reported")
    viewer = RawViewer(run.run_dir)
    try:
        hello = viewer.frame()
        assert hello["type"] == "hello" and hello["protocol"] == protocol.PROTOCOL_VERSION
        assert hello["pid"] == os.getpid() and hello["vocab"] == "".join(run.trainer.corpus.tokenizer.chars)
        catch_up = []
        while (frame := viewer.frame())["type"] != "live":
            catch_up.append(frame)
        assert all(f["type"] == "event" and f["replay"] for f in catch_up)
        start = protocol.event_from_record(catch_up[0]["event"])
        assert isinstance(start, ev.RunStarted) and start.iter >= 100
        assert len(start.step_history) >= 100 and [e[0] for e in start.eval_history][:3] == [0, 40, 80]
        kinds = [f["event"]["event"] for f in catch_up]
        assert "eval" in kinds and "sample" in kinds and "checkpoint" in kinds
        live = viewer.until("event")
        assert not live["replay"]
        event = protocol.event_from_record(live["event"])
        assert event.iter >= start.iter
    finally:
        viewer.close()


def test_requests_are_answered_and_seen_by_every_viewer(run: ServedRun) -> None:
    one, two = RawViewer(run.run_dir), RawViewer(run.run_dir)
    try:
        one.until("live")
        two.until("live")
        one.send(protocol.encode({"op": "pause", "id": 7}))
        assert one.until("reply")["id"] == 7
        control = two.until("control")
        assert control["op"] == "pause" and control["by"] == 1
        wait_until(lambda: run.trainer.steering.paused)
        paused = two.until("event")
        while paused["event"]["event"] != "pause":
            paused = two.until("event")
        one.send(protocol.encode({"op": "snapshot", "id": 8}))
        snapshot = one.until("snapshot")
        assert snapshot["id"] == 8 and len(snapshot["payload"]) == snapshot["bytes"] > 1000
        two.send(protocol.encode({"op": "resume", "id": 9}))
        assert two.until("reply")["id"] == 9
        wait_until(lambda: not run.trainer.steering.paused)
    finally:
        one.close()
        two.close()


BAD = [
    (b"not json\n", "not a line of JSON"),
    (b"[1, 2]\n", "a JSON object"),
    (b'{"id": 3}\n', "needs an \\\"op\\\""),
    (b'{"op": "explode", "id": 4}\n', "unknown op"),
    (b'{"op": "pause", "id": "x"}\n', "id must be an integer"),
    (b'{"op": 5}\n', "needs an"),
    (b"\xff\xfe\n", "not a line of JSON"),
    (b'{"op": "' + b"a" * 10_000 + b'"}\n', "too long"),
    (b"[" * 1500 + b"\n", "nested too deeply"),  # under 4 KB: a RecursionError inside json
    (b'{"op": ' + b"[" * 2000 + b"\n", "nested too deeply"),
]


def test_malformed_unknown_and_long_messages_get_an_error_and_change_nothing(
        run: ServedRun, caplog: pytest.LogCaptureFixture) -> None:
    viewer = RawViewer(run.run_dir)
    try:
        viewer.until("live")
        for data, expected in BAD:
            viewer.send(data)
            error = viewer.until("error")
            assert expected.replace("\\", "") in error["error"], (data[:30], error)
        assert not run.trainer.steering.paused and not run.trainer.steering.stop_requested
        at = run.trainer.iter
        wait_until(lambda: run.trainer.iter > at + 10, what="training to go on")
        viewer.send(protocol.encode({"op": "evaluate", "id": 11}))  # and a good one still works
        assert viewer.until("reply")["id"] == 11
    finally:
        viewer.close()
    # no traceback in the run's log (asyncio reports a task that died of an exception there)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text


def test_a_viewer_that_keeps_sending_garbage_is_cut_off(run: ServedRun) -> None:
    viewer = RawViewer(run.run_dir)
    try:
        viewer.until("live")
        viewer.send(b"garbage\n" * 100)
        bye = viewer.until("bye")
        assert "malformed" in bye["reason"]
        wait_until(lambda: run.server.viewer_count == 0, what="the viewer to be dropped")
        assert not run.trainer.steering.paused and not run.trainer.steering.stop_requested
    finally:
        viewer.close()
    again = RawViewer(run.run_dir)  # it may attach again
    try:
        assert again.frame()["type"] == "hello"
    finally:
        again.close()


@pytest.mark.parametrize("run", [{"budget_bytes": 30_000, "socket_buffer_bytes": 4096, "stall_timeout_s": 2.0}],
                         indirect=True)
def test_a_viewer_that_stops_reading_is_cut_off_while_training_goes_on(run: ServedRun) -> None:
    stalled = RawViewer(run.run_dir, receive_buffer=4096)  # connects, then reads nothing
    watching = RawViewer(run.run_dir)  # a well-behaved viewer beside it
    try:
        watching.until("live")
        at = run.trainer.iter
        wait_until(lambda: run.server.cut_off >= 1, what="the stalled viewer to be cut off")
        # the loop never waited on it: it went on stepping the whole time, and the other viewer with it
        assert run.trainer.iter > at and not run.trainer.steering.paused
        at = run.trainer.iter
        wait_until(lambda: run.trainer.iter > at + 20, what="training after the cut")
        for viewer in list(run.server.viewers.values()):
            assert viewer.queued_bytes <= run.server.budget_bytes
        seen = watching.until("event")
        assert seen["type"] == "event"
        stalled.sock.settimeout(5)
        # what reached it before the cut, then the end of the connection: its end of file, or a
        # reset (aborted with data it had not read). A socket timeout (TimeoutError) would mean it
        # was never cut off, and fails the test.
        try:
            while stalled.file.readline():
                pass
        except ConnectionResetError:
            pass
    finally:
        stalled.close()
        watching.close()


def test_the_socket_is_private_to_the_user(run: ServedRun) -> None:
    info = ServerInfo.read(run.run_dir)
    assert info is not None and info.pid == os.getpid()
    path = Path(info.socket)
    assert len(str(path)) < 104  # the AF_UNIX limit, with room
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    folder = path.parent.stat()
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    assert path.parent == runtime_dir()


def _as_another_user(code: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to try another uid")
    return subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable,
                           "-c", code], capture_output=True, text=True, timeout=60)


CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1] if len(sys.argv) > 1 else {path!r})
except PermissionError:
    print("refused: permission"); sys.exit(0)
s.settimeout(10)
print(s.makefile("rb").readline().decode().strip())
"""


def test_another_user_cannot_reach_the_socket(run: ServedRun) -> None:
    info = ServerInfo.read(run.run_dir)
    assert info is not None
    result = _as_another_user(CONNECT.format(path=info.socket))
    assert result.stdout.strip() == "refused: permission", result.stdout + result.stderr


def test_another_user_is_refused_by_uid_even_where_the_socket_is_open(run: ServedRun) -> None:
    """Defence in depth: were the folder and socket opened up by mistake, the kernel's word
    on who is connecting (SO_PEERCRED) still keeps another user out."""
    info = ServerInfo.read(run.run_dir)
    assert info is not None
    path = Path(info.socket)
    folder_mode = stat.S_IMODE(path.parent.stat().st_mode)
    os.chmod(path.parent, 0o711)
    os.chmod(path, 0o666)
    try:
        result = _as_another_user(CONNECT.format(path=info.socket))
    finally:
        os.chmod(path, 0o600)
        os.chmod(path.parent, folder_mode)
    frame = json.loads(result.stdout.strip() or "{}")
    assert frame.get("type") == "bye" and "another user" in frame.get("reason", ""), result.stdout + result.stderr
    assert not run.trainer.steering.paused and not run.trainer.steering.stop_requested


def test_one_process_per_run_directory(run: ServedRun) -> None:
    assert is_running(run.run_dir)
    with pytest.raises(RunBusyError, match="is in use by process"):
        RunLock(run.run_dir).acquire()


def test_a_runtime_folder_open_to_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.rundir import RunDirError

    folder = tmp_path / "rt"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    monkeypatch.setenv("CHARGPT_TUI_RUNTIME_DIR", str(folder))
    with pytest.raises(RunDirError, match="not a private folder"):
        runtime_dir()
