"""The real `chargpt-tui` entry point, run in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import COMMAND, TINY_FLAGS, make_text, one_clear_line, run_script

from model.checkpoint import load_checkpoint
from model.data import min_chars_for


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_script(args, cwd, timeout=timeout)


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    one_clear_line(result.stderr, *fragments)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.txt").write_text(make_text(), encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "short.txt").write_text("to be or not to be\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes("naïve café".encode("latin-1"))
    (root / "folder").mkdir()
    (root / "a-file").write_text("x")
    (root / "unicode.txt").write_text(make_text().replace("o", "ö").replace("e", "é"), encoding="utf-8")
    return root


BAD_INPUT = [
    (["missing.txt"], ["missing.txt", "no such file"]),
    (["folder"], ["directory"]),
    (["empty.txt"], ["empty"]),
    (["short.txt", "--block-size", "16"], [f"at least {min_chars_for(16)}", "--block-size"]),
    (["latin1.txt"], ["not UTF-8", "offset 2"]),
    (["tiny.txt", "--n-embed", "30", "--n-heads", "4"], ["divisible"]),
    (["tiny.txt", "--batch-size", "0"], ["--batch-size", "positive"]),
    (["tiny.txt", "--block-size", "-3"], ["--block-size"]),
    (["tiny.txt", "--n-layers", "two"], ["--n-layers", "'two'"]),
    (["tiny.txt", "--max-iters", "0"], ["--max-iters"]),
    (["tiny.txt", "--learning-rate", "-1e-3"], ["--learning-rate"]),
    (["tiny.txt", "--dropout", "1.0"], ["--dropout", "[0, 1)"]),
    (["tiny.txt", "--dropout", "-0.1"], ["--dropout"]),
    (["tiny.txt", "--preset", "huge"], ["--preset"]),
    (["tiny.txt", "--device", "tpu"], ["--device"]),
    (["tiny.txt", "--out-dir", "a-file"], ["a-file", "not a directory"]),
    (["tiny.txt", "--resume", "missing.pt"], ["missing.pt", "no such file"]),
    (["tiny.txt", "--resume", "tiny.txt"], ["tiny.txt"]),
    (["tiny.txt", "--no-such-flag"], ["--no-such-flag"]),
]


@pytest.mark.parametrize("args, fragments", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(workdir: Path, args: list[str], fragments: list[str]) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    result = run([*args, "--headless"], workdir)
    assert_usage_error(result, *fragments)
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none(workdir: Path) -> None:
    assert_usage_error(run(["tiny.txt", "--device", "cuda", "--headless"], workdir), "CUDA is not available")


def test_train_resume_and_sample(workdir: Path) -> None:
    out = workdir / "run1"
    result = run(["tiny.txt", *TINY_FLAGS, "--out-dir", str(out)], workdir)  # stdout is a pipe: headless
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for step in (0, 10, 20):
        assert any(line.startswith(f"step {step}: train loss ") and ", val loss " in line for line in lines)
    assert "tokens/s" in result.stdout
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "ckpt.pt", "best.pt"}
    assert load_checkpoint(out / "ckpt.pt")["iter"] == 20

    # resuming needs a larger --max-iters, then continues the count from 20
    assert_usage_error(run(["tiny.txt", "--resume", str(out / "ckpt.pt"), "--headless"], workdir), "--max-iters")
    assert_usage_error(run(["tiny.txt", "--resume", str(out / "ckpt.pt"), "--n-embed", "64"], workdir), "--n-embed")
    result = run(["--resume", str(out / "ckpt.pt"), "--max-iters", "30", "--headless"], workdir)
    assert result.returncode == 0, result.stderr
    assert "resuming at step 20" in result.stdout
    assert "step 30: train loss" in result.stdout and "step 20:" not in result.stdout
    assert load_checkpoint(out / "ckpt.pt")["iter"] == 30

    # the text must be encodable with the checkpoint's vocabulary
    assert_usage_error(
        run(["unicode.txt", "--resume", str(out / "ckpt.pt"), "--max-iters", "40", "--headless"], workdir),
        "not in the vocabulary", "'é'",
    )

    result = run(["sample", str(out / "best.pt"), "--prompt", "The ", "--max-new-tokens", "50", "--seed", "3"], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The ") and len(result.stdout) == 54 + 1  # and a newline after
    again = run(["sample", str(out / "best.pt"), "--prompt", "The ", "--max-new-tokens", "50", "--seed", "3"], workdir)
    assert again.stdout == result.stdout
    top1 = run(["sample", str(out / "best.pt"), "--max-new-tokens", "20", "--top-k", "1"], workdir)
    assert top1.returncode == 0 and len(top1.stdout) == 20 + 1 and top1.stdout.endswith("\n")

    assert_usage_error(run(["sample", str(out / "best.pt"), "--prompt", "Zß€"], workdir), "'€'", "'ß'")
    assert_usage_error(run(["sample", "missing.pt"], workdir), "no such file")
    assert_usage_error(run(["sample", str(out / "best.pt"), "--temperature", "-1"], workdir), "--temperature")


def test_resuming_gives_the_same_losses_bit_for_bit(workdir: Path) -> None:
    """2N steps in one process == N steps, a checkpoint, and N more in a new process (dropout on;
    batches of 256 x 16 = 4096 rows, so that the Linear layers take their oneDNN path)."""
    from model.rundir import read_metrics

    def losses(run_dir: Path) -> tuple[dict[int, float], dict[int, float]]:
        records = list(read_metrics(run_dir / "metrics.jsonl"))
        steps = {r["iter"]: r["loss"] for r in records if r["event"] == "step"}
        evals = {r["iter"]: r["val_loss"] for r in records if r["event"] == "eval"}
        return steps, evals

    flags = [*TINY_FLAGS, "--dropout", "0.2", "--eval-interval", "20", "--batch-size", "256"]
    assert run(["tiny.txt", *flags, "--max-iters", "40", "--out-dir", "straight"], workdir).returncode == 0
    assert run(["tiny.txt", *flags, "--max-iters", "20", "--out-dir", "halves"], workdir).returncode == 0
    resumed = run(["tiny.txt", "--resume", "halves/ckpt.pt", "--max-iters", "40"], workdir)
    assert resumed.returncode == 0, resumed.stderr
    straight_steps, straight_evals = losses(workdir / "straight")
    halves_steps, halves_evals = losses(workdir / "halves")
    assert sorted(halves_steps) == list(range(1, 41))
    assert halves_steps == straight_steps  # every step's loss, exactly
    assert halves_evals == straight_evals


def test_no_text_uses_the_builtin_corpus(workdir: Path) -> None:
    out = workdir / "builtin"
    result = run([*TINY_FLAGS, "--max-iters", "2", "--eval-interval", "2", "--out-dir", str(out)], workdir)
    assert result.returncode == 0, result.stderr
    assert "built-in corpus" in result.stderr and "standard library" in result.stderr
    assert load_checkpoint(out / "ckpt.pt")["corpus"]["name"] == "python-stdlib"


def test_sigint_saves_and_exits_130(workdir: Path) -> None:
    out = workdir / "interrupted"
    proc = subprocess.Popen(
        [*COMMAND, "tiny.txt", *TINY_FLAGS, "--max-iters", "1000000", "--eval-interval", "50",
         "--out-dir", str(out), "--headless"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step 50:"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    assert load_checkpoint(out / "ckpt.pt")["iter"] >= 50


# A stop whose checkpoint would take two minutes to write: what a second Ctrl-C is for.
SLOW_STOP = """
import sys, time
import model.trainer as trainer
original = trainer.Trainer._stop_and_save
def slow(self, *args, **kwargs):
    print("saving slowly", file=sys.stderr, flush=True)
    time.sleep(120)
    return original(self, *args, **kwargs)
