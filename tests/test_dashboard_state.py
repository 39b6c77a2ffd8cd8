"""What the dashboard says a run is doing (chargpt_tui/dashboard/state.py), worked out without
Textual: the transitions a run's notices, events and keys make, and the keys offered in each."""

from __future__ import annotations

import subprocess
import sys

from chargpt_tui.dashboard.state import RunState


def live_run() -> RunState:
    state = RunState()
    state.attached(live=True, paused=False)
    state.run_started(replaying=False)
    return state


def test_a_run_starts_trains_and_evaluates() -> None:
    state = RunState()
    assert (state.state, state.live) == ("starting", False)
    state.attached(live=True, paused=False)
    state.run_started(replaying=False)
    assert state.state == "training"
    state.eval_started(20)
    assert (state.state, state.detail) == ("evaluating", "0/20")
    state.eval_progress(7, 20)
    assert (state.state, state.detail) == ("evaluating", "7/20")
    state.eval_done(replaying=False)
    assert (state.state, state.detail, state.evaluating) == ("training", "", False)


def test_a_pause_asked_during_an_evaluation_holds_inside_it_and_resumes_it() -> None:
    state = live_run()
    state.eval_started(20)
    state.pause_asked()
    state.eval_progress(5, 20)  # the loop has not reached its pause yet: pausing, with what it does
    assert (state.state, state.detail) == ("pausing", "evaluating 5/20")
    state.paused(120)
    assert (state.state, state.detail) == ("paused", "at step 120, in its evaluation")
    assert state.allows("resume", steering=True) and not state.allows("pause", steering=True)
    state.resumed()
    assert (state.state, state.detail, state.pause_requested) == ("evaluating", "", False)  # it goes on


def test_a_pause_pressed_between_steps_is_pausing_until_the_loop_holds() -> None:
    state = live_run()
    state.pause_pressed()
    assert (state.state, state.pause_requested) == ("pausing", True)
    state.busy(None)  # a save's reply, say: still only asked
    assert state.state == "pausing"
    state.paused(40)
    assert (state.state, state.detail) == ("paused", "at step 40")
    state.busy("saving")  # a save while paused shows, then paused again
    assert (state.state, state.detail) == ("saving", "")
    state.busy(None)
    assert (state.state, state.detail) == ("paused", "at step 40")


def test_a_divergence_holds_for_good_and_its_message_stays() -> None:
    state = live_run()
    state.diverged_now()
    assert (state.state, state.diverged) == ("paused", True)
    said = state.detail
    state.busy(None)
    state.busy("saving")  # a refused save's reply: the divergence's line stays
    assert state.state in ("saving", "paused")
    state.busy(None)
    assert (state.state, state.detail) == ("paused", said)


def test_a_stop_asked_by_any_viewer_then_the_end() -> None:
    state = live_run()
    state.stop_asked()
    assert (state.state, state.detail) == ("stopping", "saving a checkpoint, then stopping")
    state.busy("evaluating", "1/2")  # nothing shows over a stop
    assert state.state == "stopping"
    state.ended("finished", "stopped at step 12 · best val 2.0000 at step 10")
    assert (state.state, state.finished) == ("finished", True)
    assert not state.allows("pause", steering=True) and not state.allows("resume", steering=True)
    state.stop_asked()  # another viewer's stop after the end changes nothing
    assert state.state == "finished"


def test_a_run_that_is_not_running_is_shown_as_it_was_left_and_offers_no_steering() -> None:
    state = RunState()
    state.attached(live=False, paused=False)
    state.run_started(replaying=True)
    state.ended("finished", "done at step 30 · best val 1.9000 at step 30")
    state.not_running("finished")
    assert state.state == "finished"
    assert state.detail == "not running (finished) · done at step 30 · best val 1.9000 at step 30"
    state.caught_up()  # nothing is running to ask what it does
    assert state.state == "finished"
    assert state.allows("pause", steering=True) is False and state.allows("detach", steering=False) is False
    assert state.allows("save", steering=True) is None  # shown dimmed: no process to ask
    assert state.allows("generate", steering=False) is True


def test_a_late_viewer_that_attaches_to_a_paused_run_shows_it_paused() -> None:
    state = RunState()
    state.attached(live=True, paused=True)
    state.run_started(replaying=True)  # the catch-up
    state.paused(300)
    state.caught_up()
    assert (state.state, state.detail) == ("paused", "at step 300")


def test_a_read_only_view_dims_the_keys_that_steer() -> None:
    state = RunState(read_only=True)
    state.attached(live=True, paused=False)
    state.run_started(replaying=True)
    assert state.allows("pause", steering=True) is None and state.allows("save", steering=True) is None
    assert state.allows("read_only", steering=False) is True
    assert state.allows("generate", steering=False) is True
    assert RunState().allows("read_only", steering=False) is False


def test_the_state_loads_without_textual_or_torch() -> None:
    code = ("import sys; import chargpt_tui.dashboard.state; "
            "print(sorted(m for m in ('textual', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
