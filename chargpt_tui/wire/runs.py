"""Runs on disk: which run directories there are, what state each is in, and reading one back.

A run directory's state comes from its lock (running: a process holds it) and otherwise from
the last line of its latest segment in metrics.jsonl: a "finished" line (finished, or stopped
when it says so), a "failed" line, or none at all: the process died without a word (crashed,
killed -9, the machine went down).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model import events as ev
from model.config import GPTConfig, TrainConfig
from model.rundir import process_exists

from .event_fields import checked_record, checked_settings
from .journal import RunJournal
from .protocol import ProtocolError, event_from_record
from .runtime import ServerInfo, lock_held

if TYPE_CHECKING:
    from model.gpt import GPT


@dataclass(frozen=True)
class RunSummary:
    path: str
    name: str
    state: str  # running, finished, stopped, failed, crashed; unknown: another user's, its lock not readable
    pid: int | None
    iter: int
    max_iters: int | None
    best_val_loss: float | None
    best_iter: int | None
    elapsed_s: float
    corpus: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def is_run_dir(path: Path) -> bool:
    """A folder with a run's files in it (one this user cannot look into is not known to be)."""
    try:
        return (path / "config.json").is_file() or (path / "metrics.jsonl").is_file()
    except OSError:  # (Python 3.11's is_file raises on EACCES)
        return False


def read_config(path: Path) -> dict[str, Any]:
    """config.json, its sections dicts (one that is not, damaged or edited, reads as empty)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(config, dict):
        return {}
    sections = {k: v if isinstance(v, dict) else {} for k, v in config.items() if k in SECTIONS}
    names = {k: v for k, v in config.items() if k in ("vocab", "preset") and isinstance(v, str)}
    return {**{k: v for k, v in config.items() if k not in (*SECTIONS, "vocab", "preset")}, **sections, **names}


SECTIONS = ("model", "train", "corpus", "device", "precision")  # config.json's parts that hold settings


def summarize(path: Path) -> RunSummary:
    config = read_config(path)
    records = _last_segment(path / "metrics.jsonl")
    last_step = next((r for r in reversed(records) if r.get("event") == "step"), None)
    last_eval = next((r for r in reversed(records) if r.get("event") == "eval"), None)
    end = next((r for r in reversed(records) if r.get("event") in ("finished", "failed", "start")), None)
    pid = None
    held = lock_held(path)
    if held is None:  # another user's run: its server.json (readable) says which process, if any
        info = ServerInfo.read(path)
        alive = info is not None and info.host == socket.gethostname() and process_exists(info.pid)
        pid = info.pid if info is not None and alive else None
        held = True if alive else None
    elif held:
        info = ServerInfo.read(path)
        pid = info.pid if info else None
    # a process may outlive its training (a dashboard's stays while viewers look): the log says
    if end is not None and end.get("event") == "finished":
        state = "stopped" if end.get("stopped") else "finished"
    elif end is not None and end.get("event") == "failed":
        state = "failed"
    else:
        state = "running" if pid is not None or held else "crashed" if held is False else "unknown"
    start = next((r for r in records if r.get("event") == "start"), None)
    iters = [int(r.get("iter", 0)) for r in (last_step, end, start) if r is not None]
    # the best kept: as the run ended with it (an evaluation whose best.pt could not be written
    # reported a best that the run then did not count), else as the latest evaluation reported
    told = end if end is not None and end.get("event") == "finished" else last_eval
    best = told.get("best_val_loss") if told else None
    corpus = config.get("corpus", {})
    max_iters = config.get("train", {}).get("max_iters")
    return RunSummary(
        path=str(path), name=path.name, state=state, pid=pid, iter=max(iters, default=0),
        max_iters=int(max_iters) if isinstance(max_iters, int) else None,
        best_val_loss=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
        best_iter=int(told["best_iter"]) if told and best is not None else None,
        elapsed_s=records[-1]["time_s"] if records else 0.0,
        corpus=str(corpus.get("name") or corpus.get("description") or "?") if isinstance(corpus, dict) else "?",
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Run directories in root (or root itself if it is one), by name: the default names
(<text>-<date>-<time>) sort oldest first."""
    if not root.is_dir():
        return []
    if is_run_dir(root):
        return [summarize(root)]
    return [summarize(p) for p in sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p))]


