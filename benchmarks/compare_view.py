"""Three runs and a fork compared: trains them, opens the runs browser on them with all four
selected, and saves the picture README shows (docs/compare.svg).

    python benchmarks/compare_view.py TEXT [--steps 600]     (tiny Shakespeare makes README's picture)

The runs: the cpu preset at its learning rate, at a third of it and at twice it, for --steps
steps each; then a fork of the first from its best checkpoint with its dropout raised to 0.1 and
a constant, lower learning rate for --steps more. Prints each run's best validation loss, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chargpt_tui.commands.cli import main as cli  # noqa: E402
from chargpt_tui.dashboard.widgets.compare_chart import CompareChart  # noqa: E402
from chargpt_tui.runs_browser.app import RunsApp  # noqa: E402
from chargpt_tui.wire.run_table import read_rows  # noqa: E402


def train(text: str, root: Path, steps: int) -> None:
    common = ["--headless", "--max-iters", str(steps), "--eval-interval", str(steps // 8), "--dtype", "float32"]
    for name, lr in (("cpu-lr2e-3", "2e-3"), ("cpu-lr7e-4", "7e-4"), ("cpu-lr4e-3", "4e-3")):
        assert cli([text, "--preset", "cpu", *common, "--learning-rate", lr, "--out-dir", str(root / name)]) == 0
    fork = ["--fork", f"{root / 'cpu-lr2e-3'}@best", "--headless", "--max-iters", str(2 * steps), "--eval-interval",
            str(steps // 8), "--dropout", "0.1", "--lr-schedule", "constant", "--learning-rate", "5e-4",
            "--out-dir", str(root / "fork-dropout0.1")]
    assert cli(fork) == 0


async def shoot(root: Path, out: Path) -> None:
    app = RunsApp(root)
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.loaded:
            await pilot.pause(0.05)
        for _ in range(len(app.rows)):
            await pilot.press("space", "down")
        chart = app.query_one(CompareChart)
        while len({d[0] for d in chart.drawn}) < len(app.rows):
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        app.save_screenshot(out.name, str(out.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("text")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default=str(ROOT / "docs" / "compare.svg"))
    parser.add_argument("--runs", metavar="DIR", help="runs made before by this script: only the picture")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="compare-")) / "runs"
    if not args.runs:
        train(args.text, root, args.steps)
    os.chdir(root.parent)  # the picture says "runs in runs", as a user's would
    root = Path(root.name)
    asyncio.run(shoot(root, out))
    print(json.dumps({r.name: r.summary.best_val_loss for r in read_rows(root)}))


if __name__ == "__main__":
    main()
