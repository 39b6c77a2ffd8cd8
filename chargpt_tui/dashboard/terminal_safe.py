"""Nothing a widget draws reaches the terminal as a control character.

Text from outside (a run folder's name, a message read back from disk, samples of a model
trained on a text that holds ANSI colour codes, which therefore generates ESC) is drawn as Rich
`Text`, so it is never read as markup. But Rich keeps ESC and most other control characters,
counting them zero cells wide, and a terminal obeys them: a folder named ``x\\x1b]0;title\\x07``
retitles the window, ``\\x1b[2J`` clears the screen, OSC 52 writes the clipboard. Every app of
this package draws through `ControlCharacters` (`get_line_filters`), which takes them out of every
line on its way to the screen, whichever widget drew it. They take no cells, so nothing moves.

    class SomeApp(App):
        def get_line_filters(self):
            return with_control_characters_removed(super().get_line_filters())
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter

from chargpt_tui.format import CONTROL


class ControlCharacters(LineFilter):
    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        if not any(CONTROL.search(s.text) for s in segments if not s.control):
            return segments
        cleaned = (s if s.control else s._replace(text=CONTROL.sub("", s.text)) for s in segments)
        return [s for s in cleaned if s.control or s.text]


CONTROL_CHARACTERS = ControlCharacters()


def with_control_characters_removed(filters: Sequence[LineFilter]) -> list[LineFilter]:
    return [*filters, CONTROL_CHARACTERS]