def _last_segment(metrics: Path, chunk: int = 1 << 18) -> list[dict[str, Any]]:
    """The records since the last "start" line, but of its step lines only the latest, read from
    the end of the file backwards until the latest evaluation is found (and, if it came before
    the last start, that start): a long run's file need not be read whole, nor its hundreds of
    thousands of step lines decoded."""
    try:
        f = open(metrics, "rb")  # noqa: SIM115
    except OSError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, tail, records = end, b"", []
        seen_start = seen_eval = seen_step = False
        # an evaluation after the last start is all a summary needs of what came before it (the
        # best so far, and the steps since); one before it, the start too (a resumed run's best)
        while pos > 0 and not (seen_eval and (seen_step or seen_start)):
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + tail
            lines = data.split(b"\n")
            tail = lines.pop(0) if pos > 0 else b""
            batch = []
            for line in reversed(lines):  # newest first
                if line.startswith(b'{"event": "step"') and seen_step:
                    continue  # a summary needs the latest step alone: most lines are steps
                record = read_record(line)
                if record is not None:
                    batch.append(record)
                    seen_step = seen_step or record.get("event") == "step"
            batch.reverse()
            records = batch + records
            seen_start = seen_start or any(r.get("event") == "start" for r in batch)
            seen_eval = seen_eval or any(r.get("event") == "eval" for r in batch)
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    if starts:
        # keep the last eval before this segment too: a resumed run's best so far
        earlier_eval = next((r for r in reversed(records[:starts[-1]]) if r.get("event") == "eval"), None)
        records = ([earlier_eval] if earlier_eval else []) + records[starts[-1]:]
    return records


def latest_checkpoint_iter(path: Path, chunk: int = 1 << 16, most: int = 8 << 20) -> int | None:
    """The step of a run's latest ckpt.pt: its last "checkpoint" record, read from the end of
    metrics.jsonl backwards (a running or crashed run's last step is often past it), at most
    `most` bytes back (a checkpoint is saved at every evaluation). None if none was found."""
    try:
        f = open(path / "metrics.jsonl", "rb")  # noqa: SIM115
    except OSError:
        return None
    with f:
        pos, tail = f.seek(0, os.SEEK_END), b""
        floor = max(0, pos - most)
        while pos > floor:
            step = min(chunk, pos - floor)
            pos -= step
            f.seek(pos)
            lines = (f.read(step) + tail).split(b"\n")
            tail = lines.pop(0) if pos > 0 else b""  # (at the floor: a part line, dropped)
            for line in reversed(lines):
                if line.startswith(b'{"event": "checkpoint"'):
                    record = read_record(line)
                    if record is not None and isinstance(record.get("iter"), int):
                        return int(record["iter"])
    return None


