"""The Textual dashboard: one viewer of a run. The run trains in a process of its own; what its
link (wire/run_link.py) tells, it tells the app as messages, here in the app's own thread. The
run's events go to RunView (run_view.py), which redraws the passive widgets; what the run is doing
is RunState's to work out (state.py); keys become requests to the run; leaving.py is how the
dashboard is left. A late viewer is first sent the run's history, then goes live."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.filter import LineFilter
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import RichLog

from chargpt_tui.format import si
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
from model.tokenizer import CharTokenizer

from .inside import open_inside_view
from .leaving import Leaving
from .overlays import Overlays
from .run_view import RunView
from .screens import GenerateScreen, HelpScreen
from .state import RunState
from .terminal_safe import with_control_characters_removed
from .widgets import DashboardFooter, DevicePanel, LossChart, ProgressPanel, SamplesPanel, StatusBar


class RunReported(Message):
    """A notice from the run's link (its own thread), now on the app's side."""

    def __init__(self, notice: Notice) -> None:
        super().__init__()
        self.notice = notice


# Attaching again after being cut off: at first after half a second; cut off again within a
# minute of attaching, after twice as long as the time before, up to 30 s.
REATTACH_FIRST_S, REATTACH_MAX_S, REATTACH_RESET_S = 0.5, 30.0, 60.0


class ChargptApp(App[int]):
    CSS_PATH = ["app.tcss", "screens.tcss"]
    TITLE = "chargpt-tui"
    BINDINGS = [
        Binding("space,p", "pause", "Pause"),
        Binding("space,p", "resume", "Resume"),
        Binding("s", "save", "Save"),
        Binding("g", "generate", "Generate"),
        Binding("e", "evaluate", "Eval"),
        Binding("l", "log_scale", "Log y"),
        Binding("c", "overlay", "Compare", show=False),  # other runs of the text on the chart
        Binding("a", "inside('attention')", "Attention", show=False),  # inside the model: inside.py
        Binding("w", "inside('struggles')", "Struggles", show=False),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", show=False),  # the chart's x range
        Binding("minus", "zoom(2.0)", "Zoom out", show=False),
        Binding("left_square_bracket", "pan(-0.5)", "Pan back", show=False),
        Binding("right_square_bracket", "pan(0.5)", "Pan on", show=False),
        Binding("0", "show_all", "Whole run", show=False),
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
        self.read_only = read_only  # keys that steer training do nothing (serve --read-only)
        self.browser = browser  # a browser tab's viewer (serve): no terminal of its own
        self.status = StatusBar()
        self.chart = LossChart(id="chart")
        self.overlays = Overlays(self, self.chart)
        self.device_panel = DevicePanel(id="device")
        self.progress = ProgressPanel(id="progress")
        self.samples = SamplesPanel(id="samples")
        self.messages = RichLog(id="messages", max_lines=500, wrap=True, markup=False, min_width=20)
        self.run_state = RunState(read_only)  # what the run is doing, as this viewer knows it
        self.view = RunView(self.run_state, self.status, self.chart, self.device_panel, self.progress, self.samples,
                            self._log, self.notify)
        self.view.preset = preset
        self.leaving = Leaving(self, link, self.run_state, self._show_state, on_hangup, browser)
        self.pid: int | None = None
        self.viewer: int | None = None
        self.caught_up = False
        self.tokenizer: CharTokenizer | None = None
        self._attaches = 0
        self._attached_at = 0.0  # when the latest attach came (monotonic), and the wait before the next
        self._reattach_delay_s = REATTACH_FIRST_S
        self._handlers: dict[type, Callable[[Any], None]] = {
            Attached: self._on_attached, EventReported: self._on_event_reported, CaughtUp: self._on_caught_up,
            ControlRequested: self._on_control_requested, MemoryReported: self._on_memory_reported,
            RequestRefused: self._on_request_refused, RunEnded: self._on_run_ended, NotRunning: self._on_not_running,
            Disconnected: self._on_disconnected,
        }

    # ---- layout --------------------------------------------------------------------------------
    def get_line_filters(self) -> list[LineFilter]:
        return with_control_characters_removed(super().get_line_filters())

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
        self.leaving.install_signal_handlers()
        self.link.start(self._forward)

    def on_unmount(self) -> None:
        self.link.close()  # a viewer leaving changes nothing for the run

    def _forward(self, notice: Notice) -> None:
        # Called in the link's thread: hand the notice over and return at once.
        self.post_message(RunReported(notice))

    # ---- notices from the run ------------------------------------------------------------------
    def on_run_reported(self, message: RunReported) -> None:
        self._handlers[type(message.notice)](message.notice)
        self._show_state()

    def _on_attached(self, n: Attached) -> None:
        self._attaches += 1
        self._attached_at = time.monotonic()
        if self._attaches > 1:  # attached again (after being cut off): the history comes anew
            self.chart.clear()
            self.samples.clear()
            self.messages.clear()
            self.device_panel.samples.clear()  # the figures' recent past comes anew too
        self.caught_up = False
        self.run_state.attached(n.live, n.paused)  # the catch-up then says whether an evaluation or a pause holds
        self.pid, self.viewer = n.pid, n.viewer
        self.tokenizer = CharTokenizer(n.vocab) if n.vocab else None
        self.view.peak_flops = n.peak_flops
        self.preset = self.view.preset = self.preset or n.preset

    def _on_event_reported(self, n: EventReported) -> None:
        if isinstance(n.event, ev.RunStarted) and self._attaches <= 1:
            self.call_after_refresh(freeze_the_heap)
        self.view.show(n.event, n.at, n.replay)

    def _on_caught_up(self, _n: CaughtUp) -> None:
        """The history is drawn: work out what the run is doing now (also after attaching again,
        when whatever was shown before the cut-off may be stale)."""
        self.caught_up = True
        self.chart.draw_now()  # the history, now: not at the chart's next tick
        if not self.run_state.live or self.run_state.finished:
            return
        self.progress.running = not self.run_state.pause_requested
        self.run_state.caught_up()
        if self.leaving.quitting:  # asked to stop before being cut off: ask again, it may not have arrived
            self.link.request("stop")

    def _on_control_requested(self, n: ControlRequested) -> None:
        by_other = n.by != self.viewer
        if n.op == "pause":
            self.run_state.pause_asked()
        elif n.op == "resume":
            self.run_state.resume_asked()
        elif n.op == "stop":
            self.run_state.stop_asked()
        if by_other:
            self._log(f"another viewer (#{n.by}) asked to {n.op}")  # (a number and a known op)

    def _on_memory_reported(self, n: MemoryReported) -> None:
        self.device_panel.add_samples(n.samples)
        if "rss" in n.memory:
            self.device_panel.set_memory(f"{si(n.memory['rss'], 'B')} RSS")
        elif "allocated" in n.memory:
            self.device_panel.set_memory(f"{si(n.memory['allocated'], 'B')} alloc · "
                                         f"{si(n.memory.get('reserved', 0.0), 'B')} reserved")

    def _on_request_refused(self, n: RequestRefused) -> None:
        self.notify(n.error, severity="warning", timeout=8, markup=False)
        self.run_state.busy(None)

    def _on_run_ended(self, n: RunEnded) -> None:
        self.run_state.finished = True
        self.leaving.run_ended(n)

    def _on_not_running(self, n: NotRunning) -> None:
        self.run_state.not_running(n.state)  # finished, stopped, failed or crashed
        self.progress.running = False
        if self._attaches <= 1 and not self.leaving.quitting:
            self._log(("not running", "b"), f" ({n.state}): this is the run as it was left; g generates from its "
                      "ckpt.pt; it is never trained from here")
        self.leaving.not_running()

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

    # ---- state shown in the status bar ---------------------------------------------------------------
    def _show_state(self) -> None:
        """What RunState (dashboard/state.py) now says: the status line, and the keys offered."""
        s = self.run_state
        self.state, self.pause_requested, self.finished, self.live = s.state, s.pause_requested, s.finished, s.live
        self.status.detail = s.detail

    def watch_state(self, state: str) -> None:
        self.status.state = state

    @property
    def diverged(self) -> bool:
        return self.run_state.diverged

    @property
    def ended(self) -> RunEnded | None:
        """How the training process's run ended, when it told us."""
        return self.leaving.ended

    def _log(self, *parts: str | tuple[str, str], at: float | None = None) -> None:
        """A line in the messages panel, stamped with when it happened (a replayed line read
        from disk has no wall time: no stamp). Parts are literal text, or (text, style): never
        markup, since paths, names, messages and errors come from outside."""
        stamp = f"{'':8}" if at == 0.0 else time.strftime("%H:%M:%S", time.localtime(at))
        self.messages.write(Text.assemble((stamp, "dim"), " ", *parts))

    # ---- keys ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.run_state.allows(action, steering=action in STEERING_OPS)

    def _steerable(self, what: str) -> bool:
        if self.read_only:
            self.action_read_only()
            return False
        if self.run_state.live:
            return True
        self.notify(f"the run is not running: nothing to {what}. Train on with --resume "
                    f"{self.link.run_dir / 'ckpt.pt'}", severity="warning", timeout=6, markup=False)
        return False

    def action_read_only(self) -> None:
        self.notify("a read-only view: pausing, saving and evaluating are for chargpt-tui attach",
                    severity="warning", timeout=4)

    def action_pause(self) -> None:
        if not self._steerable("pause") or self.run_state.finished:
            return
        if not self.link.request("pause"):
            return
        self.run_state.pause_pressed()
        self._show_state()

    def action_resume(self) -> None:
        if not self._steerable("resume") or self.run_state.finished:
            return
        if self.diverged:
            self.notify("the loss diverged: these weights cannot be trained on. Quit with q.",
                        severity="error", timeout=8)
            return
        if self.link.request("resume"):
            self.run_state.resume_asked()
            self._show_state()

    def action_save(self) -> None:
        if self.run_state.state == "failed" and self.run_state.live:
            self.notify("training failed: the last good checkpoint is kept as it is", severity="warning")
            return
        if not self._steerable("save"):
            return
        if self.link.request("save"):
            self.run_state.busy("saving")
            self._show_state()

    def action_evaluate(self) -> None:
        if self.run_state.state == "failed" or not self._steerable("evaluate"):
            return
        self.link.request("evaluate")

    def action_inside(self, view: str) -> None:
        open_inside_view(self, view)

    def action_overlay(self) -> None:
        self.overlays.pick(getattr(self.link, "run_dir", None))

    def action_log_scale(self) -> None:
        log = self.chart.toggle_log_scale()
        self.notify(f"loss axis: {'logarithmic' if log else 'linear'}", timeout=2)

    def action_zoom(self, factor: float) -> None:
        self.chart.zoom(factor)

    def action_pan(self, fraction: float) -> None:
        self.chart.pan(fraction)

    def action_show_all(self) -> None:
        self.chart.reset_view()

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
        self.leaving.detach()

    def action_quit(self) -> None:  # type: ignore[override]
        self.leaving.quit()

    def action_stop_and_quit(self) -> None:
        self.leaving.stop_then_exit()

    def action_interrupt(self) -> None:
        self.leaving.interrupt()

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
        (self.action_resume if self.run_state.pause_requested else self.action_pause)()


def freeze_the_heap() -> None:
    """Take what is alive once the dashboard is up (torch, Textual, the model: some 300,000
    objects) out of the garbage collector's sight. Without this, every full collection scans them
    all: 180-240 ms on the UI thread every few seconds while training, long enough to make a
    key press feel slow. With it, full collections take 10-40 ms. Collect first, so that no
    garbage is frozen with them."""
    gc.collect()
    gc.freeze()
