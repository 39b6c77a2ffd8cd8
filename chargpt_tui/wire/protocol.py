"""What a training process and its viewers say to each other over the run's Unix socket.

Version 1. Each message is one line of JSON (a "frame"), ending in a newline. A frame with a
``"bytes": N`` field is followed by N raw bytes (only the weights a snapshot sends). The
trainer's events cross as they are, in the form metrics.jsonl already uses
(``Event.to_record()``): one vocabulary for the same facts, on disk and on the wire.

Training process -> viewer:
    {"type": "hello", "protocol": 1, "pid", "run_dir", "vocab", "preset", "peak_flops", "paused", "viewer"}
    {"type": "event", "event": {...}, "at": unix time, "replay": bool}   catch-up events, then live ones
    {"type": "live"}                                  the catch-up is over
    {"type": "control", "op": "pause", "by": n}       a viewer asked for something (all viewers see it)
    {"type": "memory", "memory": {"rss": bytes} | {"allocated", "reserved"},
     "samples": [{"t", "cpu", "rss", "gpu_util"?, "gpu_mem"?}, ...]}   every 2 s the latest sample;
                                                      to a viewer attaching, the recent past (just after "live")
    {"type": "reply", "id": n}                        a request was accepted
    {"type": "error", "id": n | null, "error": text}  a request was refused; nothing changed
    {"type": "snapshot", "id": n, "bytes": N} + N bytes   the weights now (torch.save; weights_only loads it)
    {"type": "ended", "status", "iter", "exit_code", "summary", "warning"}   trainer.run() returned
    {"type": "bye", "reason": text}                   the process closes this connection

Viewer -> training process, one line each, at most MAX_REQUEST_BYTES:
    {"op": "pause" | "resume" | "save" | "evaluate" | "stop" | "snapshot", "id": n}
"""

from __future__ import annotations

import json
from typing import Any

from model import events as ev

from .event_fields import FieldError, checked_fields

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 4096
REQUEST_OPS = ("pause", "resume", "save", "evaluate", "stop", "snapshot")

class ProtocolError(ValueError):
    """A frame that does not follow the protocol. The message says why, for an error reply."""


_EVENT_TYPES = ev.BY_KIND


def encode(frame: dict[str, Any]) -> bytes:
    """One frame as a line of JSON. NaN and infinities cross as JSON's common extension."""
    return json.dumps(frame, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        frame = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not a line of JSON") from None
    except RecursionError:  # b"[" * 1500: json's decoder recurses once per level
        raise ProtocolError("nested too deeply") from None
    if not isinstance(frame, dict):
        raise ProtocolError("a message is a JSON object")
    return frame


def event_frame(event: ev.Event, at: float, replay: bool = False) -> dict[str, Any]:
    return {"type": "event", "event": event.to_record(), "at": at, "replay": replay}


def event_from_record(record: dict[str, Any], from_disk: bool = False) -> ev.Event:
    """An event back from its record (a frame's "event", or a line of metrics.jsonl).

    Fields this version does not know are ignored and missing ones take their defaults, so a
    newer writer's record still reads; each field must be of its type (wire/event_fields.py:
    lists become the tuples the dataclasses hold, a null float, how metrics.jsonl writes NaN,
    reads as NaN), else the record is refused; but from_disk, a start record's field of the
    wrong type reads as unknown, as the rest of the run's description is needed to show its
    history)."""
    kind = record.get("event")
    cls = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown event {kind!r}")
    try:
        return cls(**checked_fields(cls, record, from_disk))
    except FieldError as exc:
        raise ProtocolError(f"{kind!r} event {exc}") from None
    except TypeError as exc:
        raise ProtocolError(f"a {kind} event without {exc}") from None


def parse_request(line: bytes) -> tuple[str, int | None]:
    """A viewer's request: (op, id). Raises ProtocolError for anything else."""
    frame = decode(line)
    op, request_id = frame.get("op"), frame.get("id")
    if request_id is not None and (not isinstance(request_id, int) or isinstance(request_id, bool)):
        raise ProtocolError("id must be an integer")
    if not isinstance(op, str):
        raise ProtocolError("a request needs an \"op\"")
    if op not in REQUEST_OPS:
        raise ProtocolError(f"unknown op {op[:40]!r} (known: {', '.join(REQUEST_OPS)})")
    return op, request_id
