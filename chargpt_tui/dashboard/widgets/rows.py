"""A panel's text: labelled rows and a progress bar, as one Rich Text.

The panels used Rich tables; a table is laid out anew at each repaint (0.8 ms for the progress
panel, against 0.14 ms for the same text built here), and every millisecond a viewer spends is
taken from training on a machine whose cores all train.
"""

from __future__ import annotations

from rich.text import Text

BAR_STYLE, BAR_DONE_STYLE, BAR_BACK_STYLE = "rgb(249,38,114)", "rgb(114,156,31)", "grey23"  # Rich's bar.*


def label_rows(rows: list[tuple[str, str | Text]], label_width: int) -> Text:
    """One line a row: the label dim and padded to label_width, then the value; lines too long
    for the panel end in an ellipsis instead of wrapping."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for i, (label, value) in enumerate(rows):
        if i:
            text.append("\n")
        text.append(label.ljust(label_width) + " ", style="dim")
        text.append(value)
    return text


def progress_bar(completed: int, total: int, width: int) -> Text:
    """What rich.progress_bar.ProgressBar draws, in half cells: ━━━╸ done, then the rest dim."""
    width = max(0, width)
    halves = int(width * 2 * min(total, max(0, completed)) / total) if total > 0 else width * 2
    full, half = divmod(halves, 2)
    done_style = BAR_DONE_STYLE if completed >= total else BAR_STYLE
    bar = Text(no_wrap=True, end="")
    bar.append("━" * full + "╸" * half, style=done_style)
    rest = width - full - half
    if rest and full and not half:
        bar.append("╺", style=BAR_BACK_STYLE)
        rest -= 1
    bar.append("━" * rest, style=BAR_BACK_STYLE)
    return bar
