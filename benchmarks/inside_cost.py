"""What looking inside the model costs a training run: its speed while a viewer takes snapshots
of its weights and works out attention maps and per-character losses, against no viewer.

    python benchmarks/inside_cost.py TEXT [--rounds 3] [--window 20] [--preset cpu]

A headless run trains in a process of its own. In this process, one viewer (a RunClient, as the
dashboard's) goes through windows of --window seconds, in turn:
  idle      attached, asking nothing
  snapshot  a snapshot of the weights every 2 s (what g, a and w each take once), nothing else
  inside    a snapshot every 2 s, then the attention maps of a 64-character prompt and the loss at
            each of 1,000 characters (what a and w compute), in this process
The run's steps per second in each window, from its metrics.jsonl; printed as JSON with each kind
of window's speed as a fraction of the idle windows' (median over rounds). The viewer's own work
runs on the same cores: on 2 cores, `inside` measures that too, as a dashboard's would. The
windows' order turns each round (idle, snapshot, inside; snapshot, inside, idle; ...).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chargpt_tui.wire.run_link import RunClient  # noqa: E402
from chargpt_tui.wire.runtime import is_running  # noqa: E402
from model.inspection import attention_maps, char_losses  # noqa: E402


def last_step(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    with open(metrics, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 65536))
        lines = f.read().split(b"\n")
    for line in reversed(lines):
        if line.startswith(b'{"event": "step"'):
            return int(json.loads(line)["iter"])
    return 0


def window(client: RunClient, kind: str, seconds: float, metrics: Path) -> float:
    start_step, start = last_step(metrics), time.monotonic()
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        if kind != "idle":
            model = client.snapshot()
            if kind == "inside":
                attention_maps(model, IDS[:64])
                char_losses(model, IDS[:1000])
        time.sleep(max(0.0, 2.0 - (time.monotonic() - tick)))
    return (last_step(metrics) - start_step) / (time.monotonic() - start)


IDS: list[int] = []  # the end of the text, encoded: what the inside windows look at


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("text")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="inside-cost-")) / "run"
    proc = subprocess.Popen([sys.executable, "-m", "chargpt_tui", args.text, "--preset", args.preset,
                             "--max-iters", "1000000", "--eval-interval", "1000000", "--sample-interval", "1000000",
                             "--headless", "--out-dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    try:
        while not is_running(out) or last_step(out / "metrics.jsonl") < 50:
            if proc.poll() is not None:
                raise SystemExit("the training process ended")
            time.sleep(0.2)
        config = json.loads((out / "config.json").read_text())
        vocab = config["vocab"]
        IDS.extend(vocab.index(c) for c in Path(args.text).read_text(encoding="utf-8")[-2000:] if c in vocab)
        client = RunClient(out)
        client.connect()
        client.start(lambda notice: None)
        speeds: dict[str, list[float]] = {"idle": [], "snapshot": [], "inside": []}
        kinds = list(speeds)
        for n in range(args.rounds):  # the order turned each round: a drift of the machine's speed cancels
            for kind in kinds[n % 3:] + kinds[:n % 3]:
                speeds[kind].append(window(client, kind, args.window, out / "metrics.jsonl"))
        client.close()
        idle = statistics.median(speeds["idle"])
        print(json.dumps({"steps_per_s": {k: [round(v, 2) for v in vs] for k, vs in speeds.items()},
                          "vs_idle": {k: round(statistics.median(vs) / idle, 3) for k, vs in speeds.items()},
                          "preset": args.preset, "window_s": args.window}))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
