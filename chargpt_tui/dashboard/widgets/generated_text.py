"""The generation prompt's text: the prompt as typed, then each generated character shaded by the
probability the model gave it. Focused (Tab), a cursor moves through the generated characters
(left, right, home, end) and the screen shows, for that position, the most likely characters of the
distribution it was drawn from (CursorMoved)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from chargpt_tui.inside import render

CURSOR = Style(reverse=True, bold=True)
MAX_KEPT = 5000  # generated characters shown (and what each was drawn from kept): the latest
Top = tuple[tuple[int, float], ...]  # a distribution's most likely characters: (id, probability)


class GeneratedText(Widget, can_focus=True):
    BINDINGS = [
        Binding("left", "move(-1)", "Back", show=False),
        Binding("right", "move(1)", "On", show=False),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
    ]

    class CursorMoved(Message):
        def __init__(self, index: int | None) -> None:
            super().__init__()
            self.index = index  # of the kept generated characters (None: no cursor)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.prompt = ""
        self.chars: list[str] = []  # generated (the latest MAX_KEPT)
        self.probs: list[float] = []  # the probability each was drawn with
        self.tops: list[Top] = []  # what each was drawn from: its most likely characters
        self.dropped = 0  # generated characters before the kept ones
        self.cursor: int | None = None

    def start(self, prompt: str) -> None:
        self.prompt, self.chars, self.probs, self.tops, self.dropped = prompt, [], [], [], 0
        self.cursor = None
        self.refresh(layout=True)

    def add(self, chars: str, probs: list[float], tops: list[Top]) -> None:
        self.chars.extend(chars)
        self.probs.extend(probs)
        self.tops.extend(tops)
        if len(self.chars) > MAX_KEPT:  # bounded: memory, and the time each redraw takes
            drop = len(self.chars) - MAX_KEPT + MAX_KEPT // 5
            del self.chars[:drop], self.probs[:drop], self.tops[:drop]
            self.dropped += drop
            self.prompt = ""
            if self.cursor is not None:
                self.cursor = max(0, self.cursor - drop)
        self.refresh(layout=True)

    def on_focus(self) -> None:
        if self.cursor is None and self.chars:
            self._set_cursor(len(self.chars) - 1)

    def on_blur(self) -> None:
        self._set_cursor(None)

    def action_move(self, step: int) -> None:
        if self.cursor is not None:
            self._set_cursor(min(max(self.cursor + step, 0), len(self.chars) - 1))

    def action_move_to(self, index: int) -> None:
        if self.chars:
            self._set_cursor(index % len(self.chars))

    def _set_cursor(self, index: int | None) -> None:
        self.cursor = index
        self.refresh()
        self.post_message(self.CursorMoved(index))

    def render(self) -> Text:
        text = Text(self.prompt)  # typed, not drawn: not shaded
        if self.dropped:
            text.append(f"… {self.dropped:,} earlier characters\n", style="dim")
        for i, (char, p) in enumerate(zip(self.chars, self.probs)):
            shown = render.visible(char) if char in "\n\t" or not char.isprintable() else char
            style = CURSOR if i == self.cursor else render.probability_style(p)
            text.append(shown, style=style)
            if char == "\n":
                text.append("\n")
        return text
