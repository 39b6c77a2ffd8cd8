"""What the trainer reports, as small frozen dataclasses of plain values.

Every sink (the TUI, the headless printer, metrics.jsonl) sees the same stream. Each event
carries ``time_s``, seconds of training time since the run first started (a resumed run goes
on counting from its checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Event:
    iter: int
    time_s: float

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready form written to metrics.jsonl: {"event": kind, "iter": ..., ...}.
        Shallow: the values are plain already (json writes tuples as lists), and a deep copy
        of a start event's loss history (dataclasses.asdict) cost a viewer's catch-up ~25 ms."""
        return {"event": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class RunStarted(Event):
    max_iters: int
    n_params: int
    vocab_size: int
    corpus: str  # description of the text for people
    n_chars: int
    device: str  # "cpu", "cuda", "mps"
    device_name: str
    dtype: str
    threads: int
    torch_version: str
    out_dir: str | None
    resumed: bool
    flops_per_token: float
    model_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    # what a chart needs to redraw a resumed run: (iter, loss) pairs and (iter, train, val)
    # triples; a long history's merged points fall between iterations (model/history.py)
    step_history: tuple[tuple[float, float], ...] = ()
    eval_history: tuple[tuple[float, float, float], ...] = ()
    # why training runs in `dtype` (--dtype auto's choice, or what was asked for), and the same
    # in a few words for the device panel
    dtype_reason: str = ""
    dtype_note: str = ""
    processes: int = 1  # torchrun's world size: tokens_per_s is theirs together, MFU is per device
    threads_reason: str = ""  # why `threads` ("2 cores free", "--threads"): model/cpu_threads.py


@dataclass(frozen=True)
class StepsDone(Event):
    """Training steps since the previous StepsDone, batched so listeners see a few per second."""

    iters: tuple[int, ...]  # the iteration each step completed (1-based: after the step)
    losses: tuple[float, ...]
    lr: float
    tokens_per_s: float  # over these steps' own time, without evaluation or pauses
    ms_per_step: float


@dataclass(frozen=True)
class EvalStarted(Event):
    eval_iters: int


@dataclass(frozen=True)
class EvalProgress(Event):
    done: int  # batches evaluated so far, both splits together
    total: int


@dataclass(frozen=True)
class EvalDone(Event):
    train_loss: float
    val_loss: float
    best_val_loss: float
    best_iter: int
    is_best: bool
    batches: int = 0  # of each split it took: eval_iters, fewer at step 0 (0: not said)


@dataclass(frozen=True)
class SampleGenerated(Event):
    text: str


@dataclass(frozen=True)
class CheckpointSaved(Event):
    path: str
    reason: str  # "eval", "request", "stop", "finish"
    also_best: bool


@dataclass(frozen=True)
class CheckpointFailed(Event):
    path: str
    error: str


@dataclass(frozen=True)
class Paused(Event):
    pass


@dataclass(frozen=True)
class Resumed(Event):
    pass


@dataclass(frozen=True)
class ThreadsChanged(Event):
    """The CPU threads training uses changed with the machine's load (model/cpu_threads.py)."""

    threads: int
    reason: str  # "1 of 2 cores busy", "2 cores free"


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - an event name, in its own namespace
    message: str


@dataclass(frozen=True)
class Hint(Event):
    """Advice for the person watching, not a problem: a faster preset for this machine, say."""

    message: str


@dataclass(frozen=True)
class Finished(Event):
    best_val_loss: float
    best_iter: int
    stopped: bool  # True when stopped early by request or signal


@dataclass(frozen=True)
class Failed(Event):
    error: str


@dataclass(frozen=True)
class Diverged(Event):
    """The loss became NaN or infinite; the trainer holds (paused) instead of failing.

    Training cannot go on from these weights and they are never saved. ``last_good`` is the
    checkpoint that is kept (None without a run directory), ``last_good_iter`` its step (-1: none).
    """

    message: str
    last_good: str | None
    last_good_iter: int


_KINDS: dict[type, str] = {
    RunStarted: "start",
    StepsDone: "steps",
    EvalStarted: "eval_start",
    EvalProgress: "eval_progress",
    EvalDone: "eval",
    SampleGenerated: "sample",
    CheckpointSaved: "checkpoint",
    CheckpointFailed: "checkpoint_failed",
    Paused: "pause",
    Resumed: "resume",
    Warning: "warning",
    ThreadsChanged: "threads",
    Hint: "hint",
    Finished: "finished",
    Failed: "failed",
    Diverged: "diverged",
}

# kind -> class: how a record from metrics.jsonl or a viewer's socket becomes an event again
BY_KIND: dict[str, type[Event]] = {kind: cls for cls, kind in _KINDS.items()}
