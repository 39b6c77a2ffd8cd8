"""A 100,000-step run of a tiny model keeps its memory flat (slow: `pytest -m slow`).

Headless and on the dashboard (a pseudo-terminal): resident memory is read from /proc every
half second; from step 10,000 (past warm-up) to the end it may grow by less than 50 MB. Chart
history is downsampled, the logs are bounded, metrics go to disk.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import COMMAND, make_text
from terminal import TerminalProcess

STEPS = 100_000
FLAGS = ["--block-size", "8", "--n-embed", "16", "--n-layers", "1", "--n-heads", "2", "--batch-size", "4",
         "--max-iters", str(STEPS), "--eval-interval", "5000", "--eval-iters", "5", "--sample-interval", "5000",
         "--sample-tokens", "50", "--device", "cpu", "--threads", "1"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def last_step(metrics: Path) -> int:
    """The last step in metrics.jsonl, reading only its tail."""
    if not metrics.exists():
        return 0
    with metrics.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "step":
            return record["iter"]
    return 0


def watch(proc: subprocess.Popen, metrics: Path, timeout: float) -> tuple[float, float, float]:
    """RSS when step 10,000 was reached, the most after, and the seconds the run took."""
    start = time.monotonic()
    baseline = peak = 0.0
    while proc.poll() is None and last_step(metrics) < STEPS:  # the dashboard stays open at the end
        assert time.monotonic() - start < timeout, "the run did not finish"
        rss = rss_mb(proc.pid)
        if rss is not None:
            if not baseline and last_step(metrics) >= 10_000:
                baseline = rss
            if baseline:
                peak = max(peak, rss)
        time.sleep(0.5)
    return baseline, peak, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["headless", "dashboard"])
def test_a_100k_step_run_keeps_memory_flat(tmp_path: Path, mode: str) -> None:
    (tmp_path / "text.txt").write_text(make_text(), encoding="utf-8")
    args = ["text.txt", *FLAGS, "--out-dir", "run"]
    if mode == "headless":
        proc = subprocess.Popen([*COMMAND, *args, "--headless"], cwd=tmp_path, stdout=subprocess.DEVNULL)
        baseline, peak, took = watch(proc, tmp_path / "run" / "metrics.jsonl", timeout=1800)
        assert proc.wait(timeout=120) == 0
    else:
        # the dashboard's own memory: a viewer's chart and logs are bounded too (the training
        # process it starts is a headless one, watched above)
        with TerminalProcess(args, tmp_path, size=(120, 40)) as term:
            baseline, peak, took = watch(term.proc, tmp_path / "run" / "metrics.jsonl", timeout=1800)
            term.wait_for("finished", timeout=120)  # and stays open on the final state; q quits
            term.type("q")
            assert term.wait(timeout=60) == 0
    assert last_step(tmp_path / "run" / "metrics.jsonl") == STEPS
    print(f"{mode}: {STEPS} steps in {took:.0f} s; RSS {baseline:.0f} MB at step 10,000, at most {peak:.0f} MB after "
          f"(+{peak - baseline:.1f} MB)")
    assert baseline > 0 and peak - baseline < 50
