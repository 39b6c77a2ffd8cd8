"""Data parallel against threads on one machine: torchrun with N processes x 1 thread each,
against one process with N threads, at the seed's settings (batch 64, block 256, 4 x 128), float32.

    python benchmarks/ddp_vs_threads.py TEXT [--procs 2] [--steps 30] [--rounds 2]

The two alternate, `--rounds` times each. A step's time is read from metrics.jsonl (training
time between the 5th step and the last, over the steps between: evaluation excluded). Prints one
JSON line per run and a summary with the ratio (processes' tokens/s over threads').
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SEED_SETTINGS = ["--dtype", "float32", "--device", "cpu", "--eval-iters", "1", "--sample-interval", "100000",
                 "--headless"]


def step_ms(run_dir: Path, skip: int = 5) -> float:
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"event": "step"' in line]
    first, last = steps[skip - 1], steps[-1]
    return 1000 * (last["time_s"] - first["time_s"]) / (last["iter"] - first["iter"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("text")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    text = str(Path(args.text).resolve())
    work = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    common = [text, *SEED_SETTINGS, "--max-iters", str(args.steps), "--eval-interval", str(args.steps)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(json.dumps({"cpu": cpu, "cores": os.cpu_count(), "procs": args.procs, "steps": args.steps}))
    results: dict[str, list[float]] = {"threads": [], "processes": []}
    try:
        for r in range(args.rounds):
            for kind in ("threads", "processes"):
                out = work / f"{kind}-{r}"
                if kind == "threads":
                    cmd = [sys.executable, "-m", "chargpt_tui", *common, "--threads", str(args.procs)]
                else:
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={args.procs}", "-m", "chargpt_tui", *common, "--threads", "1"]
                done = subprocess.run([*cmd, "--out-dir", str(out)], capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(f"{kind} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                ms = step_ms(out)
                results[kind].append(ms)
                print(json.dumps({"round": r, "kind": kind, "step_ms": round(ms, 1),
                                  "tokens_per_s": round(64 * 256 / ms * 1000)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t, d = statistics.median(results["threads"]), statistics.median(results["processes"])
    print(json.dumps({"threads_step_ms_median": round(t, 1), "processes_step_ms_median": round(d, 1),
                      "processes_speed_over_threads": round(t / d, 3)}))


if __name__ == "__main__":
    main()
