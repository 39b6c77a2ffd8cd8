"""The dashboard's c: which other runs of the same text to overlay on the loss chart."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import SelectionList, Static
from textual.widgets.selection_list import Selection

from chargpt_tui.wire.run_table import RunRow

MAX_OVERLAYS = 7  # as many as the chart has colours for


class OverlayPicker(ModalScreen[list[str] | None]):
    """Space picks, Enter overlays the picked runs, Esc leaves the chart as it was."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "done", "Overlay", priority=True)]

    def __init__(self, rows: list[RunRow], chosen: list[str]) -> None:
        super().__init__()
        self.rows = rows
        self.chosen = chosen

    def compose(self) -> ComposeResult:
        with Vertical(id="overlay-dialog"):
            yield Static(Text("Overlay other runs of this text", style="bold"))
            if not self.rows:
                yield Static("no other runs of this text beside this one")
            yield SelectionList[str](*[Selection(self._label(r), r.path, r.path in self.chosen) for r in self.rows],
                                     id="overlay-runs")
            yield Static(Text(f"space picks (up to {MAX_OVERLAYS}) · Enter overlays · Esc cancels", style="dim"))

    @staticmethod
    def _label(row: RunRow) -> Text:
        s = row.summary
        best = f"best {s.best_val_loss:.4f} @{s.best_iter:,}" if s.best_val_loss is not None else "no evaluation yet"
        return Text.assemble(row.name, (f"  {best} · {s.state} · lr {row.cell('train.learning_rate')}", "dim"))

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def action_done(self) -> None:
        picked = list(self.query_one(SelectionList).selected)
        if len(picked) > MAX_OVERLAYS:
            self.notify(f"at most {MAX_OVERLAYS} runs at once", severity="warning")
            return
        self.dismiss(picked)

    def action_cancel(self) -> None:
        self.dismiss(None)
