"""A Trainer's checkpoints: ckpt.pt (and best.pt) written without ever ending the run (a full disk
or a vanished folder is reported, and training goes on), and which one holds the latest state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import events as ev
from .checkpoint import BestWritten, save_checkpoint
from .reporting import Reporter
from .rundir import RunDir


class Checkpoints:
    def __init__(self, run_dir: RunDir | None, reports: Reporter) -> None:
        self.run_dir = run_dir
        self.reports = reports
        self.last_saved_iter = -1  # the step ckpt.pt in run_dir holds, as far as this run knows
        self.last_error: str | None = None  # why the latest save failed; None after a success

    def resumed_at(self, it: int) -> None:
        """A run resumed at `it`: the ckpt.pt in its run directory (if there is one) holds it."""
        if self.run_dir is not None and self.run_dir.ckpt_path.exists():
            self.last_saved_iter = it

    def save(self, it: int, state: dict[str, Any], reason: str, best: bool) -> bool:
        """Write ckpt.pt (and best.pt: `best`) atomically, and report it, or why it failed.
        Whether best.pt (if `best`) holds this state now: it is written first, so it can be
        while ckpt.pt is not."""
        assert self.run_dir is not None
        path = self.run_dir.ckpt_path
        try:
            save_checkpoint(state, path, also=self.run_dir.best_path if best else None)
        except OSError as exc:  # a full disk or a vanished folder must not end the run
            self.last_error = exc.strerror or str(exc)
            self.reports.emit(ev.CheckpointFailed(it, self.reports.clock.time_s(), str(path), self.last_error))
            return isinstance(exc, BestWritten)
        self.last_saved_iter = it
        self.last_error = None
        self.reports.emit(ev.CheckpointSaved(it, self.reports.clock.time_s(), str(path), reason, best))
        return True

    def refuse(self, it: int) -> None:
        """Broken weights: not saved, and said so."""
        assert self.run_dir is not None
        self.last_error = f"not saved, the weights are broken; {self.kept()}"
        self.reports.emit(ev.CheckpointFailed(it, self.reports.clock.time_s(), str(self.run_dir.ckpt_path),
                                              self.last_error))

    def kept_path(self) -> Path | None:
        """ckpt.pt, if this run has one (saved by it, or the one it resumed from in run_dir)."""
        return self.run_dir.ckpt_path if self.run_dir is not None and self.last_saved_iter >= 0 else None

    def kept(self) -> str:
        """Which checkpoint holds the latest saved state, for messages."""
        kept = self.kept_path()
        return f"{kept} (step {self.last_saved_iter}) is kept" if kept else "no checkpoint was saved"

    def unsaved_warning(self, it: int) -> str | None:
        """For the end of a run whose latest save failed: what was lost and what is kept."""
        if self.last_error is None:
            return None
        return f"the checkpoint of step {it} could not be saved ({self.last_error}); {self.kept()}"
