"""Data-parallel training with torchrun: 2 CPU processes over gloo, tiny models.

Each test starts a real torchrun job (`python -m torch.distributed.run`, as `torchrun` does)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_text

from chargpt_tui.wire.run_link import RunClient

TINY = ["--n-layers", "1", "--n-embed", "32", "--n-heads", "2", "--block-size", "16", "--dropout", "0",
        "--dtype", "float32", "--device", "cpu", "--sample-tokens", "10", "--headless"]


FLOAT64_ENTRY = str(Path(__file__).with_name("float64_entry.py"))  # chargpt-tui with float64 weights


def torchrun(args: list[str], cwd: Path, nproc: int = 2, restarts: int = 0,
             entry: tuple[str, ...] = ("-m", "chargpt_tui")) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
         f"--max-restarts={restarts}", *entry, *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}, start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the job did not end in {timeout} s:\n{out[-3000:]}")
    return out


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    found = [json.loads(line) for line in lines if line.strip()]
    return [e for e in found if kind is None or e["event"] == kind]


def wait_for(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def rank_pid(torchrun_pid: int, rank: int) -> int:
    """The worker process of `rank` among torchrun's children."""
    for child in Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(child)
    raise LookupError(f"no rank {rank} under {torchrun_pid}")


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "t.txt"
    path.write_text(make_text(30_000), encoding="utf-8")
    return path