def read_record(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:  # a torn last line
        return None
    return checked_record(record) if isinstance(record, dict) else None


# A step line as MetricsLog writes it; read with a regular expression, a block of lines at a
# time, because a long run has hundreds of thousands of them (json.loads each: 0.5 s per 100,000).
# (an iteration of at most 18 digits and a time that is a number: a damaged line is skipped)
STEP_LINE = re.compile(rb'"iter": (\d{1,18}), "time_s": (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?), '
                       rb'"loss": ([^,]+), "lr": ([^}]+)}')


READ_CHUNK = 8 << 20  # a long run's metrics.jsonl is read this much at a time, never whole
STEP_BLOCK = 10_000  # step lines read back as one StepsDone at most


def file_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file, read a chunk at a time (opened now: OSError here, not later)."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator

    def lines() -> Iterator[bytes]:
        with f:
            tail = b""
            while data := f.read(READ_CHUNK):
                pieces = (tail + data).split(b"\n")
                tail = pieces.pop()
                yield from pieces
            if tail:
                yield tail
    return lines()


def read_journal(path: Path) -> RunJournal:
    """The journal of a run that is not running, from metrics.jsonl and config.json."""
    journal = RunJournal()
    config = read_config(path)
    try:
        lines = file_lines(path / "metrics.jsonl")
    except OSError:
        return journal
    block: list[bytes] = []

    def flush() -> None:
        steps = STEP_LINE.findall(b"\n".join(block))
        block.clear()
        if not steps:
            return
        iters = tuple([int(it) for it, _, _, _ in steps])
        try:
            losses = tuple([float(loss) for _, _, loss, _ in steps])
        except ValueError:  # a null among them: how metrics.jsonl writes NaN
            losses = tuple([parse_number(loss) for _, _, loss, _ in steps])
        _, time_s, _, lr = steps[-1]
        journal.add(ev.StepsDone(iters[-1], float(time_s), iters, losses, parse_number(lr), 0.0, 0.0), 0.0)

    for line in lines:
        if line.startswith(b'{"event": "step"'):  # most lines
            block.append(line)
            if len(block) >= STEP_BLOCK:
                flush()
            continue
        record = read_record(line)
        if record is None:
            continue
        flush()
        if record.get("event") == "start":
            record = {**record, "model_config": checked_settings(GPTConfig, config.get("model")),
                      "train_config": checked_settings(TrainConfig, config.get("train"))}
        try:
            event = event_from_record(record, from_disk=True)
        except ProtocolError:
            continue  # a kind this version does not know
        journal.add(event, 0.0)
    flush()
    return journal


# A finished run's journal, saved by its training process as it ends, so that a viewer of the run
# reads a few hundred KB of JSON instead of parsing metrics.jsonl's every step line (0.2 s for
# 100,000 steps). A cache: used only if metrics.jsonl is still exactly as long as when it was
# written; otherwise (a resumed run, a torn or foreign file) metrics.jsonl is read.
JOURNAL_CACHE = "journal.json"
JOURNAL_CACHE_VERSION = 1


def save_journal_cache(path: Path) -> None:
    """Read the run back as a viewer would, once, and save what a viewer is sent (the training
    process calls this as it ends; a cache must never stand in the way of that: any error, and
    there is no cache)."""
    try:
        size = (path / "metrics.jsonl").stat().st_size
        journal = read_journal(path)
        data = {"version": JOURNAL_CACHE_VERSION, "metrics_bytes": size,
                "events": [[event.to_record(), at] for event, at in journal.catch_up()]}
        tmp = path / f".{JOURNAL_CACHE}.tmp"
        tmp.write_text(json.dumps(_json_safe(data)), encoding="utf-8")
        os.replace(tmp, path / JOURNAL_CACHE)
    except Exception:  # a full disk, say: viewers read metrics.jsonl instead
        try:
            (path / f".{JOURNAL_CACHE}.tmp").unlink(missing_ok=True)
        except OSError:
            pass


def load_journal_cache(path: Path) -> list[tuple[ev.Event, float]] | None:
    """The saved catch-up events of a run, if they are still the run's; else None."""
    try:
        data = json.loads((path / JOURNAL_CACHE).read_bytes())
        if (data.get("version") != JOURNAL_CACHE_VERSION
                or data.get("metrics_bytes") != (path / "metrics.jsonl").stat().st_size):
            return None
        return [(event_from_record(record, from_disk=True), float(at)) for record, at in data["events"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ProtocolError):
        return None


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null, as metrics.jsonl writes them (JSON has none), at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def parse_number(text: bytes) -> float:
    try:
        return float(text)
    except ValueError:  # null: how metrics.jsonl writes NaN
        return math.nan


def load_run_model(path: Path, checkpoint: str = "ckpt.pt") -> GPT:
    """Weights saved in a run directory (the latest, ckpt.pt, or best.pt), for generating from."""
    from model.checkpoint import load_checkpoint, model_from_checkpoint

    model, _ = model_from_checkpoint(load_checkpoint(path / checkpoint))
    return model
