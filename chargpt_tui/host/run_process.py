"""The process that owns a run: it holds the run directory's lock, trains, writes the
checkpoints, metrics.jsonl and log lines, and serves viewers on a private Unix socket.

Started by a person (`--headless`, nohup, a batch job) or by a dashboard (`chargpt-tui TEXT` on
a terminal starts it in a session of its own, logging to <run>/train.log, and attaches to it).
Either way it has no terminal to lose: a dropped SSH connection stops only the viewer.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chargpt_tui import __version__
from chargpt_tui.wire.runs import read_config, save_journal_cache
from chargpt_tui.wire.runtime import RunBusyError, RunLock, remove_stale_server, runtime_dir
from model.config import GPTConfig, TrainConfig
from model.data import Corpus
from model.distributed import ProcessGroup
from model.rundir import MetricsLog, RunDir, RunDirError
from model.trainer import RunResult, Trainer

from .slow_run import SlowRunHint

PROG = "chargpt-tui"
EXIT_FAILED = 1
LOG_NAME = "train.log"


def train_here(
    prepared: tuple[Corpus, GPTConfig, TrainConfig, RunDir, dict[str, Any] | None],
    preset: str | None,
    resumed_from: str | None,
    command: list[str],
    on_hangup: str = "detach",
    spawned: bool = False,
    group: ProcessGroup | None = None,
    viewer_on_terminal: bool = False,
) -> int:
    """Train in this process and serve viewers meanwhile; the exit status of the run.

    spawned: started by a dashboard. Then a NaN holds the run paused for the person to read, and
    when training ends the process stays while viewers are attached (their g, s and e still
    work, as on the dashboard that started it) and leaves with the last one.

    group: this is rank 0 of a torchrun job (chargpt_tui/commands/torchrun.py). viewer_on_terminal: open
    the dashboard on this terminal, as a viewer process of its own, once viewers can attach;
    this process's lines then go to <run>/train.log.
    """
    corpus, model_config, train_config, run_dir, resume_state = prepared
    lock = RunLock(run_dir.path)
    lock.acquire()  # RunBusyError: another process trains here (one line, exit 2)
    try:
        _claim(run_dir, resumed_from)
        try:  # what a dead process left says nothing true: gone before anyone reads it
            remove_stale_server(run_dir.path, runtime_dir())
        except RunDirError:
            pass
        from model.device import lower_thread_priority, tune_malloc
        from model.flops import model_matmul_shapes, peak_flops

        tune_malloc()
        if spawned:
            # Viewers on this machine draw while this trains: their key presses come first.
            lower_thread_priority()
        # a NaN holds the run for the person watching; several processes all stop (every one must
        # act alike, and the others cannot know whether rank 0 is watched)
        on_divergence = "pause" if (spawned or viewer_on_terminal) and group is None else "stop"
        trainer = Trainer(corpus, model_config, train_config, run_dir=run_dir, resume=resume_state,
                          event_interval_s=0.5, on_divergence=on_divergence,
                          group=group)
        run_dir.write_config(run_config(trainer, preset, resumed_from, command, _parent(resume_state, run_dir.path)))
        metrics = MetricsLog(run_dir.metrics_path)
        trainer.add_listener(metrics)
        peak = peak_flops(trainer.device, trainer.dtype, model_matmul_shapes(model_config, train_config.batch_size))[0]
        server = _start_server(trainer, run_dir.path, lock, preset, peak, required=spawned)
        # it emits through the trainer, from within the event that prompted it: listeners added
        # before it have had that event already (the log printer, added later, sees the hint first)
        trainer.add_listener(SlowRunHint(trainer, preset))
        if viewer_on_terminal and server is not None:
            _open_viewer(run_dir.path)
        try:
            return run_headless(trainer, server, on_hangup=on_hangup, linger=spawned or viewer_on_terminal,
                                one_interrupt=group is not None, preset=preset)
        finally:
            if server is not None:
                server.close()
            metrics.close()
            # what a viewer of the run will need, read once now rather than by each viewer
            save_journal_cache(run_dir.path)
    finally:
        lock.release()


def _claim(run_dir: RunDir, resumed_from: str | None) -> None:
    """With the lock held: the folder is this run's. A new run (or one resumed from elsewhere)
    finds no checkpoints of another there (commands/train_setup.py refused them; a run that was
    still training then may have ended since)."""
    if resumed_from and Path(resumed_from).resolve().parent == run_dir.path.resolve():
        return  # resumed in its own folder
    if run_dir.checkpoints():
        raise RunBusyError(f"{run_dir.path} holds another run's checkpoints now; name another --out-dir")


def _parent(resume_state: dict[str, Any] | None, run_dir: Path) -> dict[str, Any] | None:
    """The run a fork started from (commands/fork.py): named by the fork's checkpoint state, and
    when the fork is resumed, by the config.json it wrote then."""
    if resume_state is None:
        return None
    if "forked_from" in resume_state:
        return dict(resume_state["forked_from"])
    parent = read_config(run_dir).get("parent")
    return parent if isinstance(parent, dict) else None


def run_config(trainer: Trainer, preset: str | None, resumed_from: str | None, command: list[str],
               parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """What config.json holds. parent: a fork's {"path", "checkpoint" (best or latest), "iter"}."""
    from model.device import describe_device

    corpus = trainer.corpus
    return {
        "model": asdict(trainer.model_config),
        "train": asdict(trainer.config),
        "preset": preset,
        # what --dtype (auto by default) chose on this machine, and why; the device's full name
        "precision": {"dtype": trainer.dtype, "reason": trainer.precision.reason,
                      # auto on a CPU with native bfloat16: a step's time measured in each
                      **({"probe": trainer.precision.probe} if trainer.precision.probe else {})},
        # CPU threads at the start, and why (they follow the machine's load: metrics.jsonl)
        "threads": {"count": trainer.threads.now, "reason": trainer.threads.reason,
                    "adaptive": trainer.threads.adaptive},
        "device": {"type": trainer.device.type, "name": describe_device(trainer.device)},
        "corpus": {"name": corpus.name, "path": corpus.path, "description": corpus.description, "n_chars": len(corpus),
                   "cache": str(corpus.cache.npy_path) if corpus.cache is not None else None},
        "vocab": "".join(corpus.tokenizer.chars),
        "resumed_from": resumed_from,
        **({"parent": parent} if parent else {}),
        "processes": {"world_size": trainer.group.world_size, "backend": trainer.group.backend}
        if trainer.group is not None else {"world_size": 1},
        "command": command,
        "version": __version__,
    }


