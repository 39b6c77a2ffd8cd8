"""What the model computes, drawn as Rich Text: characters shaded by a probability or a loss,
the top-k next characters as bars, attention weights as a heatmap with the characters on both
axes, the loss by kind of character as a table. For `chargpt-tui inspect` (printed; plain when
piped) and the dashboard's views alike; plain values in (lists of floats), never PyTorch.

Colours are RGB; Rich brings them down to 256 (or 16) colours where the terminal has no more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.cells import cell_len
from rich.color import Color
from rich.style import Style
from rich.text import Text

BAR = "█▉▊▋▌▍▎▏"


def visible(char: str) -> str:
    """A character as one visible cell: newline and tab as symbols, other control characters as ·"""
    if char == "\n":
        return "↵"
    if char == "\t":
        return "⇥"
    if char == " ":
        return "␣"
    return char if char.isprintable() else "·"


def one_cell(char: str) -> str:
    """visible(char), or □ where that is not one cell wide (a CJK character takes two, a
    combining mark none): for the attention map's columns, a character each."""
    shown = visible(char)
    return shown if cell_len(shown) == 1 else "□"


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> Color:
    t = min(max(t, 0.0), 1.0)
    return Color.from_rgb(*(round(x + (y - x) * t) for x, y in zip(a, b)))


LOW, MID, HIGH = (150, 30, 30), (150, 130, 20), (30, 120, 50)  # red, amber, green backgrounds


def probability_style(p: float) -> Style:
    """Red (unlikely) through amber to green (what the model expected), by log probability:
    1 in 100 or less is red, 1 in 10 amber, near 1 green."""
    t = 1.0 + math.log10(max(p, 1e-12)) / 2.0  # 0.01 -> 0, 0.1 -> 0.5, 1 -> 1
    colour = _mix(LOW, MID, t * 2) if t < 0.5 else _mix(MID, HIGH, (t - 0.5) * 2)
    return Style(bgcolor=colour, color="white")


def loss_style(loss: float, worst: float = 6.0) -> Style:
    """Green (no surprise) to red (a loss of `worst` nats or more)."""
    t = min(max(loss / worst, 0.0), 1.0)
    colour = _mix(HIGH, MID, t * 2) if t < 0.5 else _mix(MID, LOW, (t - 0.5) * 2)
    return Style(bgcolor=colour, color="white")


def shaded(text: str, values: Sequence[float | None], style_of, plain: bool = False) -> Text:  # noqa: ANN001
    """Each character styled by its value (None: not shaded: the first character, which nothing
    came before). A newline shows as ↵ in its colour, then breaks the line. Plain: the text as
    it is, unstyled."""
    out = Text()
    for char, value in zip(text, values):
        if plain or value is None:
            out.append(char if char == "\n" or char.isprintable() else visible(char))
            continue
        out.append(visible(char) if char in "\n\t" or not char.isprintable() else char, style=style_of(value))
        if char == "\n":
            out.append("\n")
    return out


def probability_legend() -> Text:
    out = Text("probability the model gave each character: ")
    for p, label in ((0.005, "<1%"), (0.03, "3%"), (0.1, "10%"), (0.3, "30%"), (0.9, "90%")):
        out.append(f" {label} ", style=probability_style(p))
        out.append(" ")
    return out


def loss_legend(worst: float = 6.0) -> Text:
    out = Text("loss of each character (nats): ")
    for loss in (0.1, 1.0, 2.0, 3.0, 4.5, worst):
        out.append(f" {loss:g} ", style=loss_style(loss, worst))
        out.append(" ")
    return out


def top_k_bars(choices: Sequence[tuple[str, float]], width: int = 30) -> Text:
    """The most likely next characters, each with its probability as a bar."""
    out = Text()
    for n, (char, p) in enumerate(choices):
        if n:
            out.append("\n")
        cells = p * width
        full = int(cells)
        part = int((cells - full) * 8)
        bar = "█" * full + (BAR[8 - part] if part else "")
        shown = visible(char)
        out.append(" " * max(0, 2 - cell_len(shown)) + shown + " ", style="bold")
        out.append(f"{100 * p:5.1f}% ")
        out.append(bar, style="cyan")
    return out


HEAT_LOW, HEAT_HIGH = (20, 20, 40), (255, 210, 60)


def heatmap(chars: str, weights: Sequence[Sequence[float]], plain: bool = False, rows: range | None = None,
            cols: range | None = None, cursor: int | None = None) -> Text:
    """Attention weights: a row a query character (its label at the left), a column a key
    character (labels above, one cell each: see one_cell), each cell shaded by the weight; above
    the diagonal (the future, masked) a dim dot. Plain: a weight as one of ' .:-=+*#%@'. rows, cols: a window of the
    matrix (a screen that scrolls over a long prompt); cursor: the query row marked."""
    rows = rows if rows is not None else range(len(chars))
    cols = cols if cols is not None else range(len(chars))
    out = Text("  ")
    out.append("".join(one_cell(chars[k]) for k in cols), style="bold")
    ramp = " .:-=+*#%@"
    for q in rows:
        out.append("\n")
        out.append(one_cell(chars[q]), style="bold reverse" if q == cursor else "bold")
        out.append(" ")
        for k in cols:
            if k > q:
                out.append("·", style="grey30")
                continue
            w = float(weights[q][k])
            if plain:
                out.append(ramp[min(len(ramp) - 1, int(w * len(ramp)))])
            else:
                out.append(" ", style=Style(bgcolor=_mix(HEAT_LOW, HEAT_HIGH, w ** 0.5)))
    return out


def heat_legend() -> Text:
    out = Text("weight: ")
    for w in (0.0, 0.05, 0.2, 0.5, 1.0):
        out.append(f" {w:g} ", style=Style(bgcolor=_mix(HEAT_LOW, HEAT_HIGH, w ** 0.5),
                                           color="black" if w >= 0.5 else "white"))
        out.append(" ")
    out.append(" (· above the diagonal: the future, which a character cannot see)", style="dim")
    return out


def attention_row(chars: str, row: Sequence[float], query: int, top: int = 8) -> Text:
    """Where one query character looks, as numbers: its largest weights, largest first."""
    ranked = sorted(range(query + 1), key=lambda k: -float(row[k]))[:top]
    out = Text(f"position {query} ({visible(chars[query])}) looks at: ")
    out.append(",  ".join(f"{k} ({visible(chars[k])}) {float(row[k]):.3f}" for k in ranked))
    return out


def class_table(rows: Sequence[tuple[str, int, float]]) -> Text:
    """The mean loss by kind of character (name, count, mean), worst first."""
    out = Text(f"{'kind':<15}{'chars':>7}{'mean loss':>11}", style="bold")
    for name, count, mean in sorted(rows, key=lambda r: -r[2]):
        out.append(f"\n{name:<15}{count:>7}{mean:>11.3f}")
    return out
