"""The generation prompt: text streams from a snapshot of the model while training goes on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static
from textual.worker import Worker, WorkerState, get_current_worker

if TYPE_CHECKING:
    from model.gpt import GPT

from chargpt_tui.inside import render
from model.config import TEMPERATURE_RULE, temperature_ok
from model.tokenizer import CharTokenizer

from ..widgets.generated_text import GeneratedText, Top

TOP_K_SHOWN = 5  # the most likely characters listed for the one at the cursor


class GenerateScreen(ModalScreen[None]):
    """Enter generates; Esc stops and closes."""

    BINDINGS = [Binding("escape", "close", "Stop and close")]

    class TextGenerated(Message):
        def __init__(self, text: str, probs: list[float], tops: list[Top]) -> None:
            super().__init__()
            self.text = text
            self.probs = probs  # the probability each character was drawn with
            # what each was drawn from (temperature and top-k applied): its TOP_K_SHOWN most
            # likely characters, (id, probability); never the whole vocabulary's (thousands of
            # characters in some texts, for each of thousands generated)
            self.tops = tops

    def __init__(self, snapshot: Callable[[], GPT], tokenizer: CharTokenizer, seed: int = 1337,
                 source: str = "the model as it is now") -> None:
        super().__init__()
        self.source = source
        self.snapshot = snapshot
        self.tokenizer = tokenizer
        self.seed = seed
        self.generated = ""  # everything streamed by the latest generation (tests read it)

    def compose(self) -> ComposeResult:
        with Vertical(id="generate-dialog"):
            yield Label(Text.assemble(("Generate", "bold"), f" from {self.source}"), id="generate-title")
            yield Input(placeholder="prompt (empty: start from a newline)", id="prompt")
            with Horizontal(id="generate-options"):
                yield Label("tokens")
                yield Input("300", type="integer", id="max-tokens", max_length=6)
                yield Label("temp")
                yield Input("0.8", type="number", id="temperature", max_length=6)
                yield Label("top-k")
                yield Input("", type="integer", id="top-k", placeholder="all", max_length=6)
            yield Static("", id="generate-problem")
            yield Static(render.probability_legend(), id="generate-legend")
            with VerticalScroll(id="generate-output"):
                yield GeneratedText(id="generate-text")
            yield Static("", id="generate-top-k")
            yield Static(Text("Enter generates · Tab to the text, then ← → : what the model expected at each "
                              "character · Esc stops and closes", style="dim"), id="generate-hint")

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()

    @on(Input.Changed, "#prompt")
    def _check_prompt(self, event: Input.Changed) -> None:
        self._show_problem(self._prompt_problem(event.value))

    def _prompt_problem(self, prompt: str) -> str:
        unknown = self.tokenizer.unknown_chars(prompt)
        if unknown:
            return "not in the vocabulary: " + " ".join(repr(c) for c in unknown)
        return ""

    def _show_problem(self, problem: str) -> None:
        # (the problem may quote the prompt's characters: shown literally, never as markup)
        self.query_one("#generate-problem", Static).update(Text(problem, style="bold red"))

    @on(Input.Submitted)
    def _submitted(self) -> None:
        prompt = self.query_one("#prompt", Input).value
        problem = self._prompt_problem(prompt)
        try:
            max_tokens = int(self.query_one("#max-tokens", Input).value or "300")
            temperature = float(self.query_one("#temperature", Input).value or "1.0")
            top_k_text = self.query_one("#top-k", Input).value
            top_k = int(top_k_text) if top_k_text else None
        except ValueError:
            problem = problem or "tokens, temperature and top-k must be numbers"
        else:
            if max_tokens <= 0 or (top_k is not None and top_k <= 0):
                problem = problem or "tokens and top-k must be positive"
            elif not temperature_ok(temperature):
                problem = problem or f"temperature must be {TEMPERATURE_RULE}"
        self._show_problem(problem)
        if problem:
            return
        self.query_one(GeneratedText).start(prompt)
        self.query_one("#generate-top-k", Static).update("")
        self.generated = ""
        self.generate(prompt, max_tokens, temperature, top_k)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def generate(self, prompt: str, max_tokens: int, temperature: float, top_k: int | None) -> None:
        worker = get_current_worker()
        import torch  # here, not at the top: a viewer starts without PyTorch

        model = self.snapshot()  # the weights as they are now, taken between training steps
        device = next(model.parameters()).device
        ids = self.tokenizer.encode(prompt) if prompt else [self.tokenizer.start_id()]
        context = torch.tensor([ids], dtype=torch.long, device=device)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        self.seed += 1  # a new text each time Enter is pressed
        chars = self.tokenizer.chars
        pending: list[str] = []
        drawn: list[torch.Tensor] = []  # each step's distribution (generate_stream appends)
        last_post = time.monotonic()

        def post() -> None:
            nonlocal pending
            dists = torch.cat(drawn[:len(pending)])  # (characters, vocabulary)
            del drawn[:len(pending)]  # handed on: nothing kept here
            ids = torch.tensor([self.tokenizer.stoi[c] for c in pending])
            probs = dists.gather(1, ids[:, None])[:, 0].tolist()
            best = dists.topk(min(TOP_K_SHOWN, dists.shape[1]), dim=1)
            tops = [tuple((i, p) for i, p in zip(row_ids, row_ps) if p > 0)
                    for row_ids, row_ps in zip(best.indices.tolist(), best.values.tolist())]
            self.post_message(self.TextGenerated("".join(pending), probs, tops))
            pending = []

        stream = model.generate_stream(context, max_tokens, temperature, top_k, generator, distributions=drawn)
        for next_id in stream:
            if worker.is_cancelled:
                return
            pending.append(chars[int(next_id[0])])
            now = time.monotonic()
            if now - last_post >= 0.03:  # stream in small chunks, ~30 a second
                post()
                last_post = now
        if pending:
            post()

    def on_generate_screen_text_generated(self, message: TextGenerated) -> None:
        self.generated += message.text
        self.query_one(GeneratedText).add(message.text, message.probs, message.tops)
        if self.query_one(GeneratedText).cursor is None:
            self.query_one("#generate-output", VerticalScroll).scroll_end(animate=False)

    @on(GeneratedText.CursorMoved)
    def _show_top_k(self, event: GeneratedText.CursorMoved) -> None:
        """At the cursor: the character drawn, and the most likely ones it was drawn from."""
        shown = self.query_one("#generate-top-k", Static)
        text = self.query_one(GeneratedText)
        if event.index is None or event.index >= len(text.tops):
            shown.update("")
            return
        char = text.chars[event.index]
        head = Text(f"character {text.dropped + event.index + 1}: {render.visible(char)} drawn with "
                    f"{100 * text.probs[event.index]:.1f}%; the most likely were:\n")
        shown.update(head + render.top_k_bars([(self.tokenizer.chars[i], p) for i, p in text.tops[event.index]]))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self._show_problem(f"generation failed: {event.worker.error}")

    def action_close(self) -> None:
        self.workers.cancel_group(self, "generate")
        self.dismiss(None)
