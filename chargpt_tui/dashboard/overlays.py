"""The dashboard's c: other runs of the same text overlaid on the loss chart. They are picked
from the runs beside this one (screens/overlay_picker.py) and read from their metrics.jsonl, in
a thread, again every few seconds (only what was appended): the other runs never know."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from chargpt_tui.wire.run_curves import RunCurves
from chargpt_tui.wire.run_table import RunRow, read_rows

from .screens.overlay_picker import OverlayPicker
from .widgets.loss_chart import OVERLAY_COLOURS, LossChart, Overlay

REREAD_S = 5.0


class Overlays:
    def __init__(self, app: Any, chart: LossChart) -> None:
        self.app = app
        self.chart = chart
        self.curves: dict[str, RunCurves] = {}  # path -> its curves, in the order picked
        self.names: dict[str, str] = {}
        self._lock = threading.Lock()  # the reading thread and a new pick
        self._timer: Any = None

    def pick(self, run_dir: Path | None) -> None:
        if run_dir is None:
            self.app.notify("this view has no run directory to look beside", severity="warning")
            return
        self.app.run_worker(lambda: self._candidates(run_dir), thread=True, group="overlays")

    def _candidates(self, run_dir: Path) -> None:
        run_dir = run_dir.resolve()  # (attached as `.` from inside it, its parent is `..`)
        rows = read_rows(run_dir.parent)
        own = next((r for r in rows if Path(r.path).resolve() == run_dir), None)
        same = [r for r in rows if r is not own and (own is None or own.same_text(r))]
        self.app.call_from_thread(self._show_picker, same)

    def _show_picker(self, rows: list[RunRow]) -> None:
        names = {r.path: r.name for r in rows}
        self.app.push_screen(OverlayPicker(rows, list(self.curves)), lambda picked: self._picked(picked, names))

    def _picked(self, picked: list[str] | None, names: dict[str, str]) -> None:
        if picked is None:
            return
        with self._lock:
            self.curves = {p: self.curves.get(p) or RunCurves(Path(p)) for p in picked}
            self.names = {p: names.get(p, Path(p).name) for p in picked}
        if self._timer is None and picked:
            self._timer = self.app.set_interval(REREAD_S, self.reread)
        self.reread()

    def reread(self) -> None:
        self.app.run_worker(self._read, thread=True, group="overlays-read", exclusive=True)

    def _read(self) -> None:
        with self._lock:
            curves, names = dict(self.curves), dict(self.names)
        grew = [c.update() for c in curves.values()]
        if any(grew) or len(curves) != len(self.chart.overlays):
            overlays = [Overlay(names[p], OVERLAY_COLOURS[n % len(OVERLAY_COLOURS)], *c.train_points(),
                                *c.val_points())
                        for n, (p, c) in enumerate(curves.items())]
            self.app.call_from_thread(self.chart.set_overlays, overlays)
