"""The run directory: config.json, metrics.jsonl, ckpt.pt (latest) and best.pt (lowest val loss)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .events import EvalProgress, EvalStarted, Event, StepsDone


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive. Someone else's, or one we cannot tell about,
    counts as alive: what it left (a temporary file, a socket) is not ours to remove."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class RunDirError(ValueError):
    """The run directory cannot be used. The message is one line meant for the user."""


class RunDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def ckpt_path(self) -> Path:
        return self.path / "ckpt.pt"

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    def checkpoints(self) -> list[str]:
        """The checkpoints the folder holds (ckpt.pt, best.pt): a run's, if this one did not write them."""
        return [p.name for p in (self.ckpt_path, self.best_path) if p.exists()]

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @classmethod
    def default_path(cls, text_name: str, root: str | os.PathLike[str] = "runs") -> Path:
        """runs/<text name>-<YYYYmmdd-HHMMSS>, with a counter if that exists already."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text_name).stem).strip("-") or "run"
        base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    def prepare(self) -> None:
        """Create the folder and prove it can be written, before any training starts."""
        try:
            if self.path.exists() and not self.path.is_dir():
                raise RunDirError(f"--out-dir {self.path} exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except RunDirError:
            raise
        except OSError as exc:
            raise RunDirError(f"cannot write to --out-dir {self.path} ({exc.strerror or exc})") from None

    def write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_name(".config.json.tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.config_path)


class MetricsLog:
    """A listener that appends every event to metrics.jsonl, one JSON object a line.

    Step batches become one line per step. Lines are flushed as they are written, so a reader
    (or a crash) sees whole lines, except perhaps a torn last one, which read_metrics skips.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.error: str | None = None
        try:
            if not _ends_a_line(self.path):  # a torn last line (a kill mid-write): end it first
                self._file.write("\n")
                self._file.flush()
        except OSError:  # (a full disk: the first record's write says so, as any other)
            pass

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        if isinstance(event, (EvalStarted, EvalProgress)):  # progress for screens, not history
            return
        if isinstance(event, StepsDone):
            lines = [
                {"event": "step", "iter": it, "time_s": round(event.time_s, 3), "loss": loss, "lr": event.lr}
                for it, loss in zip(event.iters, event.losses)
            ]
        else:
            record = event.to_record()
            if record["event"] == "start":  # configs live in config.json; the history in the checkpoint
                for key in ("model_config", "train_config", "step_history", "eval_history"):
                    record.pop(key)
            record["time_s"] = round(record["time_s"], 3)
            lines = [record]
        try:
            self._file.write("".join(json.dumps(_finite(r)) + "\n" for r in lines))
            self._file.flush()
        except OSError as exc:
            # A full disk must not stop training: note the error once and stop logging.
            self.error = f"metrics.jsonl: {exc.strerror or exc}; no further metrics are written"
            self.close()
            raise RuntimeError(self.error) from None

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN or Infinity; write null so that every line stays standard JSON.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def _ends_a_line(path: Path) -> bool:
    """Whether the file is empty or ends with a newline."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_metrics(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a metrics.jsonl, skipping a torn or otherwise unreadable line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
