"""The Textual dashboard. The trainer runs in a thread worker; its events cross into the app as
messages and are routed to passive widgets. Keys become trainer controls."""

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

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import RichLog
from textual.worker import Worker, WorkerState

from model import events as ev
from model.device import lower_thread_priority, memory_usage, peak_flops
from model.trainer import RunResult, Trainer

from .format import duration, si
from .screens import GenerateScreen, HelpScreen
from .widgets import DashboardFooter, DevicePanel, LossChart, ProgressPanel, SamplesPanel, StatusBar


class TrainerReported(Message):
    """An event from the trainer's thread, now on the app's side."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


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
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "interrupt", "Quit", show=False),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
    ]

    state: reactive[str] = reactive("starting")
    pause_requested: reactive[bool] = reactive(False, bindings=True)
    finished: reactive[bool] = reactive(False, bindings=True)

    def __init__(self, trainer: Trainer, preset: str = "custom") -> None:
        super().__init__()
        self.trainer = trainer
        # A NaN loss holds the training, paused, so that the person can read what happened.
        trainer.on_divergence = "pause"
        self.preset = preset
        self.status = StatusBar()
        self.chart = LossChart(id="chart")
        self.device_panel = DevicePanel(id="device")
        self.progress = ProgressPanel(id="progress")
        self.samples = SamplesPanel(id="samples")
        self.messages = RichLog(id="messages", max_lines=500, wrap=True, markup=True, min_width=20)
        self.result: RunResult | None = None
        self.exit_code = 0
        self._quitting = False
        self._peak_flops: float | None = None
        self._flops_per_token = 0.0
        self._eval_started_s = 0.0

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
        self.device_panel.border_title = "device"
        self.progress.border_title = "progress"
        self.samples.border_title = "samples"
        self.messages.border_title = "messages"
        self.trainer.add_listener(self._forward)
        self.set_interval(2.0, self._show_memory)
        self._install_signal_handlers()
        self.train()

    def on_unmount(self) -> None:
        self.trainer.stop()  # never leave the training thread running behind a closed app

    def _forward(self, event: ev.Event) -> None:
        # Called in the trainer's thread: hand the event over and return at once.
        self.post_message(TrainerReported(event))

    # ---- the training worker -------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="training")
    def train(self) -> RunResult:
        lower_thread_priority()  # the UI thread comes first when a key is pressed
        peak, _source = peak_flops(self.trainer.device, self.trainer.config.dtype)
        self._peak_flops = peak
        return self.trainer.run()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "training":
            return
        if event.state == WorkerState.SUCCESS:
            self.result = event.worker.result
            if self._quitting:
                self.exit(self.exit_code)
        elif event.state == WorkerState.ERROR:  # the trainer reports its own failures; this is a bug
            self.state = "failed"
            self._log(f"[b red]training worker failed:[/] {event.worker.error}")
            self.notify(str(event.worker.error), title="Training failed", severity="error", timeout=30)
            if self._quitting:
                self.exit(1)

    # ---- events from the trainer -----------------------------------------------------------------
    def on_trainer_reported(self, message: TrainerReported) -> None:
        handler: Callable[[Any], None] | None = getattr(self, f"_on_{type(message.event).__name__}", None)
        if handler is not None:
            handler(message.event)

    def _on_RunStarted(self, e: ev.RunStarted) -> None:
        self.call_after_refresh(freeze_the_heap)
        self.state = "training"
        self._flops_per_token = e.flops_per_token
        self.status.set_run(_short_name(e.corpus), e.n_chars, e.n_params, self.preset, e.device)
        self.device_panel.set_device(e.device_name, e.dtype, e.threads, e.torch_version)
        self._show_memory()
        self.progress.set_run(e.iter, e.max_iters, int(e.train_config["eval_interval"]), e.time_s)
        self.progress.running = True
        if e.step_history:
            self.chart.add_steps([p[0] for p in e.step_history], [p[1] for p in e.step_history])
        for it, train_loss, val_loss in e.eval_history:
            self.chart.add_eval(int(it), train_loss, val_loss)
        where = f" in {e.out_dir}" if e.out_dir else ""
        self._log(f"{'resumed at step ' + str(e.iter) if e.resumed else 'started'}{where}")

    def _on_StepsDone(self, e: ev.StepsDone) -> None:
        self.chart.add_steps(e.iters, e.losses)
        self.progress.add_steps(e.iter, len(e.iters), e.ms_per_step, e.time_s)
        mfu = None
        if self._peak_flops:
            mfu = self._flops_per_token * e.tokens_per_s / self._peak_flops
        self.device_panel.set_throughput(e.tokens_per_s, e.ms_per_step, e.lr, mfu)

    def _on_EvalStarted(self, e: ev.EvalStarted) -> None:
        self._eval_started_s = e.time_s
        self._set_busy("evaluating", f"0/{2 * e.eval_iters}")

    def _on_EvalProgress(self, e: ev.EvalProgress) -> None:
        self._set_busy("evaluating", f"{e.done}/{e.total}")
        self.progress.set_eval_progress(1.0 - e.done / e.total)

    def _on_EvalDone(self, e: ev.EvalDone) -> None:
        self.chart.add_eval(e.iter, e.train_loss, e.val_loss)
        self.progress.eval_finished(e.time_s - self._eval_started_s)
        self.progress.set_elapsed(e.time_s)
        best = " [b green](best)[/]" if e.is_best else ""
        self._log(f"step {e.iter}: train {e.train_loss:.4f}, val {e.val_loss:.4f}{best}")
        self._set_busy(None)

    def _on_SampleGenerated(self, e: ev.SampleGenerated) -> None:
        self.samples.add_sample(e.iter, e.text)

    def _on_CheckpointSaved(self, e: ev.CheckpointSaved) -> None:
        best = " and best.pt" if e.also_best else ""
        self._log(f"step {e.iter}: saved {_short_name(e.path)}{best}")
        if e.reason != "eval":
            self.notify(f"{e.path} (step {e.iter})", title="Checkpoint saved", timeout=4)
        self._set_busy(None)

    def _on_CheckpointFailed(self, e: ev.CheckpointFailed) -> None:
        self._log(f"[b red]could not save[/] {e.path} at step {e.iter}: {e.error}")
        goes_on = "" if self.trainer.diverged else " Training goes on."
        self.notify(f"{e.path}: {e.error}.{goes_on}", title="Checkpoint not saved", severity="error", timeout=10)
        self._set_busy(None)

    def _on_Paused(self, e: ev.Paused) -> None:
        self.state = "paused"
        self.progress.running = False
        self.progress.set_elapsed(e.time_s)
        if self.trainer.diverged is None:
            self.status.detail = f"at step {e.iter}"

    def _on_Diverged(self, e: ev.Diverged) -> None:
        self.pause_requested = True
        self.progress.running = False
        self.state = "paused"
        self.status.detail = "loss diverged (NaN/inf): press q to quit"
        self._log(f"[b red]{e.message}.[/] Quit with q and resume from the kept checkpoint with a lower "
                  "--learning-rate or a --grad-clip.")
        self.notify(e.message, title="Training diverged", severity="error", timeout=60)

    def _on_Resumed(self, e: ev.Resumed) -> None:
        self.progress.running = True
        self.progress.set_elapsed(e.time_s)
        self.state = "training"
        self.status.detail = ""

    def _on_Warning(self, e: ev.Warning) -> None:
        self._log(f"[b yellow]warning:[/] {e.message}")
        self.notify(e.message, severity="warning", timeout=8)

    def _on_Finished(self, e: ev.Finished) -> None:
        self.finished = True
        self.progress.running = False
        self.progress.set_elapsed(e.time_s)
        self.state = "finished"
        best = f"best val {e.best_val_loss:.4f} at step {e.best_iter}" if e.best_iter >= 0 else "not evaluated"
        self.status.detail = f"{'stopped' if e.stopped else 'done'} at step {e.iter} · {best}"
        self._log(f"[b]{'stopped' if e.stopped else 'finished'}[/] at step {e.iter} after {duration(e.time_s)}; {best}")

    def _on_Failed(self, e: ev.Failed) -> None:
        self.finished = True
        self.progress.running = False
        self.state = "failed"
        self.status.detail = e.error
        self._log(f"[b red]training failed at step {e.iter}:[/] {e.error}")
        self.notify(e.error, title="Training failed", severity="error", timeout=30)

    # ---- state shown in the status bar ---------------------------------------------------------------
    def watch_state(self, state: str) -> None:
        self.status.state = state
        if state == "training":
            self.status.detail = ""

    def _set_busy(self, busy: str | None, detail: str = "") -> None:
        """Show evaluating/saving, or fall back to what the loop is doing now."""
        if self.state in ("finished", "failed", "stopping"):
            return
        if busy is not None:
            self.state = busy
            self.status.detail = detail
            return
        self.state = "paused" if self.trainer.paused else "training"
        self.status.detail = ""

    def _log(self, markup: str) -> None:
        self.messages.write(f"[dim]{time.strftime('%H:%M:%S')}[/] {markup}")

    def _show_memory(self) -> None:
        usage = memory_usage(self.trainer.device)
        if "rss" in usage:
            self.device_panel.set_memory(f"{si(usage['rss'], 'B')} RSS")
        else:
            self.device_panel.set_memory(f"{si(usage['allocated'], 'B')} alloc · {si(usage['reserved'], 'B')} reserved")

    # ---- keys ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return not self.pause_requested and not self.finished
        if action == "resume":
            return self.pause_requested and not self.finished
        return True

    def action_pause(self) -> None:
        self.pause_requested = True
        self.trainer.pause()
        if self.state not in ("paused", "finished", "failed"):
            self.state = "paused" if self.trainer.paused and not self.progress.running else "pausing"

    def action_resume(self) -> None:
        if not self.trainer.resume():
            self.notify("the loss diverged: these weights cannot be trained on. Quit with q.",
                        severity="error", timeout=8)
            return
        self.pause_requested = False

    def action_save(self) -> None:
        if self.state == "failed":
            self.notify("training failed: the last good checkpoint is kept as it is", severity="warning")
            return
        self._set_busy("saving")
        self._save_in_background()

    @work(thread=True, group="controls")
    def _save_in_background(self) -> None:
        self.trainer.request_save()  # saves at the next step boundary, or at once when idle

    def action_evaluate(self) -> None:
        if self.state == "failed":
            return
        self._evaluate_in_background()

    @work(thread=True, group="controls")
    def _evaluate_in_background(self) -> None:
        self.trainer.request_eval()

    def action_log_scale(self) -> None:
        log = self.chart.toggle_log_scale()
        self.notify(f"loss axis: {'logarithmic' if log else 'linear'}", timeout=2)

    def action_generate(self) -> None:
        # One prompt screen for the whole session, installed rather than pushed fresh: it is
        # composed once, so opening it again is quick even while the CPU is busy training, and
        # it keeps the last prompt and output.
        if not self.is_screen_installed("generate"):
            self.install_screen(GenerateScreen(self.trainer.snapshot, self.trainer.corpus.tokenizer), "generate")
        self.push_screen("generate")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_interrupt(self) -> None:
        """Ctrl-C: as q, with the exit status of an interrupt (130), as headless."""
        if not self._quitting:
            self.exit_code = 130
        await self.action_quit()

    async def action_quit(self) -> None:
        """Save a checkpoint, then quit. A second press quits at once."""
        if self._quitting:
            self.exit(self.exit_code)
            return
        self._quitting = True
        if self.trainer.stop_requested or self.finished or self.state == "starting":
            self._save_then_exit()
            return
        self.state = "stopping"
        self.status.detail = "saving a checkpoint, then quitting"
        self.trainer.stop()  # the worker saves at the next step boundary; its end exits the app

    @work(thread=True, group="controls")
    def _save_then_exit(self) -> None:
        if self.state != "failed":
            self.trainer.stop()
            self.trainer.request_save()
        self.call_from_thread(self.exit, self.exit_code)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause or resume training", "Space or p", self._toggle_pause)
        yield SystemCommand("Save a checkpoint", "s: ckpt.pt in the run directory", self.action_save)
        yield SystemCommand("Generate text", "g: prompt the model as it is now", self.action_generate)
        yield SystemCommand("Evaluate now", "e: train and validation loss", self.action_evaluate)
        yield SystemCommand("Toggle log scale", "l: logarithmic loss axis", self.action_log_scale)
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
        self.exit_code = 128 + signum
        if signum == getattr(signal, "SIGHUP", None):
            # The terminal is gone (a dropped SSH connection): nothing can be drawn or restored,
            # and waiting on it could hang. Save, then leave at once.
            self.trainer.stop()
            threading.Thread(target=self._save_and_exit_now, daemon=True).start()
            return
        self._quitting = False
        self.run_worker(self.action_quit(), group="controls")

    def _save_and_exit_now(self) -> None:
        if self.state != "failed":
            self.trainer.request_save()  # at once if the loop has ended; else the loop's stop saves
        self.trainer.wait_until_idle(timeout=120)
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


def run_app(trainer: Trainer, preset: str = "custom") -> int:
    """Run the dashboard until the person quits; print where the results are; return the exit code."""
    # Step events twice a second: the panels have little new to show in between, and each
    # update costs the training thread a little. (The chart redraws once a second.)
    trainer.event_interval_s = max(trainer.event_interval_s, 0.5)
    app = ChargptApp(trainer, preset)
    code = app.run()
    result = app.result
    if result is not None and trainer.run_dir is not None:
        how = result.status
        if app.exit_code > 128:
            how = f"stopped by {signal.Signals(app.exit_code - 128).name}"
        best = f"best val loss {result.best_val_loss:.4f} at step {result.best_iter}" if result.best_iter >= 0 else ""
        parts = (f"{how} at step {result.iter}", best, f"checkpoints in {trainer.run_dir.path}")
        print("; ".join(p for p in parts if p))
        if result.error:
            print(f"chargpt-tui: {result.error}", file=sys.stderr)
        elif (unsaved := trainer.unsaved_warning(result.iter)) is not None:
            print(f"chargpt-tui: {unsaved}", file=sys.stderr)
            code = code or 1
    if code is None:
        code = app.return_code or 0
    if result is not None and result.status == "failed" and code == 0:
        code = 1
    return code
