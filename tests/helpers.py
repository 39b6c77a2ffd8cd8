"""Shared test helpers: a generated text and tiny configurations (no test needs ../shared)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from model import events as ev
from model.config import GPTConfig, TrainConfig
from model.data import Corpus

WORDS = (
    "the quick brown fox jumps over lazy dog to be or not that is question whether tis nobler "
    "in mind suffer slings and arrows of outrageous fortune"
).split()


def make_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """Pseudo-English with some structure a tiny model can learn: words, commas, lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        line = line.capitalize() + rng.choice([",", ".", ";", ""])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars]


def tiny_configs(corpus: Corpus, **train: object) -> tuple[GPTConfig, TrainConfig]:
    model = GPTConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=16, n_embed=32, n_layers=2, n_heads=4,
                      dropout=0.1)
    # float32 everywhere: --dtype auto would take bfloat16 on a CPU that has it natively, and the
    # suite's results must not depend on which kind of machine runs it
    settings = dict(batch_size=8, max_iters=20, eval_interval=10, eval_iters=2, sample_interval=10, sample_tokens=20,
                    device="cpu", threads=1, dtype="float32")
    settings.update(train)
    return model, TrainConfig(**settings)


# The installed `chargpt-tui` script, beside this Python (a venv) or on PATH
_script = Path(sys.executable).with_name("chargpt-tui")
COMMAND = [str(_script)] if _script.exists() else [shutil.which("chargpt-tui") or "chargpt-tui"]


def run_script(args: list[str], cwd: Path, prefix: tuple[str, ...] = (),
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `chargpt-tui` in a subprocess (stdout a pipe: headless), its output captured."""
    return subprocess.run([*prefix, *COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def one_clear_line(err: str, *fragments: str) -> None:
    """Bad input's report: a single `chargpt-tui...` line holding every fragment, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chargpt-tui"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# CLI flags for a tiny, fast run through the real entry point
TINY_FLAGS = [
    "--block-size", "16", "--n-embed", "32", "--n-layers", "2", "--n-heads", "4", "--batch-size", "8",
    "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--sample-interval", "10",
    "--sample-tokens", "20", "--device", "cpu", "--threads", "1", "--dtype", "float32",
]


def permissions_apply() -> tuple[str, ...]:
    """A command prefix under which file permissions apply. Root ignores them, so as root the
    process runs without the capabilities that override them (util-linux's setpriv)."""
    import pytest

    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return (setpriv, "--bounding-set", caps, "--inh-caps", caps, "--")


# Long enough never to finish; one evaluation (and checkpoint) at step 0 only.
ENDLESS = [*TINY_FLAGS, "--max-iters", "1000000", "--eval-interval", "1000000", "--sample-interval", "1000000"]


def last_step(metrics: Path) -> int:
    """The latest step a run's metrics.jsonl has logged (0: none yet)."""
    from model.rundir import read_metrics

    if not metrics.exists():
        return 0
    return max((r["iter"] for r in read_metrics(metrics) if r["event"] == "step"), default=0)


def wait_for_steps(metrics: Path, steps: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Until the run has logged `steps` steps; fails if proc exits first."""
    deadline = time.monotonic() + timeout
    while last_step(metrics) < steps:
        assert proc is None or proc.poll() is None, f"exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "training did not get going"
        time.sleep(0.05)


def wait_until(condition, timeout: float = 60.0, what: str = "a condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def one_of_each_kind() -> list[ev.Event]:
    """An event of every kind the trainer reports, with plausible values (tests of the sinks)."""
    events = [
        ev.RunStarted(0, 0.0, 100, 12_345, 40, "tiny.txt", 20_000, "cpu", "Test CPU", "float32", 1, "2.13.0",
                      "/runs/x", False, 1e5, {"n_embed": 32}, {"eval_interval": 10}, ((1, 3.5),), ((0, 3.6, 3.7),),
                      "asked for (--dtype float32)", "as asked"),
        ev.StepsDone(5, 1.0, (2, 3, 4, 5), (3.4, 3.3, 3.2, 3.1), 3e-4, 1234.0, 12.5),
        ev.EvalStarted(5, 1.1, 2), ev.EvalProgress(5, 1.2, 1, 4),
        ev.EvalDone(5, 1.3, 3.0, 3.05, 3.05, 5, True), ev.SampleGenerated(5, 1.4, "to be or not"),
        ev.CheckpointSaved(5, 1.5, "/runs/x/ckpt.pt", "request", False),
        ev.CheckpointFailed(6, 1.6, "/runs/x/ckpt.pt", "No space left on device"),
        ev.Paused(6, 1.7), ev.Resumed(6, 2.0), ev.ThreadsChanged(6, 2.05, 1, "1 of 2 cores busy"),
        ev.Warning(7, 2.1, "careful"), ev.Hint(7, 2.2, "try --preset cpu"),
        ev.Diverged(8, 2.3, "the loss became nan at step 8", "/runs/x/ckpt.pt", 5),
        ev.Finished(10, 3.0, 3.05, 5, False), ev.Failed(10, 3.0, "boom"),
    ]
    assert {type(e) for e in events} == set(ev.BY_KIND.values()), "a kind of event is missing here"
    return events


async def app_until(pilot, condition, timeout: float = 30.0) -> None:  # noqa: ANN001
    """Let a Pilot-driven app process messages until condition holds (no fixed sleeps)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)


def collect(trainer) -> list[ev.Event]:  # noqa: ANN001
    """Every event the trainer emits from now on, in a list."""
    seen: list[ev.Event] = []
    trainer.add_listener(seen.append)
    return seen


def steps_of(events: list[ev.Event]) -> list[tuple[int, float]]:
    return [(i, loss) for e in events if isinstance(e, ev.StepsDone) for i, loss in zip(e.iters, e.losses)]
