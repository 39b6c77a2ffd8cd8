"""What the compare view shows of the selected runs: their series for the chart, and beside it a
legend, the settings in which they differ, and each run's latest sample. Text from disk (names,
samples) is shown literally."""

from __future__ import annotations

from rich.text import Text

from chargpt_tui.dashboard.widgets.compare_chart import PALETTE, Series
from chargpt_tui.wire.run_curves import RunCurves
from chargpt_tui.wire.run_table import RunRow, differing

Picked = list[tuple[RunRow, RunCurves, int]]  # (row, curves, colour)
SAMPLE_LINES = 4


def compare_series(picked: Picked, by_time: bool) -> list[Series]:
    return [Series(row.name, PALETTE[colour], curves.train_points(by_time), curves.val_points(by_time))
            for row, curves, colour in picked]


def compare_side(picked: Picked) -> Text:
    text = Text()
    text.append("runs\n", style="bold")
    for row, _curves, colour in picked:
        s = row.summary
        text.append("● ", style=f"color({PALETTE[colour]})")
        text.append(row.name)
        best = f"  best {s.best_val_loss:.4f} @{s.best_iter:,}" if s.best_val_loss is not None else ""
        text.append(f"{best}  {s.state}\n", style="dim")
        if row.parent is not None:
            text.append(f"    forked from {row.parent.name} @{row.parent.iter:,} ({row.parent.checkpoint})\n",
                        style="dim")
    rows = [row for row, _, _ in picked]
    diffs = differing(rows)
    text.append("\ndifferences\n" if diffs else "\nthe same settings\n", style="bold")
    for key, heading in diffs:
        text.append(f"{heading:<10}")
        for row, _, colour in picked:
            text.append(" ●", style=f"color({PALETTE[colour]})")
            text.append(f" {row.cell(key)}")
        text.append("\n")
    text.append("\nlatest samples\n", style="bold")
    for row, curves, colour in picked:
        text.append("● ", style=f"color({PALETTE[colour]})")
        where = f" @{curves.sample_iter:,}" if curves.sample_iter is not None else ""
        text.append(f"{row.name}{where}\n", style="dim")
        lines = curves.sample.strip("\n").splitlines()[:SAMPLE_LINES] if curves.sample else ["(none yet)"]
        for line in lines:
            text.append(f"  {line[:200]}\n")
    return text
