"""SIGKILL at random moments while checkpoints are being written (slow: `pytest -m slow`).

A 10.7M-parameter model (nanoGPT's shakespeare size) evaluates and saves after every step, so
that most of the process's time is spent inside save_checkpoint. Each trial resumes the run
from its ckpt.pt, lets it save a few times, and kills it at a random moment. After every kill,
ckpt.pt must load and be the last checkpoint the run reported or the one it was writing;
temporary files must not pile up; metrics.jsonl must still read.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import COMMAND, make_text

from model.checkpoint import load_checkpoint
from model.rundir import read_metrics

TRIALS = int(os.environ.get("KILL_TRIALS", "20"))
FLAGS = ["--n-embed", "384", "--n-layers", "6", "--n-heads", "6", "--block-size", "32", "--batch-size", "2",
         "--eval-interval", "1", "--eval-iters", "1", "--sample-interval", "1000000", "--max-iters", "1000000",
         "--device", "cpu", "--headless"]


def saved_iters(run: Path) -> list[int]:
    return [r["iter"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "checkpoint"]


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "text.txt").write_text(make_text(50_000), encoding="utf-8")
    run = tmp_path / "run"
    rng = random.Random(20261125)
    outcomes = {"previous": 0, "new": 0, "mid-save": 0}
    for trial in range(TRIALS):
        resume = ["--resume", str(run / "ckpt.pt")] if trial else ["--out-dir", str(run)]
        before = len(saved_iters(run)) if trial else 0
        proc = subprocess.Popen([*COMMAND, "text.txt", *FLAGS, *resume], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait for at least one save of this process, then kill within the next few saves
        deadline = time.monotonic() + 120
        while (len(saved_iters(run)) if (run / "metrics.jsonl").exists() else 0) <= before:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        if trial % 2:  # at any moment
            time.sleep(rng.uniform(0.0, 2.0))
        else:  # once this process has started writing a temporary file, somewhere in the write
            while not list(run.glob(f".ckpt.pt.{proc.pid}.tmp")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        reported = saved_iters(run)  # read_metrics skips a torn last line
        state = load_checkpoint(run / "ckpt.pt")
        # the checkpoint reported last, or the next one, written but killed before it was reported
        assert state["iter"] in (reported[-1], reported[-1] + 1), (state["iter"], reported[-3:])
        outcomes["previous" if state["iter"] == reported[-1] else "new"] += 1
        temporaries = list(run.glob(".*.tmp"))
        outcomes["mid-save"] += any(t.name.endswith(f".{proc.pid}.tmp") for t in temporaries)
        assert len(temporaries) <= 2, temporaries  # at most the killed process's ckpt.pt and best.pt ones
        if (run / "best.pt").exists():
            load_checkpoint(run / "best.pt")
    print(f"{TRIALS} kills, {outcomes['mid-save']} of them while a temporary file was being written: ckpt.pt "
          f"was the previous checkpoint {outcomes['previous']} times, the new one {outcomes['new']} times; "
          "never broken")
    assert outcomes["mid-save"] > 0  # the kills did land inside saves
