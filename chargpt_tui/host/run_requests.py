"""What a viewer may ask of a run, and how each request is carried out (in the server's loop).

Pause, resume and stop are flags the training loop reads between steps. A save or an evaluation
runs in a control thread of its own (the loop takes it at its next step boundary; asked for
again before that, it runs once). A snapshot of the weights is one payload shared by every
viewer that asks (snapshots.py). Each accepted request is answered, and every viewer is told of
it in one shared frame.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chargpt_tui.wire import protocol
from model.trainer import Trainer

from .snapshots import Snapshots
from .viewer_queue import Bulk, Viewer

Send = Callable[[Viewer, dict[str, Any]], None]


class RunRequests:
    def __init__(self, trainer: Trainer, send: Send, broadcast: Callable[[dict[str, Any]], None],
                 call_in_loop: Callable[..., None], ended: Callable[[], bool]) -> None:
        self.trainer = trainer
        self._send, self._broadcast, self._call_in_loop, self._ended = send, broadcast, call_in_loop, ended
        self.controls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-controls")
        self._pending: set[str] = set()  # a save or evaluation asked for again meanwhile is one
        self.snapshots = Snapshots(trainer, self.controls, call_in_loop, self._deliver_snapshot)

    def handle(self, viewer: Viewer, op: str, request_id: int | None) -> None:
        trainer = self.trainer
        if op in ("pause", "resume", "stop") and self._ended():
            self._send(viewer, {"type": "error", "id": request_id, "error": "the run has ended"})
            return
        if op == "pause":
            trainer.steering.pause()
        elif op == "resume":
            if not trainer.steering.resume():
                self._send(viewer, {"type": "error", "id": request_id,
                                    "error": "the loss diverged: these weights cannot be trained on"})
                return
        elif op == "stop":
            trainer.steering.stop()
        elif op == "save":
            self._control(op, trainer.steering.request_save)
        elif op == "evaluate":
            self._control(op, trainer.steering.request_eval)
        elif op == "snapshot":
            if viewer.snapshot_pending:
                self._send(viewer, {"type": "error", "id": request_id, "error": "a snapshot is on its way already"})
                return
            viewer.snapshot_pending = True
            self.snapshots.ask((viewer, request_id))
            return
        self._send(viewer, {"type": "reply", "id": request_id})
        self._broadcast({"type": "control", "op": op, "by": viewer.number})

    def close(self) -> None:
        """A save or evaluation under way finishes first: no other process may write this run's
        files while this one still does."""
        self.controls.shutdown(wait=True, cancel_futures=True)

    def _control(self, op: str, work: Callable[[], object]) -> None:
        if op in self._pending:
            return
        self._pending.add(op)

        def run() -> None:
            self._call_in_loop(self._pending.discard, op)
            work()

        self.controls.submit(run)

    def _deliver_snapshot(self, waiter: tuple[Viewer, int | None], payload: memoryview | None,
                          error: str | None) -> None:
        viewer, request_id = waiter
        if payload is None:
            viewer.snapshot_pending = False
            self._send(viewer, {"type": "error", "id": request_id, "error": error or "snapshot failed"})
            return

        def sent() -> None:  # (or the viewer is gone): it may ask again, and the payload may go
            viewer.snapshot_pending = False
            self.snapshots.release()

        if viewer.closed:
            sent()
            return
        header = protocol.encode({"type": "snapshot", "id": request_id, "bytes": len(payload)})
        viewer.queue.add_bulk(Bulk([header, payload], on_done=sent))
        viewer.wake.set()
