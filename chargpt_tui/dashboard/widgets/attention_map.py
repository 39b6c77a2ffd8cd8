"""Attention weights as a heatmap, the prompt's characters on both axes: one head, or every head
of a layer side by side where the width allows. A cursor row (the chosen query character) is
listed as numbers under the map; the map shows a window of rows and columns that follows it, so
a prompt of a whole block reads at 80x24."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from chargpt_tui.inside import render


class AttentionMap(Widget, can_focus=True):
    BINDINGS = [
        Binding("up", "query(-1)", "Query up", show=False),
        Binding("down", "query(1)", "Query down", show=False),
        Binding("left", "head(-1)", "Head", show=False),
        Binding("right", "head(1)", "Head", show=False),
        Binding("left_square_bracket", "layer(-1)", "Layer", show=False),
        Binding("right_square_bracket", "layer(1)", "Layer", show=False),
        Binding("h", "all_heads", "All heads", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.chars = ""
        self.maps: list[list[list[list[float]]]] = []  # [layer][head][query][key]
        self.layer_index = 0
        self.head_index = 0
        self.query_index = 0
        self.all_heads = False

    def show(self, chars: str, maps: list[list[list[list[float]]]]) -> None:
        self.chars, self.maps = chars, maps
        self.layer_index = min(self.layer_index, len(maps) - 1)
        self.head_index = min(self.head_index, len(maps[0]) - 1)
        self.query_index = len(chars) - 1  # the last character: where the next one is predicted from
        self.refresh()

    def action_query(self, step: int) -> None:
        if self.chars:
            self.query_index = min(max(self.query_index + step, 0), len(self.chars) - 1)
            self.refresh()

    def action_head(self, step: int) -> None:
        if self.maps:
            self.head_index = (self.head_index + step) % len(self.maps[0])
            self.refresh()

    def action_layer(self, step: int) -> None:
        if self.maps:
            self.layer_index = (self.layer_index + step) % len(self.maps)
            self.refresh()

    def action_all_heads(self) -> None:
        self.all_heads = not self.all_heads
        self.refresh()

    def heads_side_by_side(self) -> int:
        """How many heads fit across (all of the layer's, or one)."""
        if not self.maps or not self.all_heads:
            return 1
        width = min(len(self.chars), self.size.width - 2) + 3
        return max(1, min(len(self.maps[0]), self.size.width // width))

    def render(self) -> Text:
        if not self.maps:
            return Text("type a prompt and press Enter", style="dim")
        T = len(self.chars)
        n_heads = len(self.maps[0])
        across = self.heads_side_by_side()
        cols = min(T, max(4, (self.size.width - 2) // across - 3))  # never more than the prompt has
        rows = min(T, max(3, self.size.height - 4))
        first_col = max(0, min(self.query_index + 1 - cols, T - cols))  # keys up to the query: its row in view
        first_row = max(0, min(self.query_index - rows // 2, T - rows))
        heads = [(self.head_index + n) % n_heads for n in range(across)] if across > 1 else [self.head_index]
        window = dict(rows=range(first_row, first_row + rows), cols=range(first_col, first_col + cols),
                      cursor=self.query_index)
        maps = [render.heatmap(self.chars, self.maps[self.layer_index][h], **window).split("\n") for h in heads]
        out = Text()
        titles = [f"layer {self.layer_index + 1}/{len(self.maps)} · head {h + 1}/{n_heads}" for h in heads]
        out.append("   ".join(t.ljust(cols + 2) for t in titles).rstrip(), style="bold")
        for parts in zip(*maps):
            out.append("\n")
            for n, part in enumerate(parts):
                out.append_text(part)
                if n < len(parts) - 1:  # the next head's map in line with its title
                    out.append(" " * max(1, cols + 2 - part.cell_len + 3))
        out.append("\n")
        row = self.maps[self.layer_index][self.head_index][self.query_index]
        out.append_text(render.attention_row(self.chars, row, self.query_index))
        return out
