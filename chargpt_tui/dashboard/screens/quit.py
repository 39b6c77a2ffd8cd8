"""The question `q` asks while a run trains: stop it, or leave it training?"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class QuitScreen(ModalScreen[str | None]):
    """Returns "stop" (q or Enter), "detach" (d), or None (Esc)."""

    BINDINGS = [
        Binding("q,enter", "answer('stop')", "Stop training"),
        Binding("d", "answer('detach')", "Detach"),
        Binding("escape", "answer(None)", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog"):
            yield Static(
                "[b]The run is training.[/b]\n\n"
                "[b]q[/b] or [b]Enter[/b]  stop it, with a checkpoint, and quit\n"
                "[b]d[/b]           detach: quit, training goes on (chargpt-tui attach)\n"
                "[b]Esc[/b]         cancel",
                id="quit-text",
            )

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)