def _start_server(trainer: Trainer, run_dir: Path, lock: RunLock, preset: str | None, peak: float,
                  required: bool) -> Any:
    """Serve viewers. Where no socket can be made (a read-only /tmp, say) a headless run trains
    all the same, with a warning; a dashboard's training process, which exists to be watched,
    fails with the reason instead."""
    from .run_server import RunServer

    server = RunServer(trainer, run_dir, lock, preset=preset, peak_flops=peak)
    try:
        server.start()
    except (OSError, ValueError) as exc:
        if required:
            raise RunDirError(f"viewers cannot attach to this run ({exc})") from None
        print(f"{PROG}: warning: viewers cannot attach to this run ({exc}); training goes on", file=sys.stderr)
        return None
    trainer.add_listener(server)
    return server


def run_headless(trainer: Trainer, server: Any = None, on_hangup: str = "detach", linger: bool = False,
                 one_interrupt: bool = False, preset: str | None = None) -> int:
    """Train with plain log lines; SIGINT and SIGTERM stop with a checkpoint; SIGHUP too with
    on_hangup="stop", else the run goes on and its lines go to <run>/train.log. A second Ctrl-C
    ends at once, unless one_interrupt (torchrun passes on the Ctrl-C its workers had already)."""
    from .headless import HeadlessPrinter

    trainer.add_listener(HeadlessPrinter(preset=preset))
    caught: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if signum == getattr(signal, "SIGHUP", None) and on_hangup != "stop":
            _log_to_run_dir(trainer)
            return
        # First signal: stop at the next step boundary and save. A second Ctrl-C ends at once.
        caught.append(signum)
        trainer.steering.stop()
        if signum == signal.SIGINT and not one_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        result = trainer.run()
        code, summary, warning = _ending(trainer, result, caught)
        if server is not None:
            server.run_ended(result.status, result.iter, code, summary, warning)
            if linger and not caught:
                # as the dashboard did: stay on the final state while someone looks at it (and
                # a short while for the dashboard that started a short run to arrive)
                server.ever_attached.wait(timeout=10)
                while not server.wait_for_viewers_to_leave(timeout=0.5) and not caught:
                    pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def _ending(trainer: Trainer, result: RunResult, caught: list[int]) -> tuple[int, str, str | None]:
    """Print how the run ended; return its exit status, the summary viewers are sent, and what a
    viewer should add on stderr: why the run failed, or which checkpoint is kept when the latest
    could not be saved."""
    unsaved = trainer.checkpoints.unsaved_warning(result.iter) if result.status != "failed" else None
    saved = trainer.run_dir.ckpt_path if trainer.run_dir and not unsaved else None
    if caught:
        name = signal.Signals(caught[0]).name
        print(f"{PROG}: stopped by {name} at step {result.iter}" + (f"; checkpoint: {saved}" if saved else ""),
              file=sys.stderr)
    if unsaved:
        print(f"{PROG}: {unsaved}", file=sys.stderr)
    if caught:
        code = 128 + caught[0]
    else:
        code = EXIT_FAILED if result.status == "failed" or unsaved else 0
    best = f"best val loss {result.best_val_loss:.4f} at step {result.best_iter}" if result.best_iter >= 0 else ""
    where = f"checkpoints in {trainer.run_dir.path}" if trainer.run_dir else ""
    summary = "; ".join(p for p in (f"at step {result.iter}", best, where) if p)
    return code, summary, result.error or unsaved


def _open_viewer(run_dir: Path) -> None:
    """The dashboard on this terminal, in a process of its own (`chargpt-tui attach`), and this
    process's lines to train.log from now on."""
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                        "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    subprocess.Popen([sys.executable, "-m", "chargpt_tui", "attach", str(run_dir)], env=env, close_fds=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(run_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)


def _log_to_run_dir(trainer: Trainer) -> None:
    """After a hangup: the terminal is gone; the lines it would have shown go to train.log."""
    if trainer.run_dir is None:
        return
    for fd in (1, 2):
        if not os.isatty(fd):
            continue
        try:
            log = os.open(trainer.run_dir.path / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, fd)
            os.close(log)
        except OSError:
            pass
