"""Plain log lines for when there is no terminal (or --headless): one line per evaluation in
the seed's form, progress now and then, samples, checkpoints. They are written by a thread of
their own (line_writer.py): a stopped terminal or a pipe nobody reads never holds up training.
Write errors (a dropped SSH connection, a closed pipe) are ignored: the training and its
checkpoints matter more."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from chargpt_tui.format import count, duration, si, threads
from model import events as ev
from model.config import PRESETS, build_configs, default_preset, preset_note

from .line_writer import LineWriter

# How long the end of a run waits for its last lines to reach a stream that is slow to take them.
DRAIN_AT_END_S = 2.0


class HeadlessPrinter:
    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, progress_interval_s: float = 30.0,
        preset: str | None = None,
    ) -> None:
        self.preset = preset  # the run's preset, said under the start line with why
        self.out = LineWriter(out or sys.stdout)
        self.err = LineWriter(err or sys.stderr)
        self.progress_interval_s = progress_interval_s
        self.max_iters = 0
        self.eval_iters = 0
        self._last_progress = time.monotonic()
        self._tokens = 0.0  # since the last evaluation line
        self._step_s = 0.0
        self._ms_per_step = 0.0
        self._last_loss = float("nan")

        # every kind of event is handled here or ignored on purpose (a test holds this to
        # model/events.py): a new or renamed event cannot be dropped without a sound
        self.handlers: dict[type, Callable[[Any], None]] = {
            ev.RunStarted: self._on_run_started, ev.StepsDone: self._on_steps_done, ev.EvalDone: self._on_eval_done,
            ev.SampleGenerated: self._on_sample, ev.CheckpointSaved: self._on_checkpoint_saved,
            ev.CheckpointFailed: self._on_checkpoint_failed, ev.Paused: self._on_paused, ev.Resumed: self._on_resumed,
            ev.Warning: self._on_warning, ev.Hint: self._on_hint, ev.Finished: self._on_finished,
            ev.Failed: self._on_failed, ev.Diverged: self._on_diverged, ev.ThreadsChanged: self._on_threads,
        }

    # the evaluation's start and progress: its line comes when it is done
    IGNORED: frozenset[type] = frozenset({ev.EvalStarted, ev.EvalProgress})

    def __call__(self, event: ev.Event) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _print(self, line: str, err: bool = False) -> None:
        (self.err if err else self.out).write_line(line)

    def drain(self, timeout: float = DRAIN_AT_END_S) -> bool:
        """Wait up to `timeout` seconds (for each stream) for the lines so far to be written.
        True if they were."""
        out, err = self.out.drain(timeout), self.err.drain(timeout)  # (both, whatever the first did)
        return out and err

    def _on_run_started(self, e: ev.RunStarted) -> None:
        self.max_iters = e.max_iters
        self.eval_iters = int(e.train_config.get("eval_iters", 0) or 0)
        verb = f"resuming at step {e.iter}" if e.resumed else "training"
        self._print(
            f"{verb} on {e.corpus}: {count(e.n_chars)} characters, vocabulary {e.vocab_size}; "
            f"{si(e.n_params)} parameters; {e.device} ({e.device_name}), {e.dtype}, {threads(e.threads)}"
        )
        if self.preset in PRESETS and not e.resumed:
            line = f"preset {self.preset} ({preset_note(self.preset, e.device)})"
            if self.preset == default_preset(e.device) and self.preset != "seed":
                line += f": {PRESETS[self.preset].description}; --preset seed for the seed's settings"
            preset = [asdict(c) for c in build_configs(self.preset, None, e.vocab_size)]  # (its settings, whole)
            ours = {**e.model_config, **e.train_config}
            changed = [f"{k.replace('_', ' ')} {ours[k]}" for k, v in {**preset[0], **preset[1]}.items()
                       if k in ours and ours[k] != v and k not in ("device", "dtype", "threads")]  # (the recipe's)
            if changed:  # (its description would say otherwise)
                line += f"; changed by flags: {', '.join(changed)}"
            self._print(line)
        if e.dtype_reason:
            self._print(f"dtype {e.dtype}: {e.dtype_reason}")
        if e.threads_reason:
            self._print(f"threads {e.threads}: {e.threads_reason}")
        if e.out_dir:
            self._print(f"run directory: {e.out_dir}")

    def _on_steps_done(self, e: ev.StepsDone) -> None:
        step_s = e.ms_per_step * len(e.iters) / 1000.0
        self._step_s += step_s
        self._tokens += e.tokens_per_s * step_s
        self._ms_per_step = e.ms_per_step
        self._last_loss = e.losses[-1]
        now = time.monotonic()
        if now - self._last_progress >= self.progress_interval_s:
            self._last_progress = now
            eta = (self.max_iters - e.iter) * self._ms_per_step / 1000.0
            self._print(
                f"step {e.iter}/{self.max_iters}: loss {self._last_loss:.4f} | "
                f"{si(e.tokens_per_s)} tokens/s, {e.ms_per_step:.1f} ms/step | "
                f"{duration(e.time_s)} elapsed, ETA {duration(eta)}"
            )

    def _on_eval_done(self, e: ev.EvalDone) -> None:
        line = f"step {e.iter}: train loss {e.train_loss:.4f}, val loss {e.val_loss:.4f}"
        if 0 < e.batches < self.eval_iters:  # step 0's, bounded (model/evaluation.py: Evaluator.batches)
            line += f" ({e.batches} batches: a first look)"
        if self._step_s > 0:
            line += f" | {si(self._tokens / self._step_s)} tokens/s, {self._ms_per_step:.1f} ms/step"
        line += f" | {duration(e.time_s)}"
        self._print(line)
        self._tokens = self._step_s = 0.0
        self._last_progress = time.monotonic()

    def _on_sample(self, e: ev.SampleGenerated) -> None:
        self._print(f"--- sample at step {e.iter} ---\n{e.text}\n---")

    def _on_checkpoint_saved(self, e: ev.CheckpointSaved) -> None:
        if e.reason != "eval":  # the evaluation line already says a checkpoint was taken
            self._print(f"saved checkpoint {e.path} (step {e.iter})")

    def _on_checkpoint_failed(self, e: ev.CheckpointFailed) -> None:
        self._print(f"warning: could not save {e.path} at step {e.iter}: {e.error}; training goes on", err=True)

    def _on_paused(self, e: ev.Paused) -> None:
        self._print(f"paused at step {e.iter}")

    def _on_resumed(self, e: ev.Resumed) -> None:
        self._print(f"resumed at step {e.iter}")

    def _on_diverged(self, e: ev.Diverged) -> None:
        self._print(f"warning: training diverged: {e.message}", err=True)

    def _on_threads(self, e: ev.ThreadsChanged) -> None:
        self._print(f"step {e.iter}: {threads(e.threads)} now ({e.reason})")

    def _on_hint(self, e: ev.Hint) -> None:
        self._print(f"hint: {e.message}")

    def _on_warning(self, e: ev.Warning) -> None:
        self._print(f"warning: {e.message}", err=True)

    def _on_finished(self, e: ev.Finished) -> None:
        word = "stopped" if e.stopped else "finished"
        best = f"best val loss {e.best_val_loss:.4f} at step {e.best_iter}" if e.best_iter >= 0 else "no evaluation yet"
        self._print(f"{word} at step {e.iter} after {duration(e.time_s)}: {best}")
        self.drain()  # the run's last lines before the process's own (training is over)

    def _on_failed(self, e: ev.Failed) -> None:
        self._print(f"chargpt-tui: training failed at step {e.iter}: {e.error}", err=True)
        self.drain()