def test_two_processes_train_as_one(text: Path, tmp_path: Path) -> None:
    """The same global batch of 8: one process, or 2 processes x 2 micro-batches of 2 rows, in
    float64 (tests/float64_entry.py). Without gradient synchronisation rank 0 would step on its
    own rows' gradient and weights would differ by about the learning rate (3e-4) a step.

    Why float64: the two sum a step's gradient in different orders. In float32 a gradient that
    is a near-cancelling sum then differs by ~1e-7 of its terms, and AdamW's update
    lr * m / (sqrt(v) + eps) turns a difference d into up to lr * d / eps: 2.5e-6 on one weight
    of 1440 on an AMD EPYC with AVX512-BF16, whose kernels sum in another order. In float64 the
    same difference is ~1e-16 of the terms and at most ~1e-16 * lr / eps ~ 1e-12 in the weights
    (5e-17 measured): a tolerance of 1e-9 holds on any CPU, and a run without the synchronisation
    fails it by five orders of magnitude (its losses already differ at the second step)."""
    common = [str(text), *TINY, "--batch-size", "8", "--max-iters", "8", "--eval-interval", "4", "--eval-iters", "3",
              "--sample-interval", "4"]
    one = subprocess.run([sys.executable, FLOAT64_ENTRY, *common, "--out-dir", "one", "--threads", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr
    out = finish(torchrun([*common, "--out-dir", "two", "--grad-accum", "2"], tmp_path, entry=(FLOAT64_ENTRY,)))
    assert "x 2 processes (gloo)" in out, out
    single, double = tmp_path / "one", tmp_path / "two"
    step_losses = [[e["loss"] for e in events(d, "step")] for d in (single, double)]
    assert len(step_losses[0]) == len(step_losses[1]) == 8
    # (losses are reported in float32: equal to its rounding)
    assert step_losses[1] == pytest.approx(step_losses[0], rel=1e-6)
    for a, b in zip(events(single, "eval"), events(double, "eval"), strict=True):
        assert (b["train_loss"], b["val_loss"]) == pytest.approx((a["train_loss"], a["val_loss"]), rel=1e-6)
    assert [e["processes"] for e in events(double, "start")] == [2]  # MFU per device on the dashboard
    ckpt1 = torch.load(single / "ckpt.pt", weights_only=True)
    ckpt2 = torch.load(double / "ckpt.pt", weights_only=True)
    assert ckpt2["world_size"] == 2 and ckpt2["iter"] == 8
    assert ckpt1["model"].keys() == ckpt2["model"].keys()  # no "module." prefix
    for name, weight in ckpt1["model"].items():
        assert weight.dtype == torch.float64, name
        torch.testing.assert_close(ckpt2["model"][name], weight, rtol=0, atol=1e-9)
    # the samples too (rank 0 samples with the weights and generator one process would have)
    assert [e["text"] for e in events(double, "sample")] == [e["text"] for e in events(single, "sample")]
    # rank 0 alone wrote: one log's worth of lines, one run directory
    assert out.count("finished at step 8") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "two"]

    # a checkpoint of 2 processes resumes in one, with a warning that it is not bit for bit
    resumed = subprocess.run([sys.executable, "-m", "chargpt_tui", "--resume", str(double / "ckpt.pt"),
                              "--max-iters", "10", "--headless", "--out-dir", "three"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed with 1 process(es) from a checkpoint trained with 2" in resumed.stdout + resumed.stderr
    # and one of a single process in 2 (any number loads any checkpoint)
    out = finish(torchrun(["--resume", str(single / "ckpt.pt"), "--max-iters", "10", "--headless", "--out-dir", "four",
                           "--threads", "1"], tmp_path))
    assert "resumed with 2 process(es) from a checkpoint trained with 1" in out, out
    assert "finished at step 10" in out and torch.load(tmp_path / "four" / "ckpt.pt", weights_only=True)["iter"] == 10


def test_pause_resume_and_stop_reach_every_rank(text: Path, tmp_path: Path) -> None:
    """rank 0's viewer pauses and resumes the job; SIGTERM to torchrun stops every rank, with a
    checkpoint; nothing is left running."""
    proc = torchrun([str(text), *TINY, "--batch-size", "4", "--max-iters", "100000", "--eval-interval", "50",
                     "--eval-iters", "2", "--sample-interval", "100000", "--out-dir", "run"], tmp_path)
    run_dir = tmp_path / "run"
    try:
        wait_for(lambda: (run_dir / "server.json").exists() and len(events(run_dir, "step")) > 5, what="steps")
        client = RunClient(run_dir)
        client.connect()
        client.start(lambda notice: None)
        assert client.request("pause")
        wait_for(lambda: events(run_dir, "pause"), what="the pause")
        steps = len(events(run_dir, "step"))
        time.sleep(2.5)  # held: rank 1 waits for rank 0 without timing out, and no step is taken
        assert len(events(run_dir, "step")) == steps
        assert client.request("save")  # a save while paused: rank 0 writes it
        wait_for(lambda: any(e["reason"] == "request" for e in events(run_dir, "checkpoint")), what="the save")
        assert client.request("resume")
        wait_for(lambda: len(events(run_dir, "step")) > steps + 5, what="steps after resuming")
        client.close()
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "stopped by SIGTERM" in out, out
    stopped = events(run_dir, "finished")[-1]
    assert stopped["stopped"] is True
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["iter"] == stopped["iter"] > 0
    assert subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).returncode == 1  # none left


def test_a_restarted_job_resumes_and_a_dead_rank_is_reported(text: Path, tmp_path: Path) -> None:
    """rank 1 killed: rank 0 ends at once with a clear message (it does not wait for a timeout),
    and with --max-restarts torchrun starts the job again, which resumes from the latest
    checkpoint by itself."""
    args = [str(text), *TINY, "--batch-size", "4", "--max-iters", "1000", "--eval-interval", "20", "--eval-iters", "2",
            "--sample-interval", "1000"]
    proc = torchrun([*args, "--out-dir", "run"], tmp_path, restarts=1)
    run_dir = tmp_path / "run"
    try:
        wait_for(lambda: any(e["iter"] >= 20 for e in events(run_dir, "checkpoint")), what="a checkpoint")
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "rank 0: lost the other training processes" in out, out
    assert "chargpt_tui/" not in out and "model/" not in out, out  # no traceback of ours (torchrun prints its own)
    assert proc.returncode == 0, out
    assert "restart 1 of this job: resuming from" in out
    starts = events(run_dir, "start")
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["iter"] >= 20
    failed = events(run_dir, "failed")
    assert len(failed) == 1 and "lost the other training processes" in failed[0]["error"]
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["iter"] == 1000
