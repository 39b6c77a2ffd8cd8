"""The line at the top: what is happening now, at which step, with which preset on which device,
and what is being trained. What does not fit is cut from the text's name first, then the sizes:
the state, the step, the preset and the device stay visible at 80 columns."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.format import count, si

STATE_STYLES = {
    "starting": "bold yellow", "training": "bold green", "evaluating": "bold cyan", "paused": "bold yellow",
    "saving": "bold cyan", "stopping": "bold yellow", "finished": "bold green", "failed": "bold red",
    "pausing": "bold yellow", "stopped": "bold yellow", "crashed": "bold red",
}
MIN_NAME = 12  # a text's name is cut to no fewer characters than this (then left out)


class StatusBar(Widget):
    state: reactive[str] = reactive("starting")
    detail: reactive[str] = reactive("")
    step: reactive[str] = reactive("")  # "step 886/2,200"
    run: reactive[tuple[str, ...]] = reactive(())  # (name, sizes, preset and device)
    view: reactive[str] = reactive("")  # what kind of viewer this is, when not the usual ("read-only")

    def set_run(self, corpus: str, n_chars: int, n_params: int, preset: str, device: str) -> None:
        self.run = (corpus, f"{si(n_chars)} chars · {si(n_params)} params", f"preset {preset} · {device}")

    def set_step(self, it: int, max_iters: int) -> None:
        self.step = f"step {count(it)}/{count(max_iters)}"

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.state.upper()} ", style=f"reverse {STATE_STYLES.get(self.state, 'bold')}")
        if self.view:
            text.append(f" {self.view} ", style="reverse bold magenta")
        if self.detail:
            text.append(f" {self.detail}", style=STATE_STYLES.get(self.state, "bold"))
        if self.step:
            text.append(f"  {self.step}", style="bold")
        if self.run:
            text.append(f"  {fit_run(self.run, self.size.width - text.cell_len - 2)}")
        return text


def fit_run(parts: tuple[str, ...], width: int) -> str:
    """The run's description in `width` cells: the preset and device kept; the text's name cut
    (to MIN_NAME at least) before the sizes go, and left out only when even that cannot fit."""
    name, sizes, kept = parts
    full = f"{name} · {sizes} · {kept}"
    if len(full) <= width:
        return full
    for rest in (f"{sizes} · {kept}", kept):
        room = width - len(rest) - 3
        if room >= MIN_NAME:
            return f"{_cut(name, room)} · {rest}"
    return kept


def _cut(name: str, room: int) -> str:
    return name if len(name) <= room else name[: room - 1].rstrip() + "…"
