"""The Textual dashboard: one viewer of a run. The run trains in a process of its own; its events
reach the app through a link (run_link.py) as messages, and are routed to passive widgets. Keys
become requests to the run. A late viewer is first sent the run's history, then goes live."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import RichLog

from chargpt_tui.format import duration, si, threads
from chargpt_tui.wire.notices import (
    Attached,
    CaughtUp,
    ControlRequested,
    Disconnected,
    EventReported,
    MemoryReported,
    Notice,
    NotRunning,
    RequestRefused,
    RunEnded,
)
from chargpt_tui.wire.run_link import STEERING_OPS, RunLink
from model import events as ev
from model.config import preset_note
from model.tokenizer import CharTokenizer

from .screens import GenerateScreen, HelpScreen, QuitScreen
from .widgets import DashboardFooter, DevicePanel, LossChart, ProgressPanel, SamplesPanel, StatusBar


class RunReported(Message):
    """A notice from the run's link (its own thread), now on the app's side."""

    def __init__(self, notice: Notice) -> None:
        super().__init__()
        self.notice = notice


# Where the dashboard was left: how run_app reports the end to the shell.
DETACHED, CLOSED, ENDED = "detached", "closed", "ended"
# Attaching again after being cut off: at first after half a second; cut off again within a
# minute of attaching, after twice as long as the time before, up to 30 s.
REATTACH_FIRST_S, REATTACH_MAX_S, REATTACH_RESET_S = 0.5, 30.0, 60.0
BROWSER_EXIT_S = 2.0  # a tab's viewer told to leave (SIGTERM) is gone by then


class ChargptApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "chargpt-tui"
    BINDINGS = [
        Binding("space,p", "pause", "Pause"),
        Binding("space,p", "resume", "Resume"),
        Binding("s", "save", "Save"),
        Binding("g", "generate", "Generate"),
        Binding("e", "evaluate", "Eval"),
        Binding("l", "log_scale", "Log y"),
        Binding("d", "detach", "Detach"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "stop_and_quit", "Stop and quit", show=False, priority=True),
        Binding("ctrl+c", "interrupt", "Quit", show=False),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("space,p,s,e", "read_only", show=False),  # what those keys do in a read-only view
    ]

    state: reactive[str] = reactive("starting")
    pause_requested: reactive[bool] = reactive(False, bindings=True)
    finished: reactive[bool] = reactive(False, bindings=True)
    live: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, link: RunLink, preset: str | None = None, on_hangup: str = "detach",
                 read_only: bool = False, browser: bool = False) -> None:
        super().__init__()
        self.link = link
        self.preset = preset
        self.on_hangup = on_hangup
        self.read_only = read_only  # keys that steer training do nothing (serve --read-only)
        self.browser = browser  # a browser tab's viewer (serve): no terminal of its own
        self.status = StatusBar()
        self.chart = LossChart(id="chart")
        self.device_panel = DevicePanel(id="device")
        self.progress = ProgressPanel(id="progress")
        self.samples = SamplesPanel(id="samples")
        self.messages = RichLog(id="messages", max_lines=500, wrap=True, markup=False, min_width=20)
        self.outcome = CLOSED
        self.ended: RunEnded | None = None  # how the training process's run ended, when it told us
        self.pid: int | None = None
        self.viewer: int | None = None
        self.exit_code = 0
        self.diverged = False
        self.caught_up = False
        self.tokenizer: CharTokenizer | None = None
        self._quitting = False
        self._loop_paused = False  # the loop has reached its pause (a Paused event), not just been asked
        self._attaches = 0
        self._replaying = False
        self._peak_flops: float | None = None
        self._flops_per_token = 0.0
        self._processes = 1  # of a torchrun job: the peak is one device's, the throughput all of theirs
        self._eval_iters = 1  # batches of each split in an evaluation, as the run is set
        self._eval_started_s = 0.0
        self._evaluating = False  # between an EvalStarted and its EvalDone
        self._paused_at = ""  # where the loop holds, for the status line while paused
        self._attached_at = 0.0  # when the latest attach came (monotonic), and the wait before the next
        self._reattach_delay_s = REATTACH_FIRST_S
        self._handlers: dict[type, Callable[[Any], None]] = {
            Attached: self._on_attached, EventReported: self._on_event_reported, CaughtUp: self._on_caught_up,
            ControlRequested: self._on_control_requested, MemoryReported: self._on_memory_reported,
            RequestRefused: self._on_request_refused, RunEnded: self._on_run_ended, NotRunning: self._on_not_running,
            Disconnected: self._on_disconnected,
        }
        self._event_handlers: dict[type, Callable[[Any], None]] = {
            ev.RunStarted: self._on_RunStarted, ev.StepsDone: self._on_StepsDone, ev.EvalStarted: self._on_EvalStarted,
            ev.EvalProgress: self._on_EvalProgress, ev.EvalDone: self._on_EvalDone,
            ev.SampleGenerated: self._on_SampleGenerated, ev.CheckpointSaved: self._on_CheckpointSaved,
            ev.CheckpointFailed: self._on_CheckpointFailed, ev.Paused: self._on_Paused, ev.Resumed: self._on_Resumed,
            ev.Warning: self._on_Warning, ev.Hint: self._on_Hint, ev.Finished: self._on_Finished,
            ev.Failed: self._on_Failed, ev.Diverged: self._on_Diverged, ev.ThreadsChanged: self._on_ThreadsChanged,
        }

    # ---- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.status
        with Horizontal(id="top"):
            yield self.chart
            with Vertical(id="side"):
                yield self.device_panel
                yield self.progress
        with Horizontal(id="bottom"):
            yield self.samples
            yield self.messages
        yield DashboardFooter()

    def on_mount(self) -> None:
        if self.read_only:
            self.status.view = "READ-ONLY"
        self.device_panel.border_title = "device"
        self.progress.border_title = "progress"
        self.samples.border_title = "samples"
        self.messages.border_title = "messages"
        self._install_signal_handlers()
        self.link.start(self._forward)

    def on_unmount(self) -> None:
        self.link.close()  # a viewer leaving changes nothing for the run

    def _forward(self, notice: Notice) -> None:
        # Called in the link's thread: hand the notice over and return at once.
        self.post_message(RunReported(notice))

    # ---- notices from the run ------------------------------------------------------------------
    def on_run_reported(self, message: RunReported) -> None:
        self._handlers[type(message.notice)](message.notice)

    def _on_attached(self, n: Attached) -> None:
        self._attaches += 1
        self._attached_at = time.monotonic()
        if self._attaches > 1:  # attached again (after being cut off): the history comes anew
            self.chart.clear()
            self.samples.clear()
            self.messages.clear()
        self.caught_up = False
        self._evaluating = False  # the catch-up says so (an EvalStarted without its EvalDone)
        self._loop_paused = False  # the catch-up says so (a Paused event) if the loop is paused
        self.live = n.live
        self.pid, self.viewer = n.pid, n.viewer
        self.tokenizer = CharTokenizer(n.vocab) if n.vocab else None
        self._peak_flops = n.peak_flops
        self.preset = self.preset or n.preset
        self.pause_requested = n.paused

    def _on_event_reported(self, n: EventReported) -> None:
        self._replaying = n.replay
        try:
            self._event_handlers[type(n.event)](n.event, n.at)
        finally:
            self._replaying = False

    def _on_caught_up(self, _n: CaughtUp) -> None:
        """The history is drawn: work out what the run is doing now (also after attaching again,
        when whatever was shown before the cut-off may be stale)."""
        self.caught_up = True
        self.chart.draw_now()  # the history, now: not at the chart's next tick
        if not self.live or self.finished:
            return
        self.progress.running = not self.pause_requested
        self._set_busy(None)
        if self._quitting:  # asked to stop before being cut off: ask again, it may not have arrived
            self.link.request("stop")

    def _on_control_requested(self, n: ControlRequested) -> None:
        by_other = n.by != self.viewer
        if n.op == "pause":
            self.pause_requested = True
            if self.state in ("training", "starting"):
                self.state = "pausing"
        elif n.op == "resume":
            self.pause_requested = False
        elif n.op == "stop" and not self.finished:
            self.state = "stopping"
            self.status.detail = "saving a checkpoint, then stopping"
        if by_other:
            self._log(f"another viewer (#{n.by}) asked to {n.op}")  # (a number and a known op)

    def _on_memory_reported(self, n: MemoryReported) -> None:
        if "rss" in n.memory:
            self.device_panel.set_memory(f"{si(n.memory['rss'], 'B')} RSS")
        elif "allocated" in n.memory:
            self.device_panel.set_memory(f"{si(n.memory['allocated'], 'B')} alloc · "
                                         f"{si(n.memory.get('reserved', 0.0), 'B')} reserved")

    def _on_request_refused(self, n: RequestRefused) -> None:
        self.notify(n.error, severity="warning", timeout=8, markup=False)
        self._set_busy(None)

    def _on_run_ended(self, n: RunEnded) -> None:
        self.ended = n
        self.finished = True
        if self._quitting:
            self.outcome = ENDED
            self.exit(self.exit_code)

    def _on_not_running(self, n: NotRunning) -> None:
        self.live = False
        self.finished = True
        self.progress.running = False
        self.state = n.state  # finished, stopped, failed or crashed
        shown = self.status.detail if "not running" not in self.status.detail else ""  # how it ended, say
        self.status.detail = f"not running ({n.state})" + (f" · {shown}" if shown else "")
        if self._attaches <= 1 and not self._quitting:
            self._log(("not running", "b"), f" ({n.state}): this is the run as it was left; g generates from its "
                      "ckpt.pt; it is never trained from here")
        if self._quitting:
            self.outcome = ENDED if self.ended is not None else CLOSED
            self.exit(self.exit_code)

    def _on_disconnected(self, n: Disconnected) -> None:
        self.progress.running = False  # nothing is known to run until attached again
        if n.still_running:
            # cut off again soon after attaching: wait longer each time, so that a viewer that
            # cannot keep up does not make the run encode its history for it again and again
            now = time.monotonic()
            quickly = self._attaches > 1 and now - self._attached_at < REATTACH_RESET_S
            self._reattach_delay_s = min(2 * self._reattach_delay_s, REATTACH_MAX_S) if quickly else REATTACH_FIRST_S
            self._log(("disconnected", "b yellow"), f" ({n.reason}); attaching again in {self._reattach_delay_s:g} s")
            self._reattach(self._reattach_delay_s)
        else:
            self._log(f"the run's process has ended ({n.reason})")

    @work(thread=True, group="link", exclusive=True)
    def _reattach(self, delay_s: float) -> None:
        try:
            self.link.reconnect(first_delay_s=delay_s)
        except Exception as exc:
            self.call_from_thread(self._log, ("could not attach again:", "b red"), f" {exc}")

    # ---- events from the trainer -----------------------------------------------------------------
    def _on_RunStarted(self, e: ev.RunStarted, at: float) -> None:
        if self._attaches <= 1:
            self.call_after_refresh(freeze_the_heap)
        if self.state == "starting" or not self._replaying:
            self.state = "training"
        self._flops_per_token = e.flops_per_token
        self._processes = max(1, e.processes)
        self._eval_iters = max(1, int(e.train_config.get("eval_iters", 1) or 1))
        self.status.set_run(_short_name(e.corpus), e.n_chars, e.n_params, self.preset or "custom", e.device)
        self.status.set_step(e.iter, e.max_iters)
        self.device_panel.set_preset(self.preset or "custom", preset_note(self.preset, e.device))
        self.device_panel.set_device(e.device_name, e.dtype, e.threads, e.torch_version, e.dtype_note,
                                     e.threads_reason)
        self.progress.set_run(e.iter, e.max_iters, int(e.train_config.get("eval_interval", 1) or 1), e.time_s)
        self.progress.running = self.live
        if e.step_history:
            self.chart.load_steps([p[0] for p in e.step_history], [p[1] for p in e.step_history])
        for it, train_loss, val_loss in e.eval_history:
            self.chart.add_eval(int(it), train_loss, val_loss)
        where = f" in {e.out_dir}" if e.out_dir else ""
        if self._replaying:
            self._log(f"attached at step {e.iter}{where}" if self.live else f"read at step {e.iter}{where}")
        else:
            self._log(f"{'resumed at step ' + str(e.iter) if e.resumed else 'started'}{where}", at=at)
        if e.dtype_reason:
            self._log(f"{e.dtype}: {e.dtype_reason}")

    def _on_StepsDone(self, e: ev.StepsDone, at: float) -> None:
        self.chart.add_steps(e.iters, e.losses)
        self.progress.add_steps(e.iter, len(e.iters), e.ms_per_step, e.time_s)
        self.status.set_step(e.iter, self.progress.max_iters)
        mfu = None
        if self._peak_flops:
            mfu = self._flops_per_token * e.tokens_per_s / (self._peak_flops * self._processes)  # per device
        self.device_panel.set_throughput(e.tokens_per_s, e.ms_per_step, e.lr, mfu)

    def _on_EvalStarted(self, e: ev.EvalStarted, at: float) -> None:
        self._eval_started_s = e.time_s
        self._evaluating = True
        self._set_busy("evaluating", f"0/{2 * e.eval_iters}")

    def _on_EvalProgress(self, e: ev.EvalProgress, at: float) -> None:
        self._evaluating = True  # (a viewer that attached during the evaluation never saw it start)
        self._set_busy("evaluating", f"{e.done}/{e.total}")
        self.progress.set_eval_progress(1.0 - e.done / e.total)

    def _on_EvalDone(self, e: ev.EvalDone, at: float) -> None:
        self._evaluating = False
        if not self._replaying:  # a late viewer's chart has these from the start event's history
            self.chart.add_eval(e.iter, e.train_loss, e.val_loss)
            # (the one at step 0 takes fewer batches: the later ones are estimated at full length)
            batches = e.batches or self._eval_iters
            self.progress.eval_finished((e.time_s - self._eval_started_s) * self._eval_iters / max(1, batches))
            self.progress.set_elapsed(e.time_s)
        best = " (best)" if e.is_best else ""
        first = f" ({e.batches} batches: a first look)" if 0 < e.batches < self._eval_iters else ""
        self._log(f"step {e.iter}: train {e.train_loss:.4f}, val {e.val_loss:.4f}{first}", (best, "b green"), at=at)
        if not self._replaying:
            self._set_busy(None)

    def _on_SampleGenerated(self, e: ev.SampleGenerated, at: float) -> None:
        self.samples.add_sample(e.iter, e.text)

    def _on_CheckpointSaved(self, e: ev.CheckpointSaved, at: float) -> None:
        best = " and best.pt" if e.also_best else ""
        self._log(f"step {e.iter}: saved {_short_name(e.path)}{best}", at=at)
        if self._replaying:
            return
        if e.reason != "eval":
            self.notify(f"{e.path} (step {e.iter})", title="Checkpoint saved", timeout=4, markup=False)
        self._set_busy(None)

    def _on_CheckpointFailed(self, e: ev.CheckpointFailed, at: float) -> None:
        self._log(("could not save", "b red"), f" {e.path} at step {e.iter}: {e.error}", at=at)
        if self._replaying:
            return
        goes_on = "" if self.diverged else " Training goes on."
        self.notify(f"{e.path}: {e.error}.{goes_on}", title="Checkpoint not saved", severity="error", timeout=10,
                    markup=False)
        self._set_busy(None)

    def _on_Paused(self, e: ev.Paused, at: float) -> None:
        self._loop_paused = True
        self.pause_requested = True
        if self.finished:
            return
        self.state = "paused"
        self.progress.running = False
        self.progress.set_elapsed(e.time_s)
        self._paused_at = f"at step {e.iter}" + (", in its evaluation" if self._evaluating else "")
        if not self.diverged:
            self.status.detail = self._paused_at

    def _on_Diverged(self, e: ev.Diverged, at: float) -> None:
        self.diverged = True
        self.pause_requested = True
        self.progress.running = False
        self.state = "paused"
        self.status.detail = "loss diverged (NaN/inf): press q to quit"
        self._log((f"{e.message}.", "b red"), " Quit with q and resume from the kept checkpoint with a lower "
                  "--learning-rate or a --grad-clip.", at=at)
        if not self._replaying:
            self.notify(e.message, title="Training diverged", severity="error", timeout=60, markup=False)

    def _on_Resumed(self, e: ev.Resumed, at: float) -> None:
        self._loop_paused = False
        self.pause_requested = False
        self.progress.running = True
        self.progress.set_elapsed(e.time_s)
        self.state = "evaluating" if self._evaluating else "training"  # (held in an evaluation: it goes on)
        self.status.detail = ""

    def _on_Warning(self, e: ev.Warning, at: float) -> None:
        self._log(("warning:", "b yellow"), f" {e.message}", at=at)
        if not self._replaying:
            self.notify(e.message, severity="warning", timeout=8, markup=False)

    def _on_ThreadsChanged(self, e: ev.ThreadsChanged, at: float) -> None:
        self.device_panel.set_threads(e.threads, e.reason)
        if not self._replaying:
            self._log(f"step {e.iter}: {threads(e.threads)} now ({e.reason})", at=at)

    def _on_Hint(self, e: ev.Hint, at: float) -> None:
        self._log(("hint:", "b cyan"), f" {e.message}", at=at)
        if not self._replaying:
            self.notify(e.message, title="Hint", timeout=20, markup=False)

    def _on_Finished(self, e: ev.Finished, at: float) -> None:
        self.finished = True
        self.progress.running = False
        self.progress.set_run(e.iter, self.progress.max_iters, self.progress.eval_interval, e.time_s)
        self.state = "finished"
        best = f"best val {e.best_val_loss:.4f} at step {e.best_iter}" if e.best_iter >= 0 else "not evaluated"
        self.status.detail = f"{'stopped' if e.stopped else 'done'} at step {e.iter} · {best}"
        word = "stopped" if e.stopped else "finished"
        self._log((word, "b"), f" at step {e.iter} after {duration(e.time_s)}; {best}", at=at)

    def _on_Failed(self, e: ev.Failed, at: float) -> None:
        self.finished = True
        self.progress.running = False
        self.state = "failed"
        self.status.detail = e.error
        self._log((f"training failed at step {e.iter}:", "b red"), f" {e.error}", at=at)
        if not self._replaying:
            self.notify(e.error, title="Training failed", severity="error", timeout=30, markup=False)

    # ---- state shown in the status bar ---------------------------------------------------------------
    def watch_state(self, state: str) -> None:
        self.status.state = state
        if state == "training":
            self.status.detail = ""

    def _set_busy(self, busy: str | None, detail: str = "") -> None:
        """Show evaluating/saving, or fall back to what the loop is doing now."""
        if self.state in ("finished", "stopped", "failed", "crashed", "stopping") or self.finished:
            return
        if busy is not None and self.pause_requested and not self._loop_paused and not self.diverged:
            self.state = "pausing"  # asked for: the loop holds within a step or an evaluation batch
            self.status.detail = f"{busy} {detail}".strip()
            return
        if busy is not None:
            self.state = busy
            self.status.detail = detail
            return
        if self.pause_requested:
            self.state = "paused" if self._loop_paused or self.diverged else "pausing"
        else:
            self.state = "evaluating" if self._evaluating else "training"
        if not self.diverged:  # what a divergence says stays on screen
            self.status.detail = self._paused_at if self.state == "paused" else ""

    def _log(self, *parts: str | tuple[str, str], at: float | None = None) -> None:
        """A line in the messages panel, stamped with when it happened (a replayed line read
        from disk has no wall time: no stamp). Parts are literal text, or (text, style): never
        markup, since paths, names, messages and errors come from outside."""
        stamp = f"{'':8}" if at == 0.0 else time.strftime("%H:%M:%S", time.localtime(at))
        self.messages.write(Text.assemble((stamp, "dim"), " ", *parts))

    # ---- keys ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in STEERING_OPS and self.read_only:
            return None  # shown dimmed; pressed, the read_only binding says why nothing happens
        if action == "read_only":
            return self.read_only
        if action == "pause":
            return not self.pause_requested and not self.finished and self.live
        if action == "resume":
            return self.pause_requested and not self.finished and self.live
        if action == "detach":
            return self.live
        if action in ("save", "evaluate") and not self.live:
            return None  # shown, dimmed: a run that is not running has no process to ask
        return True

    def _steerable(self, what: str) -> bool:
        if self.read_only:
            self.action_read_only()
            return False
        if self.live:
            return True
        self.notify(f"the run is not running: nothing to {what}. Train on with --resume "
                    f"{self.link.run_dir / 'ckpt.pt'}", severity="warning", timeout=6, markup=False)
        return False

    def action_read_only(self) -> None:
        self.notify("a read-only view: pausing, saving and evaluating are for chargpt-tui attach",
                    severity="warning", timeout=4)

    def action_pause(self) -> None:
        if not self._steerable("pause") or self.finished:
            return
        if not self.link.request("pause"):
            return
        self.pause_requested = True
        if self.state not in ("paused", "finished", "failed"):
            self.state = "pausing"

    def action_resume(self) -> None:
        if not self._steerable("resume") or self.finished:
            return
        if self.diverged:
            self.notify("the loss diverged: these weights cannot be trained on. Quit with q.",
                        severity="error", timeout=8)
            return
        if self.link.request("resume"):
            self.pause_requested = False

    def action_save(self) -> None:
        if self.state == "failed" and self.live:
            self.notify("training failed: the last good checkpoint is kept as it is", severity="warning")
            return
        if not self._steerable("save"):
            return
        if self.link.request("save"):
            self._set_busy("saving")

    def action_evaluate(self) -> None:
        if self.state == "failed" or not self._steerable("evaluate"):
            return
        self.link.request("evaluate")

    def action_log_scale(self) -> None:
        log = self.chart.toggle_log_scale()
        self.notify(f"loss axis: {'logarithmic' if log else 'linear'}", timeout=2)

    def action_generate(self) -> None:
        # One prompt screen for the whole session, installed rather than pushed fresh: it is
        # composed once, so opening it again is quick even while the CPU is busy training, and
        # it keeps the last prompt and output.
        if self.tokenizer is None:
            self.notify("the run's vocabulary is not known yet", severity="warning")
            return
        if not self.is_screen_installed("generate"):
            self.install_screen(GenerateScreen(self.link.snapshot, self.tokenizer), "generate")
        self.push_screen("generate")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_detach(self) -> None:
        """Leave the run training and this dashboard closed; attach again any time."""
        self.outcome = DETACHED if self.live and not self.finished else CLOSED
        self.exit(0)

    def action_quit(self) -> None:  # type: ignore[override]
        """q: on a run that trains, ask first (stop it, detach, or cancel); else just close."""
        if self._quitting:
            self.exit(self.exit_code)
            return
        if not self.live or self.finished or self.read_only:
            self.exit(0)
            return
        self.push_screen(QuitScreen(), self._quit_answered)

    def _quit_answered(self, answer: str | None) -> None:
        if answer == "stop":
            self._stop_then_exit()
        elif answer == "detach":
            self.action_detach()

    def action_stop_and_quit(self) -> None:
        """ctrl+q: stop the run with a checkpoint, then quit; no question. Again: quit at once."""
        self._stop_then_exit()

    def action_interrupt(self) -> None:
        """Ctrl-C: as ctrl+q, with the exit status of an interrupt (130), as headless."""
        if not self._quitting:
            self.exit_code = 130
        self._stop_then_exit()

    def _stop_then_exit(self) -> None:
        if self.read_only:  # closes this view; the run is not this viewer's to stop
            self.exit(0)
            return
        if self._quitting:
            self.exit(self.exit_code)
            return
        self._quitting = True
        if not self.live or self.ended is not None:
            self.outcome = ENDED if self.ended is not None else CLOSED
            self.exit(self.exit_code)
            return
        self.state = "stopping"
        self.status.detail = "saving a checkpoint, then quitting"
        self.link.request("stop")  # the run saves at the next step boundary; its end closes this app

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause or resume training", "Space or p", self._toggle_pause)
        yield SystemCommand("Save a checkpoint", "s: ckpt.pt in the run directory", self.action_save)
        yield SystemCommand("Generate text", "g: prompt the model as it is now", self.action_generate)
        yield SystemCommand("Evaluate now", "e: train and validation loss", self.action_evaluate)
        yield SystemCommand("Toggle log scale", "l: logarithmic loss axis", self.action_log_scale)
        yield SystemCommand("Detach", "d: close this dashboard, training goes on", self.action_detach)
        yield SystemCommand("Stop training and quit", "ctrl+q: with a checkpoint", self.action_stop_and_quit)
        yield SystemCommand("Show the keys", "? or F1", self.action_help)

    def _toggle_pause(self) -> None:
        (self.action_resume if self.pause_requested else self.action_pause)()

    # ---- signals -------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if self.is_headless:  # under App.run_test: leave the test runner's signals alone
            return
        loop = asyncio.get_running_loop()
        # SIGINT too: in raw mode Ctrl-C arrives as a key, but `kill -INT` is a signal.
        for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), Windows
                pass

    def _on_signal(self, signum: int) -> None:
        if self.browser:
            # A tab's viewer has no terminal: signals come from `serve` (its Ctrl+C reaches the
            # whole process group; serve then closes every tab itself). This viewer just closes,
            # within 2 s whatever holds it (a thread, a page that stopped reading its output).
            if signum != signal.SIGINT:
                leave = threading.Timer(BROWSER_EXIT_S, os._exit, args=(0,))
                leave.daemon = True
                leave.start()
                self.exit(0)
            return
        if not self._quitting:
            self.exit_code = 128 + signum
        if signum == getattr(signal, "SIGHUP", None):
            # The terminal is gone (a dropped SSH connection): nothing can be drawn or restored,
            # and waiting on it could hang. The run goes on (its process is not this one),
            # unless --on-hangup stop asked for today's behaviour: stop it with a checkpoint.
            threading.Thread(target=self._leave_after_hangup, daemon=True).start()
            return
        self._stop_then_exit()  # a second signal, like a second ctrl+c, quits at once

    def _leave_after_hangup(self) -> None:
        if self.on_hangup == "stop" and self.live and not self.finished:
            self.link.request("stop")  # then wait for the run to save and say it has ended
            deadline = time.monotonic() + 120
            while self.link.connected and not self.link.ended and time.monotonic() < deadline:
                time.sleep(0.05)
        os._exit(self.exit_code)


def freeze_the_heap() -> None:
    """Take what is alive once the dashboard is up (torch, Textual, the model: some 300,000
    objects) out of the garbage collector's sight. Without this, every full collection scans them
    all: 180-240 ms on the UI thread every few seconds while training, long enough to make a
    key press feel slow. With it, full collections take 10-40 ms. Collect first, so that no
    garbage is frozen with them."""
    gc.collect()
    gc.freeze()


def _short_name(corpus: str) -> str:
    return corpus.rsplit("/", 1)[-1] if "/" in corpus and not corpus.startswith("Python") else corpus


def run_app(link: RunLink, preset: str | None = None, on_hangup: str = "detach", read_only: bool = False,
            browser: bool = False) -> int:
    """Run the dashboard on a run until the person leaves it; say what became of the run; return
    the exit status (the run's, when it ended while watched; 0 after a detach)."""
    link.read_only = read_only  # and the link refuses to send what steers training
    app = ChargptApp(link, preset, on_hangup, read_only, browser)
    code = app.run()
    if browser:  # stdout was the page's terminal, and the page is gone
        return 0
    run_dir = link.run_dir
    if app.outcome == DETACHED:
        pid = f" (process {app.pid})" if app.pid else ""
        print(f"detached: training goes on{pid}. Come back with: chargpt-tui attach {run_dir}")
        return 0
    ended = app.ended
    if ended is not None:
        how = ended.status
        if app.exit_code > 128:
            how = f"stopped by {signal.Signals(app.exit_code - 128).name}"
        print(f"{how} {ended.summary}")
        if ended.warning:
            print(f"chargpt-tui: {ended.warning}", file=sys.stderr)
        if app.exit_code:
            return app.exit_code
        return ended.exit_code
    return code if code is not None else (app.return_code or 0)
