"""The runs browser on many runs: how soon its table shows, and how fast ten long runs overlay.

    python benchmarks/runs_browser.py [--runs 200] [--long 20] [--long-steps 100000] [--keep DIR]

Makes --runs run directories in a temporary folder (metrics.jsonl and config.json as a run
writes them): --long of them of --long-steps steps (an evaluation every 500), the rest of 2,000,
their learning rates and dropouts varied. Then, in one process, with Textual's headless driver
at 160x48 (Pilot):

  table     seconds from starting `RunsApp` on the folder to its table being filled (every run
            read: state, best, settings), and the same for reading the rows alone (read_rows)
  select    ten long runs selected: seconds until their curves are read and drawn (each run's
            metrics.jsonl read whole, once; later only what is appended)
  redraw    the compare chart redrawn with those ten runs: median and worst of 20 redraws, each
            the plot built and its cells made (what a new point, a resize or a key costs)

Prints one JSON object. Timings vary with the machine: quote them with its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chargpt_tui.dashboard.widgets.compare_chart import CompareChart  # noqa: E402
from chargpt_tui.dashboard.widgets.loss_chart import plot_cells  # noqa: E402
from chargpt_tui.runs_browser.app import RunsApp  # noqa: E402
from chargpt_tui.wire.run_table import read_rows  # noqa: E402


def make_run(path: Path, steps: int, lr: float, dropout: float, rng: random.Random) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "model": {"n_layers": 4, "n_heads": 4, "n_embed": 128, "block_size": 256, "dropout": dropout},
        "train": {"max_iters": steps, "learning_rate": lr, "batch_size": 64, "lr_schedule": "cosine",
                  "eval_interval": 500, "seed": 1337},
        "corpus": {"name": "tinyshakespeare.txt"}, "vocab": "abc", "preset": "cpu",
    }))
    lines = [json.dumps({"event": "start", "iter": 0, "time_s": 0.0, "max_iters": steps})]
    best, best_iter = math.inf, 0
    for it in range(1, steps + 1):
        t = it * 0.3
        loss = 1.4 + 2.8 * math.exp(-it / (3000 * lr / 1e-3)) + rng.gauss(0, 0.05)
        lines.append(f'{{"event": "step", "iter": {it}, "time_s": {t:.3f}, "loss": {loss}, "lr": {lr}}}')
        if it % 500 == 0:
            val = loss + 0.1
            if val < best:
                best, best_iter = val, it
            lines.append(json.dumps({"event": "eval", "iter": it, "time_s": t, "train_loss": loss, "val_loss": val,
                                     "best_val_loss": best, "best_iter": best_iter, "is_best": val == best}))
        if it % 5000 == 0:
            lines.append(json.dumps({"event": "sample", "iter": it, "time_s": t, "text": "To be, or not to be"}))
    lines.append(json.dumps({"event": "finished", "iter": steps, "time_s": steps * 0.3, "best_val_loss": best,
                             "best_iter": best_iter, "stopped": False}))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


async def measure(root: Path, long_names: list[str]) -> dict[str, object]:
    started = time.perf_counter()
    rows = read_rows(root)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    app = RunsApp(root)
    result: dict[str, object] = {"runs": len(rows), "read_rows_s": round(read_s, 3)}
    async with app.run_test(size=(160, 48)) as pilot:
        while not app.loaded:
            await pilot.pause(0.01)
        result["table_s"] = round(time.perf_counter() - started, 3)
        chart = app.query_one(CompareChart)
        started = time.perf_counter()
        for name in long_names[:10]:
            app.state.selected[str(root / name)] = len(app.state.selected)
        app._update_compare(read=True)
        while len({d[0] for d in chart.drawn}) < min(10, len(long_names)):
            await pilot.pause(0.01)
        result["select_10_s"] = round(time.perf_counter() - started, 3)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            chart.redraw()
            plot_cells(chart)
            times.append(time.perf_counter() - t0)
        result["redraw_ms_median"] = round(1000 * statistics.median(times), 1)
        result["redraw_ms_max"] = round(1000 * max(times), 1)
        result["points_drawn"] = sum(len(d[3]) for d in chart.drawn)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--long", type=int, default=20)
    parser.add_argument("--long-steps", type=int, default=100_000)
    parser.add_argument("--keep", metavar="DIR", help="make the runs here and leave them")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="runs-bench-"))
    rng = random.Random(0)
    long_names = []
    try:
        if not any(root.iterdir()) if root.exists() else True:
            for n in range(args.runs):
                long = n < args.long
                name = f"run-{n:03d}"
                make_run(root / name, args.long_steps if long else 2000, rng.choice([3e-4, 1e-3, 2e-3]),
                         rng.choice([0.0, 0.1, 0.2]), rng)
        long_names = sorted(p.name for p in root.iterdir())[: args.long]
        print(json.dumps({**asyncio.run(measure(root, long_names)), "long_runs": args.long,
                          "long_steps": args.long_steps}))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
