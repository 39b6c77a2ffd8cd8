"""Write errors for real: a full disk (a small tmpfs) and a run directory that becomes read-only
while training. The failed save is reported, training goes on, the previous checkpoint stays
whole, and no temporary files are left behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import COMMAND, TINY_FLAGS, make_text, permissions_apply, tiny_configs

from model.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from model.data import Corpus
from model.rundir import read_metrics
from model.trainer import Trainer


def checkpoint_size(text: str) -> int:
    corpus = Corpus.from_text(text, "tiny")
    model_config, train_config = tiny_configs(corpus)
    buffer = io.BytesIO()
    torch.save(Trainer(corpus, model_config, train_config).state_dict(), buffer)
    return buffer.tell()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tmpfs with room for one checkpoint and a half (so the second cannot be written beside
    the first), or a skip where this machine cannot mount one."""
    text = make_text()
    (tmp_path / "tiny.txt").write_text(text, encoding="utf-8")
    size = checkpoint_size(text)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2 + 64 * 1024}", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield disk, size
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_reported_and_training_goes_on(tmp_path: Path, small_disk: tuple[Path, int]) -> None:
    disk, _ = small_disk
    result = subprocess.run(
        [*COMMAND, "tiny.txt", *TINY_FLAGS, "--max-iters", "30", "--eval-interval", "10",
         "--out-dir", str(disk / "run"), "--headless"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in result.stderr
    assert "step 30: train loss" in result.stdout  # it trained to the end
    warnings = [line for line in result.stderr.splitlines() if "could not save" in line]
    assert len(warnings) == 3 and all("No space left on device" in w for w in warnings), result.stderr
    assert "the checkpoint of step 30 could not be saved" in result.stderr
    assert result.returncode == 1
    assert load_checkpoint(disk / "run" / "ckpt.pt")["iter"] == 0
    assert load_checkpoint(disk / "run" / "best.pt")["iter"] == 0
    assert not list((disk / "run").glob(".*.tmp"))


def records(metrics: Path) -> list[dict]:
    return list(read_metrics(metrics)) if metrics.exists() else []


def test_a_run_directory_that_becomes_read_only(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
        run = root / "run"
        proc = subprocess.Popen(
            [*permissions_apply(), *COMMAND, "tiny.txt", *TINY_FLAGS, "--max-iters", "1000000", "--eval-interval",
             "20", "--sample-interval", "1000000", "--out-dir", str(run), "--headless"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not any(r["event"] == "checkpoint" and r["iter"] >= 20 for r in records(run / "metrics.jsonl")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            run.chmod(0o555)
            while not any(r["event"] == "checkpoint_failed" for r in records(run / "metrics.jsonl")):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143, err
        assert "Traceback" not in err and "Permission denied" in err
        saved = [r["iter"] for r in records(run / "metrics.jsonl") if r["event"] == "checkpoint"]
        assert load_checkpoint(run / "ckpt.pt")["iter"] == saved[-1]
        assert f"{run / 'ckpt.pt'} (step {saved[-1]}) is kept" in err
        # A save under way when the folder turned read-only could not remove its temporary files
        # (removing a file needs the folder's write permission); at most that save's two (ckpt.pt
        # and its best.pt link) are left, and the next save into the folder removes them.
        left = sorted(run.glob(".*.tmp"))
        assert len(left) <= 2 and all(t.name.endswith(f".{proc.pid}.tmp") for t in left), left
        run.chmod(0o755)
        assert sorted(remove_stale_temporaries(run)) == left
        assert not list(run.glob(".*.tmp"))
    finally:
        (root / "run").chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_temporaries_of_killed_saves_are_removed_by_the_next_save(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    stale = tmp_path / f".ckpt.pt.{gone.pid}.tmp"
    alive = tmp_path / f".ckpt.pt.{os.getppid()}.tmp"  # another process still saving: left alone
    for path in (stale, alive):
        path.write_bytes(b"half a checkpoint")
    save_checkpoint({"x": torch.zeros(2)}, tmp_path / "ckpt.pt")
    assert not stale.exists() and alive.exists()
    assert remove_stale_temporaries(tmp_path) == []
