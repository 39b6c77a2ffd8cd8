"""What the dashboard says a run is doing, worked out from what it is told: a plain class (no
Textual) that the app feeds notices, events and key presses, and reads back for its status line
and its keys.

    state = RunState()
    state.attached(live=True, paused=False)
    state.eval_started(400)          # state.state == "evaluating", state.detail == "0/400"
    state.pause_asked()              # asked: "pausing" until the loop holds
    state.paused(120)                # "paused", detail "at step 120, in its evaluation"

States:
    starting     attached or launched, the run's start not yet seen
    training     steps are being taken
    evaluating   an evaluation runs (detail: batches done of all)
    saving       a checkpoint asked for is being written
    pausing      a pause was asked for; the loop holds at its next step or evaluation batch
    paused       the loop holds (detail: where); after a divergence, for good
    stopping     a stop was asked for: a checkpoint, then the end
    finished     the run ended (done or stopped early); failed: it ended with an error
    stopped, crashed
                 a run that is not running, as it was left (read back from disk)

`finished` (the flag) is set by every ending, whichever state shows it; `live`: a training
process is there to steer; `read_only`: this viewer may not steer it (serve --read-only).
"""

from __future__ import annotations

ENDED_STATES = ("finished", "stopped", "failed", "crashed", "stopping")


class RunState:
    def __init__(self, read_only: bool = False) -> None:
        self.state = "starting"
        self.detail = ""  # the status line's detail: what is done, where it holds, how it ended
        self.read_only = read_only
        self.live = False  # a training process is there to steer
        self.finished = False  # the run ended (or was read from disk, not running)
        self.pause_requested = False  # a pause is asked for or holds (resume asks it off)
        self.diverged = False  # the loss diverged: held for good
        self.evaluating = False  # between an EvalStarted and its EvalDone
        self.loop_paused = False  # the loop has reached its pause (a Paused event), not just been asked
        self.paused_at = ""  # where the loop holds, for the status line while paused

    def _set(self, state: str) -> None:
        if state == "training" and self.state != "training":  # (what the status line's detail said is done)
            self.detail = ""
        self.state = state

    # ---- the link ------------------------------------------------------------------------------
    def attached(self, live: bool, paused: bool) -> None:
        """Attached (again): the catch-up that follows says whether an evaluation or a pause holds."""
        self.evaluating = False
        self.loop_paused = False
        self.live = live
        self.pause_requested = paused

    def caught_up(self) -> None:
        """The history is in: work out what the run is doing now."""
        if self.live and not self.finished:
            self.busy(None)

    def not_running(self, state: str) -> None:
        """The run is not running: finished, stopped, failed or crashed, as it was left."""
        self.live = False
        self.finished = True
        self._set(state)
        shown = self.detail if "not running" not in self.detail else ""  # how it ended, say
        self.detail = f"not running ({state})" + (f" · {shown}" if shown else "")

    # ---- requests (this viewer's keys, or another viewer's, as the run reports them) ------------
    def pause_asked(self) -> None:
        self.pause_requested = True
        if self.state in ("training", "starting"):
            self._set("pausing")

    def resume_asked(self) -> None:
        self.pause_requested = False

    def stop_asked(self) -> None:
        """A stop, asked by any viewer: a checkpoint, then the end."""
        if not self.finished:
            self._set("stopping")
            self.detail = "saving a checkpoint, then stopping"

    def quit_pressed(self) -> None:
        """This viewer stops the run and quits when it has ended."""
        self._set("stopping")
        self.detail = "saving a checkpoint, then quitting"

    def pause_pressed(self) -> None:
        """This viewer's pause key, sent."""
        self.pause_requested = True
        if self.state not in ("paused", "finished", "failed"):
            self._set("pausing")

    # ---- events from the run -------------------------------------------------------------------
    def run_started(self, replaying: bool) -> None:
        if self.state == "starting" or not replaying:
            self._set("training")

    def eval_started(self, total: int) -> None:
        self.evaluating = True
        self.busy("evaluating", f"0/{total}")

    def eval_progress(self, done: int, total: int) -> None:
        self.evaluating = True  # (a viewer that attached during the evaluation never saw it start)
        self.busy("evaluating", f"{done}/{total}")

    def eval_done(self, replaying: bool) -> None:
        self.evaluating = False
        if not replaying:
            self.busy(None)

    def paused(self, step: int) -> None:
        self.loop_paused = True
        self.pause_requested = True
        if self.finished:
            return
        self._set("paused")
        self.paused_at = f"at step {step}" + (", in its evaluation" if self.evaluating else "")
        if not self.diverged:
            self.detail = self.paused_at

    def diverged_now(self) -> None:
        self.diverged = True
        self.pause_requested = True
        self._set("paused")
        self.detail = "loss diverged (NaN/inf): press q to quit"

    def resumed(self) -> None:
        self.loop_paused = False
        self.pause_requested = False
        self._set("evaluating" if self.evaluating else "training")  # (held in an evaluation: it goes on)
        self.detail = ""

    def ended(self, how: str, detail: str) -> None:
        """The run finished (how "finished") or failed ("failed"), saying `detail`."""
        self.finished = True
        self._set(how)
        self.detail = detail

    # ---- what shows now ------------------------------------------------------------------------
    def busy(self, busy: str | None, detail: str = "") -> None:
        """Show evaluating/saving (`busy`), or (None) fall back to what the loop is doing now."""
        if self.state in ENDED_STATES or self.finished:
            return
        if busy is not None and self.pause_requested and not self.loop_paused and not self.diverged:
            self._set("pausing")  # asked for: the loop holds within a step or an evaluation batch
            self.detail = f"{busy} {detail}".strip()
            return
        if busy is not None:
            self._set(busy)
            if not self.diverged:  # what a divergence says stays on screen (a refused save, say)
                self.detail = detail
            return
        if self.pause_requested:
            self._set("paused" if self.loop_paused or self.diverged else "pausing")
        else:
            self._set("evaluating" if self.evaluating else "training")
        if not self.diverged:  # what a divergence says stays on screen
            self.detail = self.paused_at if self.state == "paused" else ""

    # ---- keys ----------------------------------------------------------------------------------
    def allows(self, action: str, steering: bool) -> bool | None:
        """Whether a key's action is offered now: True, False (hidden), None (shown dimmed).
        `steering`: the action steers training (refused in a read-only view)."""
        if steering and self.read_only:
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
