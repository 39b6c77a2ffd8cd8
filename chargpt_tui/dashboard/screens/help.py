"""The keys, on `?` or F1."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("space, p", "pause / resume (at the next step)"),
    ("s", "save a checkpoint now (ckpt.pt)"),
    ("g", "generate text from the model as it is now"),
    ("e", "evaluate train and val loss now"),
    ("l", "log / linear loss axis"),
    ("+, -", "zoom the chart's iterations in / out (or the mouse wheel)"),
    ("[, ]", "pan a zoomed chart back / on; 0: the whole run"),
    ("c", "compare: overlay other runs of the same text on the chart"),
    ("a", "attention: where the model looks, by layer and head, for a prompt"),
    ("w", "where it struggles: the loss at each character of a validation passage"),
    ("d", "detach: close the dashboard, training goes on"),
    ("q", "quit; while training, asks: stop the run, or detach"),
    ("ctrl+q, ctrl+c", "stop the run with a checkpoint, then quit"),
    ("ctrl+p", "command palette"),
    ("?, F1", "this help"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"[b]{key:>10}[/b]  {what}" for key, what in KEYS)
        with Vertical(id="help-dialog"):
            yield Static("[b]chargpt-tui keys[/b]\n\n" + lines + "\n\n[dim]Esc closes[/dim]", id="help-text")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
