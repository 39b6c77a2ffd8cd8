"""What a link to a run tells the dashboard (run_link.py sends them, app.py routes them): small
frozen dataclasses, one per kind of news, in the order a dashboard usually hears them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model import events as ev


@dataclass(frozen=True)
class Attached:
    live: bool  # False: a run that is not running, read from disk
    vocab: str
    preset: str | None
    peak_flops: float | None
    paused: bool
    pid: int | None = None
    viewer: int | None = None


@dataclass(frozen=True)
class EventReported:
    event: ev.Event
    at: float  # wall-clock time it happened (0: not known)
    replay: bool  # part of the catch-up after attaching


@dataclass(frozen=True)
class CaughtUp:
    pass


@dataclass(frozen=True)
class ControlRequested:
    op: str
    by: int  # the viewer that asked


@dataclass(frozen=True)
class MemoryReported:
    memory: dict[str, float]
    samples: tuple[dict[str, float], ...] = ()  # the process's figures over time (host/system_figures.py)


@dataclass(frozen=True)
class RequestRefused:
    error: str


@dataclass(frozen=True)
class RunEnded:
    status: str  # finished, stopped, failed
    iter: int
    exit_code: int
    summary: str
    warning: str | None


@dataclass(frozen=True)
class NotRunning:
    state: str  # finished, stopped, failed, crashed


@dataclass(frozen=True)
class Disconnected:
    reason: str
    still_running: bool  # the process lives (this viewer was cut off): attach again


Notice = Attached | EventReported | CaughtUp | ControlRequested | MemoryReported | RequestRefused | RunEnded | \
    NotRunning | Disconnected
Notify = Callable[[Notice], None]