trainer.Trainer._stop_and_save = slow
from chargpt_tui.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_ctrl_c_quits_at_once(workdir: Path) -> None:
    out = workdir / "twice"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_STOP, "tiny.txt", *TINY_FLAGS, "--max-iters", "1000000", "--eval-interval", "50",
         "--out-dir", str(out), "--headless"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if line.startswith("step 50:"):
                break
        proc.send_signal(signal.SIGINT)  # the first: stop and save (slowly)
        for line in proc.stderr:
            if "saving slowly" in line:
                break
        proc.send_signal(signal.SIGINT)  # the second: quit now
        _, err = proc.communicate(timeout=60)  # a hang guard: the save alone would take 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    saved = load_checkpoint(out / "ckpt.pt")["iter"]  # the last whole checkpoint stays: an evaluation's
    assert saved >= 50 and saved % 50 == 0


def test_a_nan_loss_headless_ends_with_status_1_and_keeps_the_last_good_checkpoint(workdir: Path) -> None:
    out = workdir / "diverged"
    result = run(["tiny.txt", *TINY_FLAGS, "--learning-rate", "1e30", "--out-dir", str(out), "--headless"], workdir)
    assert result.returncode == 1, result.stderr
    assert "training failed" in result.stderr and re.search(r"the loss became (nan|-?inf)", result.stderr)
    assert "Traceback" not in result.stderr
    assert load_checkpoint(out / "ckpt.pt")["iter"] == 0  # the weights after it were never saved


BENCH_TINY = ["--block-size", "16", "--n-embed", "32", "--n-layers", "2", "--n-heads", "4", "--batch-size", "4",
              "--threads", "1", "--device", "cpu"]


def test_bench_prints_one_json_object_keyed_like_the_reference(workdir: Path) -> None:
    import json

    result = run(["bench", "--text", "tiny.txt", *BENCH_TINY, "--steps", "2", "--warmup", "1", "--gen-tokens", "30"],
                 workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("step_ms", "train_tokens_per_s", "gen_tokens_per_s", "mfu", "load_s", "device", "params",
                "batch_size", "block_size", "threads"):
        assert report[key] is not None, key
    assert report["block_size"] == 16 and report["batch_size"] == 4 and report["threads"] == 1
    assert report["train_tokens_per_s"] > 0 and report["gen_tokens_per_s"] > 0 and 0 < report["mfu"] < 1
    assert report["chars"] == len(make_text())
    assert not list(workdir.glob("runs"))  # a benchmark writes no run directory


def test_bench_with_no_steps_only_loads(workdir: Path) -> None:
    import json

    result = run(["bench", "--text", "tiny.txt", *BENCH_TINY, "--steps", "0", "--gen-tokens", "0"], workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["step_ms"] is None and report["gen_tokens_per_s"] is None and report["load_s"] >= 0


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--text", "missing.txt"], ["no such file"]),
        (["--steps", "-1"], ["--steps"]),
        (["--text", "short.txt", "--block-size", "64"], ["--block-size"]),
        (["--dropout", "1.5"], ["--dropout"]),
    ],
)
def test_bench_bad_input(workdir: Path, args: list[str], fragments: list[str]) -> None:
    assert_usage_error(run(["bench", *args], workdir), *fragments)
