"""The dashboard's views of the model's inside, on the weights as they are now (the snapshot the
generation prompt takes too; training goes on), or on a run that is not running its best.pt:
a, where it looks; w, where it struggles."""

from __future__ import annotations

from typing import Any

from chargpt_tui.wire.passages import validation_passage

from .screens import AttentionScreen, StrugglesScreen

PROMPT_CHARS = 64  # of the latest sample, as the attention view's first prompt


def open_inside_view(app: Any, view: str) -> None:
    if app.tokenizer is None:
        app.notify("the run's vocabulary is not known yet", severity="warning")
        return
    # a run that is not running: its best weights; a running one: the weights as they are now
    best = getattr(app.link, "best_snapshot", None)
    snapshot = best or app.link.snapshot
    source = app.link.best_checkpoint if best else "the weights as they are now"
    if view == "attention":
        sample = app.samples.latest_text.strip("\n")[:PROMPT_CHARS]
        app.push_screen(AttentionScreen(snapshot, app.tokenizer, sample, source))
    else:
        run_dir = getattr(app.link, "run_dir", None)
        passage = validation_passage(run_dir) if run_dir is not None else None
        app.push_screen(StrugglesScreen(snapshot, app.tokenizer, passage, source))
