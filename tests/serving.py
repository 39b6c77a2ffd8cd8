"""A run trained in a thread of the test's process and served on a real Unix socket, as the
training process serves it: the dashboard and the protocol tests attach to it with RunClient."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from chargpt_tui.host.run_process import _ending, run_config
from chargpt_tui.host.run_server import RunServer
from chargpt_tui.wire import protocol
from chargpt_tui.wire.run_link import RunClient
from chargpt_tui.wire.runtime import RunLock, ServerInfo
from model.rundir import MetricsLog
from model.trainer import RunResult, Trainer


class ServedRun:
    def __init__(self, trainer: Trainer, start: bool = True, **server_options: Any) -> None:
        assert trainer.run_dir is not None
        self.trainer = trainer
        self.run_dir = trainer.run_dir.path
        self.lock = RunLock(self.run_dir)
        self.lock.acquire()
        trainer.run_dir.write_config(run_config(trainer, server_options.get("preset"), None, ["test"]))
        self.metrics = MetricsLog(trainer.run_dir.metrics_path)  # as the training process writes it
        trainer.add_listener(self.metrics)
        self.server = RunServer(trainer, self.run_dir, self.lock, **server_options)
        trainer.add_listener(self.server)
        self.server.start()
        self.result: RunResult | None = None
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._train, daemon=True)
        if start:
            self.thread.start()

    def start(self) -> None:
        self.thread.start()

    def _train(self) -> None:
        self.result = self.trainer.run()
        code, summary, warning = _ending(self.trainer, self.result, [])
        self.exit_code = code
        self.server.run_ended(self.result.status, self.result.iter, code, summary, warning)

    def client(self) -> RunClient:
        client = RunClient(self.run_dir)
        client.connect()
        return client

    def close(self) -> None:
        self.trainer.steering.stop()
        if self.thread.is_alive():
            self.thread.join(timeout=60)
        self.server.close()
        self.metrics.close()
        self.lock.release()

    def __enter__(self) -> ServedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawViewer:
    """A viewer that speaks the protocol by hand, frame by frame."""

    def __init__(self, run_dir: Path, receive_buffer: int | None = None) -> None:
        info = ServerInfo.read(run_dir)
        assert info is not None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(info.socket)
        self.sock.settimeout(30)
        self.file = self.sock.makefile("rb")

    def frame(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "the connection closed"
        frame = protocol.decode(line)
        if "bytes" in frame:
            frame["payload"] = self.file.read(frame["bytes"])
        return frame

    def until(self, kind: str, limit: int = 10_000) -> dict[str, Any]:
        for _ in range(limit):
            frame = self.frame()
            if frame["type"] == kind:
                return frame
        raise AssertionError(f"no {kind} frame")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()
