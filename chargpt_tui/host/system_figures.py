"""The training process's figures over time: its CPU use, its resident memory, and on CUDA the
GPU's utilisation and memory, sampled by the process itself every couple of seconds (whether or
not anyone watches, so that a viewer attaching later sees the run's recent past) and kept in a
bounded ring: the latest MAX_SAMPLES, twenty minutes at the default interval.

A sample: {"t": unix time, "cpu": % of one core (200 on two busy cores), "rss": bytes,
           "gpu_util": % (CUDA, where the driver says), "gpu_mem": bytes allocated (CUDA)}.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import torch

from model.device import current_rss, memory_usage

MAX_SAMPLES = 600


class SystemFigures:
    def __init__(self, device: torch.device, max_samples: int = MAX_SAMPLES) -> None:
        self.device = device
        self.samples: deque[dict[str, float]] = deque(maxlen=max_samples)
        self.memory: dict[str, float] = {}  # the latest of model/device.py's memory_usage
        self._last = self._cpu_now()

    @staticmethod
    def _cpu_now() -> tuple[float, float]:
        t = os.times()
        return time.monotonic(), t.user + t.system  # every thread of this process

    def sample(self) -> dict[str, float]:
        self.memory = memory_usage(self.device)
        now = self._cpu_now()
        wall, cpu = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        figures: dict[str, float] = {"t": round(time.time(), 2), "cpu": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
                                     "rss": float(current_rss())}
        figures.update(self._gpu())
        self.samples.append(figures)
        return figures

    def _gpu(self) -> dict[str, float]:
        if self.device.type != "cuda":
            return {}
        found: dict[str, float] = {}
        try:
            found["gpu_mem"] = float(torch.cuda.memory_allocated(self.device))
        except Exception:  # noqa: BLE001 - a figure missed, not the run
            pass
        try:
            found["gpu_util"] = float(torch.cuda.utilization(self.device))  # needs the NVIDIA driver's NVML
        except Exception:  # noqa: BLE001 - no NVML here: memory alone
            pass
        return found

    def frame(self, history: bool) -> dict[str, Any]:
        """The protocol's memory frame: the latest memory figures, and the latest sample (live)
        or every sample kept (for a viewer attaching)."""
        samples = list(self.samples) if history else list(self.samples)[-1:]
        return {"type": "memory", "memory": self.memory, "samples": samples}
