"""The runs browser's table, worked out without Textual: a row for each run (its summary, its
settings, the run it was forked from), the settings that differ between the listed runs (the
columns worth showing: not all forty), and sorting and filtering them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chargpt_tui.format import duration

from .runs import RunSummary, list_runs, read_config, summarize

# The settings a run is made of, as config.json keeps them, with a short column heading each, in
# the order they are shown when they differ. Steps and the device are columns of their own.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("", "preset", "preset"),
    ("model", "n_layers", "layers"),
    ("model", "n_heads", "heads"),
    ("model", "n_embed", "embed"),
    ("model", "block_size", "block"),
    ("model", "dropout", "dropout"),
    ("train", "batch_size", "batch"),
    ("train", "grad_accum", "accum"),
    ("train", "learning_rate", "lr"),
    ("train", "optimizer", "optimizer"),
    ("train", "muon_lr", "muon lr"),
    ("train", "muon_momentum", "muon momentum"),
    ("train", "lr_schedule", "schedule"),
    ("train", "warmup_iters", "warmup"),
    ("train", "min_lr", "min lr"),
    ("train", "weight_decay", "wd"),
    ("train", "grad_clip", "clip"),
    ("train", "beta2", "beta2"),
    ("train", "eval_interval", "eval every"),
    ("train", "eval_iters", "eval batches"),
    ("train", "seed", "seed"),
    ("precision", "dtype", "dtype"),
)

# The columns every row has, in order: (key, heading)
FIXED = (("name", "run"), ("state", "state"), ("step", "step"), ("best", "best val"), ("time", "time"),
         ("text", "text"), ("parent", "forked from"))


@dataclass(frozen=True)
class Parent:
    """The run a fork started from: its directory, which checkpoint, at which step."""

    path: str
    checkpoint: str  # "best" or "latest"
    iter: int

    @property
    def name(self) -> str:
        return Path(self.path).name

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Parent | None:
        parent = config.get("parent")
        if not isinstance(parent, dict):
            return None
        try:
            return cls(str(parent["path"]), str(parent.get("checkpoint", "latest")), int(parent["iter"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RunRow:
    summary: RunSummary
    config: dict[str, Any] = field(repr=False)
    parent: Parent | None = None

    @property
    def path(self) -> str:
        return self.summary.path

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def text(self) -> str:
        return Path(self.summary.corpus).name or self.summary.corpus

    def same_text(self, other: RunRow) -> bool:
        """Whether two runs trained on one text: by its absolute path where both recorded it (a
        run started as `chargpt-tui text.txt` is named text.txt, its forks and resumed runs by
        the path), else by the file's name."""
        mine, theirs = self.setting("corpus", "path"), other.setting("corpus", "path")
        if isinstance(mine, str) and isinstance(theirs, str) and mine and theirs:
            return mine == theirs
        return self.text == other.text

    def setting(self, section: str, key: str) -> Any:
        holder = self.config if not section else self.config.get(section)
        return holder.get(key) if isinstance(holder, dict) else None

    def cell(self, key: str) -> str:
        """What the table shows in a column (key: one of FIXED's, or "section.key" of a setting)."""
        s = self.summary
        if key == "name":
            return s.name
        if key == "state":
            return s.state
        if key == "step":
            return f"{s.iter:,}/{s.max_iters:,}" if s.max_iters else f"{s.iter:,}"
        if key == "best":
            return f"{s.best_val_loss:.4f} @{s.best_iter:,}" if s.best_val_loss is not None else "–"
        if key == "time":
            return duration(s.elapsed_s)
        if key == "text":
            return self.text
        if key == "parent":
            return f"{self.parent.name} @{self.parent.iter:,}" if self.parent else ""
        section, _, name = key.rpartition(".")
        return format_setting(self.setting(section, name))

    def sort_key(self, key: str) -> tuple[Any, ...]:
        """Numbers as numbers, runs without the figure last."""
        s = self.summary
        value: Any
        if key == "step":
            value = s.iter
        elif key == "best":
            value = s.best_val_loss
        elif key == "time":
            value = s.elapsed_s
        elif key == "parent":
            value = (self.parent.name, self.parent.iter) if self.parent else None
        elif key in ("name", "state", "text"):
            value = self.cell(key)
        else:
            section, _, name = key.rpartition(".")
            value = self.setting(section, name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, 0, value)
        return (0, 1, str(value))

    def matches(self, words: str) -> bool:
        """Every word of the filter is in some cell (case does not matter)."""
        haystack = " ".join([self.cell(k) for k, _ in FIXED] + [self.cell(f"{s}.{k}") for s, k, _ in SETTINGS]
                            + [self.summary.corpus]).casefold()
        return all(word in haystack for word in words.casefold().split())


def format_setting(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def read_row(path: Path, summary: RunSummary | None = None) -> RunRow:
    config = read_config(path)
    return RunRow(summary or summarize(path), config, Parent.from_config(config))


def read_rows(root: Path) -> list[RunRow]:
    return [read_row(Path(s.path), s) for s in list_runs(root)]


def differing(rows: Iterable[RunRow]) -> list[tuple[str, str]]:
    """The settings (as "section.key", heading) whose values are not the same in every row."""
    rows = list(rows)
    found = []
    for section, key, heading in SETTINGS:
        values = {format_setting(r.setting(section, key)) for r in rows}
        if len(values) > 1:
            found.append((f"{section}.{key}", heading))
    return found


def sorted_rows(rows: Iterable[RunRow], key: str, reverse: bool = False) -> list[RunRow]:
    """By a column; runs without the figure last either way."""
    rows = list(rows)
    have = [r for r in rows if r.sort_key(key)[0] == 0]
    lack = [r for r in rows if r.sort_key(key)[0] == 1]
    return sorted(have, key=lambda r: r.sort_key(key), reverse=reverse) + lack
