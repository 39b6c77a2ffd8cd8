"""The attention view (a): where the model looks, for a prompt up to its block size, on the
weights as they are now (a snapshot, as the generation prompt takes; training goes on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from chargpt_tui.inside import render
from model.tokenizer import CharTokenizer

from ..widgets.attention_map import AttentionMap

if TYPE_CHECKING:
    from model.gpt import GPT

NEWLINE = "↵"


class AttentionScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close")]

    class Computed(Message):
        def __init__(self, chars: str, maps: list[list[list[list[float]]]]) -> None:
            super().__init__()
            self.chars, self.maps = chars, maps

    def __init__(self, snapshot: Callable[[], GPT], tokenizer: CharTokenizer, prompt: str = "",
                 source: str = "the weights as they are now") -> None:
        super().__init__()
        self.source = source
        self.snapshot = snapshot
        self.tokenizer = tokenizer
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        with Vertical(id="attention-dialog"):
            yield Static(Text.assemble(("Where the model looks", "bold"), f" · {self.source}"), id="attention-title")
            yield Input(self.prompt.replace("\n", NEWLINE), id="attention-prompt", compact=True,
                        placeholder=f"a prompt (its last block of characters is shown; {NEWLINE} is a newline)")
            yield Static("", id="attention-problem")
            yield AttentionMap(id="attention-map")
            yield Static(render.heat_legend(), id="attention-legend")
            yield Static(Text("Enter computes · ↑↓ a query character · ←→ head · [ ] layer · h all heads of "
                              "the layer · Tab prompt/map · Esc closes", style="dim"), id="attention-hint")

    def on_mount(self) -> None:
        self.query_one("#attention-prompt", Input).focus()
        if self.prompt:
            self._submitted()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        prompt = self.query_one("#attention-prompt", Input).value
        if NEWLINE not in self.tokenizer.stoi:  # an input line holds no newline: it is typed as ↵
            prompt = prompt.replace(NEWLINE, "\n")
        unknown = self.tokenizer.unknown_chars(prompt)
        problem = ("not in the vocabulary: " + " ".join(repr(c) for c in unknown)) if unknown else \
            "" if prompt else "type a prompt first"
        self.query_one("#attention-problem", Static).update(Text(problem, style="bold red"))
        if not problem:
            self.compute(prompt)

    @work(thread=True, exclusive=True, exit_on_error=False, group="attention")
    def compute(self, prompt: str) -> None:
        from model.inspection import attention_maps  # PyTorch: here, not when the viewer starts

        model = self.snapshot()
        block = model.config.block_size
        maps = attention_maps(model, self.tokenizer.encode(prompt)).tolist()
        self.post_message(self.Computed(prompt[-block:], maps))

    def on_attention_screen_computed(self, message: Computed) -> None:
        shown = self.query_one(AttentionMap)
        shown.show(message.chars, message.maps)
        shown.focus()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.query_one("#attention-problem", Static).update(
                Text(f"could not compute: {event.worker.error}", style="bold red"))

    def action_close(self) -> None:
        self.workers.cancel_group(self, "attention")
        self.dismiss(None)
