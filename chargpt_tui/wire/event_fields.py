"""What each field of an event may hold, checked as a record is read back (and each setting of a
run read back from config.json).

A record comes from metrics.jsonl (a file anyone can edit, or damage) or from a run's socket.
Each field of the event it names must be of its dataclass's type (model/events.py), else the
record is refused as a whole (`FieldError`; wire/protocol.py's event_from_record makes it the
ProtocolError every reader skips, as it skips a torn line): an ``"iter": "abc"`` or a
``"text": 5`` would otherwise travel into a viewer and fail there, far from its cause, on its
first format or arithmetic.

    fields = checked_fields(ev.EvalDone, record)   # or FieldError: which field, and what it should be

JSON has no NaN: metrics.jsonl writes a NaN or infinite number as null, so a null where a float
goes reads as NaN. JSON lists become the tuples the dataclasses hold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from model import events as ev


class FieldError(ValueError):
    """A field of a record that is not of its event's type ("whose iter is not int")."""


def _of(check: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not check(value):
            raise TypeError
        return value
    return convert


_int = _of(lambda v: isinstance(v, int) and not isinstance(v, bool))


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError
    try:
        return float(value)
    except OverflowError:  # an integer past a float's range
        raise TypeError from None


def _tuple_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def convert(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(item(v) for v in value)
    return convert


def _point(*items: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def convert(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise TypeError
        return tuple(item(v) for item, v in zip(items, value, strict=True))
    return convert


# an annotation of model/events.py (a string: its module has `from __future__ import annotations`)
# -> what turns a JSON value into the field's value, or raises TypeError
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "float": _number,
    "bool": _of(lambda v: isinstance(v, bool)),
    "str": _of(lambda v: isinstance(v, str)),
    "str | None": _of(lambda v: v is None or isinstance(v, str)),
    "dict[str, Any]": _of(lambda v: isinstance(v, dict)),
    "tuple[int, ...]": _tuple_of(_int),
    "tuple[float, ...]": _tuple_of(_number),
    "tuple[tuple[float, float], ...]": _tuple_of(_point(_number, _number)),
    "tuple[tuple[float, float, float], ...]": _tuple_of(_point(_number, _number, _number)),
}

# what a field of the wrong type reads as where the record is kept all the same (a start record:
# the run's description, without which none of its history could be shown)
UNKNOWN: dict[str, Any] = {"int": 0, "float": math.nan, "bool": False, "str": "?", "str | None": None,
                           "dict[str, Any]": {}}

_FIELD_TYPES = {cls: {f.name: str(f.type) for f in dataclasses.fields(cls)} for cls in ev.BY_KIND.values()}


def checked_fields(cls: type[ev.Event], record: dict[str, Any], from_disk: bool = False) -> dict[str, Any]:
    """The record's fields that cls has, each converted to its type; fields cls does not know
    are left out (a newer writer's record still reads). A field of the wrong type raises
    FieldError; or, in a start record read from disk (a damaged or edited file, never a
    running trainer's report), reads as unknown (UNKNOWN; an empty tuple)."""
    lenient = from_disk and cls is ev.RunStarted
    fields = {}
    for name, annotation in _FIELD_TYPES[cls].items():
        if name not in record:
            continue  # missing: its default, or the dataclass says it is needed
        try:
            fields[name] = CONVERTERS[annotation](record[name])
        except (TypeError, ValueError):
            if lenient:
                fields[name] = UNKNOWN.get(annotation, ())
                continue
            raise FieldError(f"whose {name} is not {'a number' if annotation == 'float' else annotation}") from None
    return fields


# a step as metrics.jsonl writes it: a line each, not an event of its own (StepsDone is a batch)
STEP_FIELDS = {"iter": _int, "time_s": _number, "loss": _number, "lr": _number}


def checked_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """A record of metrics.jsonl as what it says it is (a step line, or an event with each of its
    fields there and of its type, as checked_fields has them), or None where it cannot be, or
    is of a kind this version does not know."""
    kind = record.get("event")
    try:
        if kind == "step":
            return {"event": kind, **{name: convert(record[name]) for name, convert in STEP_FIELDS.items()}}
        cls = ev.BY_KIND.get(kind) if isinstance(kind, str) else None
        if cls is None:
            return None
        fields = checked_fields(cls, record, from_disk=True)
        cls(**fields)  # every field it needs is there
        return {"event": kind, **fields}
    except (KeyError, TypeError, ValueError):  # (a FieldError is a ValueError)
        return None


def checked_settings(config_cls: type, section: Any) -> dict[str, Any]:
    """The settings of a config.json section (model or train) that config_cls (GPTConfig,
    TrainConfig) has, of its type: what a viewer shows of a run read from disk."""
    if not isinstance(section, dict):
        return {}
    types = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}
    settings = {}
    for name, value in section.items():
        try:
            settings[name] = CONVERTERS[types[name]](value)
        except (KeyError, TypeError, ValueError):
            continue
    return settings
