"""What the training process keeps for its viewers, and for how long: snapshot payloads, step
batches waiting for a viewer that is behind, connections that are let go."""

from __future__ import annotations

import gc
import select
import socket
import threading
import time
from typing import Any

import pytest
from helpers import wait_until
from serving import RawViewer, ServedRun

from chargpt_tui.host import snapshots as snapshots_module
from chargpt_tui.host.snapshots import Snapshots
from chargpt_tui.host.viewer_queue import ViewerQueue
from chargpt_tui.wire import protocol
from chargpt_tui.wire.runtime import ServerInfo
from model import events as ev


def payloads_alive(size: int) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is memoryview and o.nbytes == size)


def test_a_payload_is_let_go_once_every_viewer_has_been_sent_it(run: ServedRun) -> None:
    """Viewers that read their snapshot and stay attached kept it alive (the writer's locals), one
    model copy each."""
    viewers = [RawViewer(run.run_dir) for _ in range(3)]
    try:
        sizes = []
        for i, viewer in enumerate(viewers):
            viewer.until("live")
            viewer.send(protocol.encode({"op": "snapshot", "id": i}))
            frame = viewer.until("snapshot")
            assert len(frame["payload"]) == frame["bytes"]
            sizes.append(frame["bytes"])
        wait_until(lambda: run.server.requests.snapshots.payload is None, what="the payload let go")
        assert all(payloads_alive(size) == 0 for size in set(sizes))
    finally:
        for viewer in viewers:
            viewer.close()


@pytest.mark.parametrize("run", [{"socket_buffer_bytes": 4096}], indirect=True)  # (what waits, waits in asyncio)
def test_a_viewer_let_go_with_data_it_never_reads_is_closed_soon(run: ServedRun) -> None:
    """It asks for a snapshot, says it is done (shutdown for writing), reads nothing: its connection
    waited for it forever, untracked (110 KB and a descriptor each, 10 a second)."""
    info = ServerInfo.read(run.run_dir)
    assert info is not None
    socks = []
    try:
        for i in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(info.socket)
            s.sendall(protocol.encode({"op": "snapshot", "id": i}))
            socks.append(s)
        time.sleep(1.0)
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLRDHUP | select.POLLHUP)
        closed: set[int] = set()
        deadline = time.monotonic() + 10
        while len(closed) < len(socks) and time.monotonic() < deadline:
            closed |= {fd for fd, events in poller.poll(200) if events & (select.POLLRDHUP | select.POLLHUP)}
        assert len(closed) == len(socks)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("run", [{"max_viewers": 2}], indirect=True)
def test_connections_arriving_together_do_not_pass_the_cap(run: ServedRun) -> None:
    loop = run.server._loop
    assert loop is not None
    loop.call_soon_threadsafe(time.sleep, 0.5)  # the server's loop busy while they arrive
    viewers = [RawViewer(run.run_dir) for _ in range(8)]
    try:
        first = [v.frame()["type"] for v in viewers]
        assert first.count("hello") == 2 and first.count("bye") == 6
    finally:
        for viewer in viewers:
            viewer.close()


def test_steps_waiting_for_a_viewer_that_is_behind_are_merged_and_counted_as_they_cost() -> None:
    queue = ViewerQueue(budget_bytes=1 << 30)
    for b in range(1000):
        iters = tuple(range(100 * b + 1, 100 * b + 101))
        batch = ev.StepsDone(iters[-1], 1.0, iters, (1.0,) * 100, 1e-3, 1.0, 1.0)
        assert queue.add_steps(batch, protocol.encode(protocol.event_frame(batch, 0)))
    assert len(queue.items) == 1 and queue.live_bytes >= 72 * 100_000  # ~72 bytes a step as Python objects
    sent = protocol.decode(queue.pop(0.0))  # type: ignore[arg-type]
    assert sent["event"]["iters"] == list(range(1, 100_001)) and queue.live_bytes == 0


def test_a_stale_payload_is_not_handed_out_and_a_new_one_is_taken_once_it_is_let_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two viewers whose transfers overlapped kept one payload alive for good: everybody got the
    weights of the first snapshot."""
    taken: list[Any] = []
    delivered: list[tuple[Any, Any]] = []

    class Now:
        t = 100.0

    monkeypatch.setattr(snapshots_module.time, "monotonic", lambda: Now.t)

    class Inline:  # the control thread, run at once
        def submit(self, work: Any) -> None:
            work()

    class Steering:
        def snapshot(self, encode: Any) -> Any:
            class Done:
                def result(self, timeout: float) -> memoryview:
                    taken.append(1)
                    return memoryview(bytes([len(taken)]) * 10)
            return Done()

    class Trainer:
        steering = Steering()

    snaps = Snapshots(Trainer(), Inline(), lambda f, *a: f(*a), lambda w, p, e: delivered.append((w, p)))  # type: ignore[arg-type]
    snaps.ask("a")
    Now.t += 1
    snaps.ask("b")  # recent: the same payload
    assert len(taken) == 1 and delivered[1][1] is delivered[0][1]
    Now.t += snapshots_module.SHARE_S + 1
    snaps.ask("c")  # stale, and still held: c waits
    assert len(taken) == 1 and len(delivered) == 2
    snaps.release()
    snaps.release()  # a and b are done: a new one, for c
    assert len(taken) == 2 and delivered[2][0] == "c" and delivered[2][1][0] == 2


def test_a_reconnect_gives_up_when_the_viewer_leaves(tmp_path: Any) -> None:
    """q during "attaching again in 30 s": the wait ends at once (a thread worker held the
    terminal for as long as it slept)."""
    from chargpt_tui.wire.run_link import RunClient
    from chargpt_tui.wire.runtime import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = RunLock(run_dir)
    lock.acquire()  # running, as far as the viewer can tell, but serving nobody
    try:
        client = RunClient(run_dir)
        client._notify = lambda notice: None
        done = threading.Event()
        threading.Thread(target=lambda: (client.reconnect(first_delay_s=30.0), done.set()), daemon=True).start()
        time.sleep(0.2)
        started = time.monotonic()
        client.close()
        assert done.wait(5) and time.monotonic() - started < 2
    finally:
        lock.release()
