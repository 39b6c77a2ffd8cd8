"""Time to quality: seconds from launching a run to each validation loss target, within a budget.

    python benchmarks/time_to_quality.py TEXT [--budget 600] [--targets 2.0,1.88,1.75,1.6] -- FLAGS...

Launches `chargpt-tui TEXT --headless FLAGS` (any training flags: --preset, sizes, --optimizer,
--dtype...) in a process of its own, reads its metrics.jsonl as it trains, and notes the wall
time from the launch to the first evaluation at or below each target; the run is stopped at the
budget if it has not finished. Prints one JSON object: the flags, the seconds to each target
(null: not reached), the best validation loss and when, the steps done, the dtype it trained in.

Run alone on the machine (anything else running skews it), and give the CPU with the figures.
The sweep that chose the `cpu-10min` preset is `benchmarks/cpu_10min_sweep.sh`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("text")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds from launch (600)")
    parser.add_argument("--targets", default="2.0,1.88,1.75,1.6")
    args, flags = parser.parse_known_args()  # the rest (after --): the run's flags
    flags = [f for f in flags if f != "--"]
    targets = sorted((float(t) for t in args.targets.split(",")), reverse=True)
    out = Path(tempfile.mkdtemp(prefix="ttq-")) / "run"
    launched = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "chargpt_tui", args.text, "--headless", "--out-dir", str(out),
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    reached: dict[str, float | None] = {f"{t:g}": None for t in targets}
    best, best_at, steps, offset = float("inf"), None, 0, 0
    dtype = None
    try:
        while True:
            done = proc.poll() is not None
            metrics = out / "metrics.jsonl"
            if metrics.exists():
                with open(metrics, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1
                offset += end
                for line in data[:end].split(b"\n"):
                    if line.startswith(b'{"event": "step"'):
                        steps = int(json.loads(line)["iter"])
                    elif line.startswith(b'{"event": "start"'):
                        dtype = json.loads(line).get("dtype")
                    elif line.startswith(b'{"event": "eval"'):
                        record = json.loads(line)
                        now = round(time.monotonic() - launched, 1)
                        val = float(record["val_loss"])
                        if val < best:
                            best, best_at = val, now
                        for t in targets:
                            if val <= t and reached[f"{t:g}"] is None:
                                reached[f"{t:g}"] = now
            if done or time.monotonic() - launched > args.budget:
                break
            time.sleep(0.25)
    finally:
        if proc.poll() is None:
            proc.terminate()  # a checkpoint, then the end
            proc.wait(timeout=120)
    print(json.dumps({"flags": flags, "seconds_to": reached, "best_val": round(best, 4), "best_at_s": best_at,
                      "steps": steps, "dtype": dtype, "budget_s": args.budget,
                      "exit": proc.returncode, "stderr_tail": (proc.stderr.read() if proc.stderr else "")[-300:]
                      if proc.returncode not in (0, -15, 143) else ""}))


if __name__ == "__main__":
    main()
