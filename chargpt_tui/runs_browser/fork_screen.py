"""The fork form: which checkpoint of the selected run, and the settings to change. It answers
with the command-line flags of the new run (`--fork RUN_DIR@best --learning-rate ...`), which
the training process checks again as it starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from chargpt_tui.wire.run_table import RunRow, format_setting
from chargpt_tui.wire.runs import latest_checkpoint_iter
from model.rundir import RunDir

# (flag, config section, key, label, kind): what a fork may change, as the issue of a fork is
# trying other settings from the same weights
FIELDS = (
    ("--learning-rate", "train", "learning_rate", "learning rate", float),
    ("--min-lr", "train", "min_lr", "min lr (cosine)", float),
    ("--dropout", "model", "dropout", "dropout", float),
    ("--max-iters", "train", "max_iters", "max iters", int),
    ("--batch-size", "train", "batch_size", "batch", int),
    ("--weight-decay", "train", "weight_decay", "weight decay", float),
)
SCHEDULES = ("constant", "cosine")


class ForkScreen(ModalScreen[list[str] | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, row: RunRow) -> None:
        super().__init__()
        self.row = row
        self.latest = latest_checkpoint_iter(Path(row.path))  # ckpt.pt's step (None: none recorded)

    def compose(self) -> ComposeResult:
        s = self.row.summary
        has_best = s.best_iter is not None
        with Vertical(id="fork-dialog"):
            yield Static(Text(f"Fork {s.name}", style="bold"), id="fork-title")  # a name from disk: literal
            with Grid(id="fork-fields"):
                yield Label("from")
                at = f"step {self.latest:,}" if self.latest is not None else "its step unrecorded"
                choices = [(f"latest checkpoint ({at})", "latest")]
                if has_best:
                    choices.insert(0, (f"best (val {s.best_val_loss:.4f} @ {s.best_iter:,})", "best"))
                yield Select(choices, value=choices[0][1], allow_blank=False, id="fork-from", compact=True)
                yield Label("schedule")
                schedule = self.row.setting("train", "lr_schedule")
                yield Select([(name, name) for name in SCHEDULES], allow_blank=False, id="fork-lr_schedule",
                             value=schedule if schedule in SCHEDULES else "constant", compact=True)
                for _flag, section, key, label, kind in FIELDS:
                    yield Label(label)
                    value = self.row.setting(section, key)
                    if key == "max_iters" and isinstance(value, int):
                        value = max(value, s.iter) + max(1, value // 2)  # a fork trains on past its parent
                    yield Input(format_setting(value) if value is not None else "", id=f"fork-{key}",
                                type="integer" if kind is int else "number", max_length=12, compact=True)
            yield Static("", id="fork-problem")
            yield Static("Enter starts the new run beside this one (it trains in a process of its own) · "
                         "Esc cancels", id="fork-hint")
            yield Button("Fork", variant="primary", id="fork-go", compact=True)

    def on_mount(self) -> None:
        self.query_one("#fork-learning_rate", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#fork-go")
    def _submit(self) -> None:
        flags, problem = self.flags()
        self.query_one("#fork-problem", Static).update(problem)
        if not problem:
            self.dismiss(flags)

    def flags(self) -> tuple[list[str], str]:
        """The new run's flags, or what is wrong with the form."""
        which = self.query_one("#fork-from", Select).value
        flags = ["--fork", f"{self.row.path}@{which}",
                 "--lr-schedule", str(self.query_one("#fork-lr_schedule", Select).value)]
        for flag, _section, key, label, kind in FIELDS:
            text = self.query_one(f"#fork-{key}", Input).value.strip()
            if not text:
                continue  # the parent's
            try:
                value = kind(text)
            except ValueError:
                return [], f"{label}: not a number"
            if value < 0 or (value == 0 and key not in ("weight_decay", "dropout", "min_lr")):
                return [], f"{label}: must be above 0"
            if key == "dropout" and value >= 1:
                return [], "dropout: must be below 1"
            start = self.row.summary.best_iter if which == "best" else self.latest
            if key == "max_iters" and start is not None and value <= start:
                return [], f"max iters: must be above the checkpoint's step ({start:,})"
            flags += [flag, text]
        return flags, ""

    def action_cancel(self) -> None:
        self.dismiss(None)


def start_fork(row: RunRow, flags: list[str], wait_s: float = 120.0) -> tuple[Path, str]:
    """Start the fork's training in a process of its own (a session of its own, its lines in
    <new run>/train.log; it goes on when this browser closes), and wait until it trains or fails.
    The new run directory, and what went wrong (empty if nothing)."""
    corpus = row.config.get("corpus")
    name = str(corpus.get("name") or row.name) if isinstance(corpus, dict) else row.name
    out_dir = RunDir.default_path(name, root=Path(row.path).parent)
    log_path = out_dir / "train.log"
    command = [sys.executable, "-m", "chargpt_tui", *flags, "--headless", "--out-dir", str(out_dir)]
    try:
        out_dir.mkdir(parents=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as exc:  # a folder that cannot be written, a full disk, a name taken meanwhile
        return out_dir, f"cannot start it in {out_dir}: {exc.strerror or exc}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if (out_dir / "config.json").is_file():
            return out_dir, ""
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    code = proc.poll()
    if code is None:
        return out_dir, ""  # slow to start (a large text being encoded): it goes on
    lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    problem = next((line for line in reversed(lines) if line.startswith("chargpt-tui")), lines[-1] if lines else "")
    if code != 0 and not (out_dir / "config.json").exists():
        shutil.rmtree(out_dir, ignore_errors=True)  # nothing trained there: no half run left behind
    return out_dir, (problem or f"it ended with status {code}") if code else ""
