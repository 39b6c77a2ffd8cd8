"""A run's curves for comparing runs: training loss per step (thinned, with its training time),
validation loss per evaluation and the latest sample, read from metrics.jsonl and kept up to
date by reading what was appended since (a running run's curve stays live).

A reader of the file, not a viewer of the run: the training process never knows, never waits.
Bounded as the dashboard's chart is: LossHistory keeps a whole run in at most max_points points.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

from model.history import LossHistory

from . import runs
from .runs import STEP_LINE, parse_number, read_record  # step lines read as runs.py reads them: by a regular expression

MAX_SAMPLE = 2000  # characters of the latest sample kept


class RunCurves:
    def __init__(self, path: Path, max_points: int = 4000) -> None:
        self.path = Path(path)
        self.steps = LossHistory(max_points)  # (iter, loss)
        self.times = LossHistory(max_points)  # (iter, training time in s): thinned alike, point for point
        self.evals: list[tuple[int, float, float]] = []  # (iter, training time, val loss)
        self.sample = ""
        self.sample_iter: int | None = None
        self._offset = 0
        self._size = -1
        self._lock = threading.RLock()  # a reading thread and the drawing one (or two readers)

    def update(self) -> bool:
        """Read what was appended since the last call; True if anything was. Safe from any thread."""
        with self._lock:
            return self._update()

    def _update(self) -> bool:
        metrics = self.path / "metrics.jsonl"
        try:
            size = os.stat(metrics).st_size
        except OSError:
            return False
        if size == self._size:
            return False
        if size < self._offset:  # the file was replaced: start again
            self.steps, self.times = LossHistory(self.steps.max_points), LossHistory(self.steps.max_points)
            self.evals, self.sample, self.sample_iter, self._offset = [], "", None, 0
        left, read, tail = size - self._offset, 0, b""  # (what was there at the size just seen)
        with open(metrics, "rb") as f:  # a chunk at a time: a long run's file is never in memory whole
            f.seek(self._offset)
            while left > 0 and (data := f.read(min(runs.READ_CHUNK, left))):
                left -= len(data)
                data = tail + data
                end = data.rfind(b"\n") + 1  # a line being written: read next time
                self._read(data[:end])
                read, tail = read + end, data[end:]
        self._offset += read
        self._size = size if not tail else -1
        return read > 0

    def _read(self, data: bytes) -> None:
        block: list[bytes] = []
        for line in data.split(b"\n"):
            if line.startswith(b'{"event": "step"'):
                block.append(line)
                continue
            if not line.strip():
                continue
            self._steps(block)
            block = []
            self._other(line)
        self._steps(block)

    def _steps(self, block: list[bytes]) -> None:
        if not block:
            return
        found = STEP_LINE.findall(b"\n".join(block))
        iters, times, losses = [], [], []
        for it, time_s, loss, _ in found:
            value = parse_number(loss)
            if math.isfinite(value):  # a diverged step's loss is no point on a chart
                iters.append(float(it))
                times.append(float(time_s))
                losses.append(value)
        self.steps.extend(iters, losses)
        self.times.extend(iters, times)

    def _other(self, line: bytes) -> None:
        record = read_record(line)  # (each field of its type, or None)
        kind = record.get("event") if record is not None else None
        if kind == "eval" and math.isfinite(record["val_loss"]):
            self.evals.append((record["iter"], record["time_s"], record["val_loss"]))
        elif kind == "start":  # a resumed segment: what followed its checkpoint was done again
            at = record["iter"]
            self.steps.truncate_after(at)
            self.times.truncate_after(at)
            self.evals = [e for e in self.evals if e[0] <= at]
        elif kind == "sample":
            self.sample, self.sample_iter = record["text"][:MAX_SAMPLE], record["iter"]

    # ---- what a chart draws --------------------------------------------------------------------
    def train_points(self, by_time: bool = False) -> tuple[list[float], list[float]]:
        """Smoothed training loss (an exponential moving average over the thinned points, bias
        corrected as the dashboard's is) against iteration or training time."""
        with self._lock:
            xs = self.times.losses if by_time else self.steps.iters
            return list(xs), smooth(self.steps.losses, self.steps.stride)

    def val_points(self, by_time: bool = False) -> tuple[list[float], list[float]]:
        with self._lock:
            return [float(t if by_time else it) for it, t, _ in self.evals], [v for _, _, v in self.evals]

    @property
    def last_iter(self) -> float:
        return max(self.steps.iters[-1] if len(self.steps) else 0.0, self.evals[-1][0] if self.evals else 0.0)


def smooth(values: list[float], stride: int = 1, beta: float = 0.95) -> list[float]:
    """Each point stands for `stride` steps: it weighs as much as they would have."""
    out, average, count = [], 0.0, 0
    decay = beta**stride
    for value in values:
        count += stride
        average = decay * average + (1 - decay) * value
        out.append(average / (1 - beta**count))
    return out

