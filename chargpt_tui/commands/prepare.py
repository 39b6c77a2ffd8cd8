"""Texts through their token cache (model/token_cache.py), with the build's progress shown.

`chargpt-tui prepare TEXT` builds the cache alone; training builds it when it is missing, in the
process started on the terminal, before the dashboard opens: the bar is drawn where the person
is looking, and the training process then finds the cache ready.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from chargpt_tui.format import about, duration

if TYPE_CHECKING:
    from model.data import Corpus
    from model.token_cache import TokenCache
    from model.tokenizer import CharTokenizer

PROG = "chargpt-tui"
BAR_WIDTH = 24


class CacheProgress:
    """Draws a cache build's progress on a stream: one line redrawn in place on a terminal; on
    anything else (a log file) a line every 10 s, so that a long build is seen to go on."""

    def __init__(self, name: str, stream: TextIO | None = None, log_every_s: float = 10.0) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.log_every_s = log_every_s
        self.last_line = self.started  # a line after 10 s; a quick build prints nothing
        self.drawn = False

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        elapsed = now - self.started
        fraction = done / total if total else 1.0
        rate = done / 2 / elapsed if elapsed > 0 else 0.0  # two passes over the text: its bytes a second
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        line = f"{PROG}: caching {self.name}: {what} {fraction:4.0%}"
        if self.tty:
            filled = int(BAR_WIDTH * fraction)
            bar = "█" * filled + "░" * (BAR_WIDTH - filled)
            self.stream.write(f"\r\x1b[2K{line} {bar} {rate / 1e6:.0f} MB/s, {duration(left)} left")
            self.drawn = True
        elif what != "done" and (now - self.last_line >= self.log_every_s):
            self.last_line = now
            self.stream.write(f"{line} ({rate / 1e6:.0f} MB/s, about {about(left)} left)\n")
        self.stream.flush()

    def end(self) -> None:
        """Leave the terminal's line clean for what comes next."""
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def cached_corpus(path: str, tokenizer: CharTokenizer | None = None, cache_dir: str | None = None,
                  stream: TextIO | None = None, quiet: bool = False) -> Corpus:
    """The text through its cache (built with a progress line when needed). Where no cache can
    be written, the text is read into memory as before, with a warning. quiet: say nothing (a
    torchrun process other than rank 0, which says it all)."""
    from model.data import Corpus
    from model.token_cache import CacheWriteError

    stream = stream or sys.stderr
    try:
        cache = open_cache(path, cache_dir, stream, quiet)
    except CacheWriteError as exc:
        if not quiet:
            print(f"{PROG}: warning: {exc}; reading the text into memory instead", file=stream)
        return Corpus.from_file(path, tokenizer)
    if cache.build_s is not None and cache.build_s >= 1.0 and not quiet:  # the person waited: for what, where
        print(f"{PROG}: {built_line(cache)}", file=stream)
    return Corpus.from_cache(cache, path, tokenizer)


def open_cache(path: str, cache_dir: str | None, stream: TextIO, quiet: bool = False) -> TokenCache:
    """TokenCache.open_or_build with its progress drawn and its rebuild notices said on stream."""
    from model.token_cache import TokenCache

    def say(message: str) -> None:
        if not quiet:
            print(f"{PROG}: {message}", file=stream)

    progress = CacheProgress(path, stream) if not quiet else None
    try:
        return TokenCache.open_or_build(path, cache_dir, progress, notice=say)
    finally:
        if progress is not None:
            progress.end()


def built_line(cache: TokenCache) -> str:
    size = cache.source.stat().st_size
    rate = size / cache.build_s / 1e6 if cache.build_s else 0.0
    return (f"cached {cache.n_chars:,} characters ({len(cache.vocab)} distinct) of {cache.source} in "
            f"{cache.build_s:.1f} s ({rate:.0f} MB/s): {cache.npy_path}")


def prepare_command(text: str, cache_dir: str | None) -> int:
    """`chargpt-tui prepare TEXT`: build (or check) the cache and say where it is."""
    from model.device import tune_malloc

    tune_malloc()  # the build's 64 MB buffers are reused instead of faulted in afresh
    cache = open_cache(text, cache_dir, sys.stderr)
    if cache.build_s is None:
        print(f"{PROG}: the cache of {text} is up to date: {cache.npy_path} "
              f"({cache.n_chars:,} characters, {len(cache.vocab)} distinct)")
    else:
        print(f"{PROG}: {built_line(cache)}")
    return 0

