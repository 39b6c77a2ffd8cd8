"""`torchrun ... -m chargpt_tui TEXT [flags]`: what each process of a data-parallel job does.

Every rank reads the same flags and the same text (each builds or finds the token cache; one at
a time), then joins the process group (model/distributed.py). Rank 0 is the run as one process
would be: it holds the run directory, writes the checkpoints, metrics.jsonl and config.json,
serves viewers, and shows the dashboard when it has a terminal (else log lines). The others
train and write nothing; they follow rank 0's pause, save, evaluate and stop.

The run directory, unless --out-dir names one, is runs/<text>-<torchrun's run id>: the same for
every rank, and again when torchrun restarts the job (--max-restarts), which then resumes from
that directory's latest checkpoint by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from model.distributed import DistributedError, ProcessGroup, torchrun_world

PROG = "chargpt-tui"
EXIT_FAILED = 1
GRACE_S = 25.0  # torchrun kills what is left 30 s after passing a signal on


def train_rank(args: argparse.Namespace, argv: list[str]) -> int:
    from .parsers import UsageError
    from .train_setup import prepare_training

    world = torchrun_world()
    assert world is not None
    rank = world[0]
    main = rank == 0
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if not args.out_dir:
        if args.resume:
            args.out_dir = str(Path(args.resume).resolve().parent)
        else:
            run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
            if run_id in ("", "none"):  # torchrun without --standalone or --rdzv-id: the same id every job
                raise UsageError("name the run directory with --out-dir (or give torchrun --rdzv-id, or --standalone)")
            args.out_dir = str(Path("runs") / f"{_stem(args.text)}-{_safe(run_id)}")
    latest = Path(args.out_dir) / "ckpt.pt"
    if restarts > 0 and latest.exists():  # torchrun restarted the job: go on from where it got to
        if main:
            print(f"{PROG}: restart {restarts} of this job: resuming from {latest}", file=sys.stderr)
        args.resume = str(latest)
        args.preset = args.fork = None  # (a fork's parent is in its config.json already)
    if not main:
        _follow_signals(rank)
    from model.device import choose_device, tune_malloc

    tune_malloc()
    prepared = prepare_training(args, create_run_dir=False)
    corpus, model_config, train_config, run_dir, resume_state = prepared
    train_config.check_processes(world[1])  # before the run directory is made
    if main:
        run_dir.prepare()
    group = ProcessGroup.from_env(choose_device(train_config.device).type)
    assert group is not None
    try:
        code = _train_in_group(args, argv, prepared, group)
    finally:
        group.close()
    _leave(code)


def _train_in_group(args: argparse.Namespace, argv: list[str], prepared: tuple, group: ProcessGroup) -> int:
    resume_state = prepared[4]
    try:
        group.check_same_start(int(resume_state["iter"]) if resume_state is not None else 0)
    except DistributedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if group.is_main:
        from chargpt_tui.host.run_process import train_here

        preset = args.preset or ("seed" if not args.resume else None)
        viewer = not args.headless and sys.stdout.isatty() and sys.stdin.isatty()
        return train_here(prepared, preset, str(args.resume) if args.resume else None, ["torchrun", PROG, *argv],
                          on_hangup=args.on_hangup, group=group, viewer_on_terminal=viewer)
    return _follow(prepared, group)


def _leave(code: int) -> NoReturn:
    """End this process now that its part is done and its files are closed: without the C++
    static destructors of PyTorch's distributed backends, one of which now and then aborts at
    exit ("terminate called without an active exception", SIGABRT: one run in ten of a
    restarted job here) and so fails a job that had finished."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _follow(prepared: tuple, group: ProcessGroup) -> int:
    """A rank other than 0: train, write nothing; say why only if it failed."""
    from model.trainer import Trainer

    corpus, model_config, train_config, _run_dir, resume_state = prepared
    trainer = Trainer(corpus, model_config, train_config, run_dir=None, resume=resume_state, group=group)
    result = trainer.run()
    if result.status == "failed":
        print(f"{PROG} (rank {group.rank}): {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _follow_signals(rank: int) -> None:
    """Ctrl-C and SIGTERM reach every process (the terminal's, and torchrun passes them on): rank
    0 stops the job at the next step boundary, with a checkpoint, and the others with it, so they
    do not act on them. Unless rank 0 has not done so within GRACE_S (it is gone, or stuck in a
    call the others' death would have ended): then they leave, saying why, before torchrun's kill."""

    def on_signal(signum: int, _frame: object) -> None:
        def leave() -> None:
            print(f"{PROG} (rank {rank}): {signal.Signals(signum).name}, and rank 0 did not stop the job within "
                  f"{GRACE_S:.0f} s: leaving", file=sys.stderr, flush=True)
            os._exit(128 + signum)

        timer = threading.Timer(GRACE_S, leave)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _stem(text: str | None) -> str:
    return _safe(Path(text).stem) if text else "python-stdlib"


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:64] or "run"
