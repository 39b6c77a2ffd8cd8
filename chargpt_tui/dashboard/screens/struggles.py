"""Where the model struggles (w): the loss at each character of a validation passage, on the
weights as they are now (a snapshot; training goes on), each character shaded by its loss, and
the mean loss by kind of character: where a character model learns first, and what it learns last."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from chargpt_tui.inside import render
from model.tokenizer import CharTokenizer

if TYPE_CHECKING:
    from model.gpt import GPT


class StrugglesScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("r", "compute", "Again")]

    class Computed(Message):
        def __init__(self, passage: str, losses: list[float], classes: list[tuple[str, int, float]]) -> None:
            super().__init__()
            self.passage, self.losses, self.classes = passage, losses, classes

    def __init__(self, snapshot: Callable[[], GPT], tokenizer: CharTokenizer, passage: str | None,
                 source: str = "the weights as they are now") -> None:
        super().__init__()
        self.source = source
        self.snapshot = snapshot
        self.tokenizer = tokenizer
        # the passage's characters the model knows (a text's validation part may hold none it does not)
        self.passage = "".join(c for c in passage if c in tokenizer.stoi) if passage else ""
        self.losses: list[float] = []  # the latest computed (tests read them)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="struggles-dialog"):
            title = Text.assemble(("Where the model struggles: a validation passage", "bold"), f" · {self.source}")
            yield Static(title, id="struggles-title")
            yield Static("", id="struggles-problem")
            yield Static(render.loss_legend(), id="struggles-legend")
            yield Static("", id="struggles-text")
            yield Static("", id="struggles-table")
            yield Static(Text("r computes again (a running run: on its weights as they are then) · Esc closes",
                              style="dim"),
                         id="struggles-hint")

    def on_mount(self) -> None:
        if len(self.passage) < 2:
            self._problem("the run's text is not a file on this machine: no validation passage to look at "
                          "(chargpt-tui inspect CKPT --loss TEXT_FILE looks at any text)")
            return
        self.action_compute()

    def action_compute(self) -> None:
        if len(self.passage) >= 2:
            self.query_one("#struggles-problem", Static).update(Text("computing…", style="dim"))
            self.run_worker(self._compute, thread=True, exclusive=True, exit_on_error=False, group="struggles")

    def _compute(self) -> None:
        from model.inspection import char_losses, loss_by_class  # PyTorch: here, not when the viewer starts

        losses = char_losses(self.snapshot(), self.tokenizer.encode(self.passage)).tolist()
        classes = [(c.name, c.count, c.mean) for c in loss_by_class(self.passage, losses)]
        self.post_message(self.Computed(self.passage, losses, classes))

    def on_struggles_screen_computed(self, message: Computed) -> None:
        self.losses = message.losses
        mean = sum(message.losses) / len(message.losses)
        self.query_one("#struggles-problem", Static).update(
            Text(f"{len(message.losses):,} characters, mean loss {mean:.4f}"))
        self.query_one("#struggles-text", Static).update(
            render.shaded(message.passage, [None, *message.losses], render.loss_style))
        self.query_one("#struggles-table", Static).update(render.class_table(message.classes))

    def _problem(self, text: str) -> None:
        self.query_one("#struggles-problem", Static).update(Text(text, style="bold red"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self._problem(f"could not compute: {event.worker.error}")

    def action_close(self) -> None:
        self.workers.cancel_group(self, "struggles")
        self.dismiss(None)
