"""Where the model runs and how fast: device, dtype, threads, memory, tokens/s, MFU, lr, and the
training process's CPU use, memory (and on CUDA the GPU's use and memory) over time, as small
charts of the samples the process takes (host/system_figures.py)."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widget import Widget

from chargpt_tui.format import short_device_name, si

from .rows import label_rows


class DevicePanel(Widget):
    """Repaints at most once a second, and only when its text changed: a viewer's every
    millisecond of CPU is one taken from training."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.device_name = "…"
        self.dtype = ""
        self.dtype_note = ""  # why that dtype, in a few words ("auto (no bf16)")
        self.threads = 0
        self.threads_reason = ""  # why that many ("1 of 2 cores busy", "--threads")
        self.preset = ""  # the run's preset and why ("cpu · the CPU default")
        self.torch_version = ""
        self.memory = ""
        self.tokens_per_s = 0.0
        self.ms_per_step = 0.0
        self.mfu: float | None = None
        self.lr = 0.0
        self.optimizer = ""  # "adamw", or "muon" (then muon_lr: its rate at the schedule's peak)
        self.muon_lr: float | None = None
        self.base_lr: float | None = None  # --learning-rate: the schedule's peak
        self.samples: deque[dict[str, float]] = deque(maxlen=600)  # the process's figures over time
        self._stale = False

    def on_mount(self) -> None:
        self.set_interval(1.0, self._refresh_if_stale)

    def _refresh_if_stale(self) -> None:
        if self._stale:
            self._stale = False
            self.refresh()

    def set_device(self, device_name: str, dtype: str, threads: int, torch_version: str, dtype_note: str = "",
                   threads_reason: str = "") -> None:
        """device_name: the full name; shown without the vendor noise, to fit."""
        self.device_name, self.dtype, self.dtype_note = short_device_name(device_name), dtype, dtype_note
        self.threads, self.threads_reason, self.torch_version = threads, threads_reason, torch_version
        self.border_title = Text(f"device · torch {torch_version}") if torch_version else "device"  # (read from disk)
        self.refresh()

    def set_preset(self, preset: str, note: str) -> None:
        self.preset = " · ".join(p for p in (preset, note) if p)
        self.refresh()

    def set_optimizer(self, optimizer: str, muon_lr: float | None, base_lr: float | None) -> None:
        self.optimizer, self.muon_lr, self.base_lr = optimizer, muon_lr, base_lr
        self.refresh()

    def set_threads(self, threads: int, reason: str) -> None:
        self.threads, self.threads_reason = threads, reason
        self.refresh()

    def set_throughput(self, tokens_per_s: float, ms_per_step: float, lr: float, mfu: float | None) -> None:
        shown = (si(self.tokens_per_s), round(self.ms_per_step), f"{self.lr:.1e}", self._mfu_text())
        self.tokens_per_s, self.ms_per_step, self.lr, self.mfu = tokens_per_s, ms_per_step, lr, mfu
        if shown != (si(tokens_per_s), round(ms_per_step), f"{lr:.1e}", self._mfu_text()):
            self._stale = True  # only when what is on screen changes

    def _lr_text(self) -> str:
        """The learning rate now; with Muon, Muon's too (in proportion: the same schedule)."""
        if self.optimizer == "muon" and self.muon_lr and self.base_lr:
            return f"muon {self.lr * self.muon_lr / self.base_lr:.1e} · adamw {self.lr:.1e}"
        return f"lr {self.lr:.1e}"

    def _mfu_text(self) -> str:
        return f"{100 * self.mfu:.1f}%" if self.mfu is not None else "–"

    def set_memory(self, memory: str) -> None:
        if memory != self.memory:
            self.memory = memory
            self._stale = True

    def add_samples(self, samples: tuple[dict[str, float], ...]) -> None:
        if samples:
            self.samples.extend(samples)
            self._stale = True

    def _chart(self, key: str, floor: float = 0.0) -> str:
        """A chart of the recent past of one figure (each cell the mean of as many samples as fit)."""
        values = [s[key] for s in self.samples if key in s]
        return spark(values, max(4, self.size.width - 2 - 8 - 10), floor) + " " if values else ""

    def _latest(self, key: str) -> float | None:
        return self.samples[-1].get(key) if self.samples else None

    def render(self) -> Text:
        speed = f"{si(self.tokens_per_s)} tok/s · {self.ms_per_step:.0f} ms/step" if self.ms_per_step else ""
        mfu = self._mfu_text()
        cpu, gpu = self._latest("cpu"), self._latest("gpu_util")
        charts: list[tuple[str, str | Text]] = [
            ("CPU", Text.assemble((self._chart("cpu", 100.0), "cyan"), f"{cpu:.0f}%") if cpu is not None else ""),
            # on CUDA the figure beside it is the GPU's memory: so is the chart
            ("memory", Text.assemble((self._chart("gpu_mem" if self._latest("gpu_mem") is not None else "rss"),
                                      "cyan"), self.memory)),
        ]
        if gpu is not None:  # CUDA, where the driver tells
            charts.append(("GPU", Text.assemble((self._chart("gpu_util", 100.0), "cyan"), f"{gpu:.0f}%")))
        return label_rows([
            ("device", self.device_name),
            ("preset", self.preset),
            ("dtype", " · ".join(p for p in (self.dtype, self.dtype_note) if p)),
            ("threads", " · ".join(p for p in (str(self.threads) if self.threads else "", self.threads_reason) if p)),
            *charts,
            ("speed", speed),
            ("MFU", f"{mfu} · {self._lr_text()}" if self.lr else mfu),
        ], label_width=7)


SPARKS = "▁▂▃▄▅▆▇█"


def spark(values: list[float], width: int, floor: float = 0.0) -> str:
    """The values as at most `width` cells, each the mean of its share of them, scaled from 0 to
    the largest (or floor, if larger: CPU use is drawn against 100% of a core at least)."""
    per = max(1, -(-len(values) // width))
    cells = [sum(values[i:i + per]) / len(values[i:i + per]) for i in range(0, len(values), per)]
    top = max(max(cells), floor) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] for v in cells)
