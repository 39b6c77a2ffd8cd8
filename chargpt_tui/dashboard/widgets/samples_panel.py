"""The periodic samples: the newest at the bottom, earlier ones a scroll away."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog


class SamplesPanel(RichLog):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, auto_scroll=True, min_width=20, **kwargs)  # type: ignore[arg-type]
        self.latest_iter: int | None = None
        self.latest_text = ""

    def add_sample(self, it: int, text: str) -> None:
        self.latest_iter, self.latest_text = it, text
        self.border_title = f"sample at step {it:,}"
        self.write(Text(f"── step {it:,} ──", style="bold dim"))
        self.write(Text(text))
