"""The line at the top: what is being trained, on what, and what is happening now."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.format import si

STATE_STYLES = {
    "starting": "bold yellow", "training": "bold green", "evaluating": "bold cyan", "paused": "bold yellow",
    "saving": "bold cyan", "stopping": "bold yellow", "finished": "bold green", "failed": "bold red",
    "pausing": "bold yellow", "stopped": "bold yellow", "crashed": "bold red",
}


class StatusBar(Widget):
    state: reactive[str] = reactive("starting")
    detail: reactive[str] = reactive("")
    run: reactive[str] = reactive("")
    view: reactive[str] = reactive("")  # what kind of viewer this is, when not the usual ("read-only")

    def set_run(self, corpus: str, n_chars: int, n_params: int, preset: str, device: str) -> None:
        self.run = f"{corpus} · {si(n_chars)} chars · {si(n_params)} params · preset {preset} · {device}"

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.state.upper()} ", style=f"reverse {STATE_STYLES.get(self.state, 'bold')}")
        if self.view:
            text.append(f" {self.view} ", style="reverse bold magenta")
        if self.detail:
            text.append(f" {self.detail}", style=STATE_STYLES.get(self.state, "bold"))
        text.append(f"  {self.run}")
        return text
