"""What a run's events do to the dashboard: its panels, its messages, its notifications, and
(through RunState, dashboard/state.py) what the status line says the run is doing.

A late viewer is first sent the run's history as replayed events (`replaying`): those redraw
the panels but notify nobody, and what the start event's history already drew is not drawn twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chargpt_tui.format import duration, threads
from model import events as ev
from model.config import preset_note

from .state import RunState
from .widgets import DevicePanel, LossChart, ProgressPanel, SamplesPanel, StatusBar

Log = Callable[..., None]  # log(*parts, at=None): a line in the messages panel (dashboard/app.py)
Notify = Callable[..., None]  # App.notify


def short_name(path: str) -> str:
    """A text's or checkpoint's file name (the built-in corpus's description stays whole)."""
    return path.rsplit("/", 1)[-1] if "/" in path and not path.startswith("Python") else path


class RunView:
    def __init__(self, state: RunState, status: StatusBar, chart: LossChart, device_panel: DevicePanel,
                 progress: ProgressPanel, samples: SamplesPanel, log: Log, notify: Notify) -> None:
        self.state = state
        self.status, self.chart, self.device_panel = status, chart, device_panel
        self.progress, self.samples = progress, samples
        self.log, self._notify = log, notify
        self.preset: str | None = None  # the run's preset, when known (None: custom settings)
        self.peak_flops: float | None = None  # the device's, for MFU (from the run, on attaching)
        self.replaying = False
        self._flops_per_token = 0.0
        self._processes = 1  # of a torchrun job: the peak is one device's, the throughput all of theirs
        self._eval_iters = 1  # batches of each split in an evaluation, as the run is set
        self._eval_started_s = 0.0
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            ev.RunStarted: self._run_started, ev.StepsDone: self._steps_done, ev.EvalStarted: self._eval_started,
            ev.EvalProgress: self._eval_progress, ev.EvalDone: self._eval_done,
            ev.SampleGenerated: self._sample, ev.CheckpointSaved: self._checkpoint_saved,
            ev.CheckpointFailed: self._checkpoint_failed, ev.Paused: self._paused, ev.Resumed: self._resumed,
            ev.Warning: self._warning, ev.Hint: self._hint, ev.Finished: self._finished,
            ev.Failed: self._failed, ev.Diverged: self._diverged, ev.ThreadsChanged: self._threads_changed,
        }

    def show(self, event: ev.Event, at: float, replaying: bool) -> None:
        """One event from the run (`at`: when it happened, wall time; 0.0 for one read from disk)."""
        self.replaying = replaying
        try:
            self._handlers[type(event)](event, at)
        finally:
            self.replaying = False

    def notify(self, message: str, **kwargs: Any) -> None:
        """A notification for what happens now (never for a replayed event); text shown literally."""
        if not self.replaying:
            self._notify(message, markup=False, **kwargs)

    def _run_started(self, e: ev.RunStarted, at: float) -> None:
        self.state.run_started(self.replaying)
        self._flops_per_token = e.flops_per_token
        self._processes = max(1, e.processes)
        self._eval_iters = max(1, int(e.train_config.get("eval_iters", 1) or 1))
        self.status.set_run(short_name(e.corpus), e.n_chars, e.n_params, self.preset or "custom", e.device)
        self.status.set_step(e.iter, e.max_iters)
        self.device_panel.set_preset(self.preset or "custom", preset_note(self.preset, e.device))
        self.device_panel.set_optimizer(str(e.train_config.get("optimizer") or "adamw"),
                                        e.train_config.get("muon_lr"), e.train_config.get("learning_rate"))
        self.device_panel.set_device(e.device_name, e.dtype, e.threads, e.torch_version, e.dtype_note,
                                     e.threads_reason)
        self.progress.set_run(e.iter, e.max_iters, int(e.train_config.get("eval_interval", 1) or 1), e.time_s)
        self.progress.running = self.state.live
        if e.step_history:
            self.chart.load_steps([p[0] for p in e.step_history], [p[1] for p in e.step_history])
        for it, train_loss, val_loss in e.eval_history:
            self.chart.add_eval(int(it), train_loss, val_loss)
        where = f" in {e.out_dir}" if e.out_dir else ""
        if self.replaying:
            self.log(f"attached at step {e.iter}{where}" if self.state.live else f"read at step {e.iter}{where}")
        else:
            self.log(f"{'resumed at step ' + str(e.iter) if e.resumed else 'started'}{where}", at=at)
        if e.dtype_reason:
            self.log(f"{e.dtype}: {e.dtype_reason}")

    def _steps_done(self, e: ev.StepsDone, at: float) -> None:
        self.chart.add_steps(e.iters, e.losses)
        self.progress.add_steps(e.iter, len(e.iters), e.ms_per_step, e.time_s)
        self.status.set_step(e.iter, self.progress.max_iters)
        mfu = None
        if self.peak_flops:
            mfu = self._flops_per_token * e.tokens_per_s / (self.peak_flops * self._processes)  # per device
        self.device_panel.set_throughput(e.tokens_per_s, e.ms_per_step, e.lr, mfu)

    def _eval_started(self, e: ev.EvalStarted, at: float) -> None:
        self._eval_started_s = e.time_s
        self.state.eval_started(2 * e.eval_iters)

    def _eval_progress(self, e: ev.EvalProgress, at: float) -> None:
        self.state.eval_progress(e.done, e.total)
        self.progress.set_eval_progress(1.0 - e.done / e.total)

    def _eval_done(self, e: ev.EvalDone, at: float) -> None:
        if not self.replaying:  # a late viewer's chart has these from the start event's history
            self.chart.add_eval(e.iter, e.train_loss, e.val_loss)
            # (the one at step 0 takes fewer batches: the later ones are estimated at full length)
            batches = e.batches or self._eval_iters
            self.progress.eval_finished((e.time_s - self._eval_started_s) * self._eval_iters / max(1, batches))
            self.progress.set_elapsed(e.time_s)
        best = " (best)" if e.is_best else ""
        first = f" ({e.batches} batches: a first look)" if 0 < e.batches < self._eval_iters else ""
        self.log(f"step {e.iter}: train {e.train_loss:.4f}, val {e.val_loss:.4f}{first}", (best, "b green"), at=at)
        self.state.eval_done(self.replaying)

    def _sample(self, e: ev.SampleGenerated, at: float) -> None:
        self.samples.add_sample(e.iter, e.text)

    def _checkpoint_saved(self, e: ev.CheckpointSaved, at: float) -> None:
        best = " and best.pt" if e.also_best else ""
        self.log(f"step {e.iter}: saved {short_name(e.path)}{best}", at=at)
        if self.replaying:
            return
        if e.reason != "eval":
            self.notify(f"{e.path} (step {e.iter})", title="Checkpoint saved", timeout=4)
        self.state.busy(None)

    def _checkpoint_failed(self, e: ev.CheckpointFailed, at: float) -> None:
        self.log(("could not save", "b red"), f" {e.path} at step {e.iter}: {e.error}", at=at)
        if self.replaying:
            return
        goes_on = "" if self.state.diverged else " Training goes on."
        self.notify(f"{e.path}: {e.error}.{goes_on}", title="Checkpoint not saved", severity="error", timeout=10)
        self.state.busy(None)

    def _paused(self, e: ev.Paused, at: float) -> None:
        self.state.paused(e.iter)
        if not self.state.finished:
            self.progress.running = False
            self.progress.set_elapsed(e.time_s)

    def _diverged(self, e: ev.Diverged, at: float) -> None:
        self.state.diverged_now()
        self.progress.running = False
        self.log((f"{e.message}.", "b red"), " Quit with q and resume from the kept checkpoint with a lower "
                 "--learning-rate or a --grad-clip.", at=at)
        self.notify(e.message, title="Training diverged", severity="error", timeout=60)

    def _resumed(self, e: ev.Resumed, at: float) -> None:
        self.state.resumed()
        self.progress.running = True
        self.progress.set_elapsed(e.time_s)

    def _warning(self, e: ev.Warning, at: float) -> None:
        self.log(("warning:", "b yellow"), f" {e.message}", at=at)
        self.notify(e.message, severity="warning", timeout=8)

    def _threads_changed(self, e: ev.ThreadsChanged, at: float) -> None:
        self.device_panel.set_threads(e.threads, e.reason)
        if not self.replaying:
            self.log(f"step {e.iter}: {threads(e.threads)} now ({e.reason})", at=at)

    def _hint(self, e: ev.Hint, at: float) -> None:
        self.log(("hint:", "b cyan"), f" {e.message}", at=at)
        self.notify(e.message, title="Hint", timeout=20)

    def _finished(self, e: ev.Finished, at: float) -> None:
        self.progress.running = False
        self.progress.set_run(e.iter, self.progress.max_iters, self.progress.eval_interval, e.time_s)
        best = f"best val {e.best_val_loss:.4f} at step {e.best_iter}" if e.best_iter >= 0 else "not evaluated"
        self.state.ended("finished", f"{'stopped' if e.stopped else 'done'} at step {e.iter} · {best}")
        word = "stopped" if e.stopped else "finished"
        self.log((word, "b"), f" at step {e.iter} after {duration(e.time_s)}; {best}", at=at)

    def _failed(self, e: ev.Failed, at: float) -> None:
        self.progress.running = False
        self.state.ended("failed", e.error)
        self.log((f"training failed at step {e.iter}:", "b red"), f" {e.error}", at=at)
        self.notify(e.error, title="Training failed", severity="error", timeout=30)
